"""Logging switched on without code, as openai-python's ``OPENAI_LOG``: ``SHOPLINE_LOG=debug`` (or
``info``) sends the ``shopline_async`` logger's records to stderr. Records never carry a token:
they name the method, the URL and the store, never a header."""

from __future__ import annotations

import logging
import os

from ._constants import LOGGER_NAME

__all__ = ["LOG_ENV", "setup_logging"]

LOG_ENV = "SHOPLINE_LOG"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def setup_logging(level: str | None = None) -> None:
    """Log to stderr at ``level`` (debug, info or warning), else at ``$SHOPLINE_LOG``'s; nothing if neither."""
    name = (level or os.environ.get(LOG_ENV) or "").strip().lower()
    if name not in _LEVELS:
        return
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(_LEVELS[name])
    if not any(getattr(h, "_shopline", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._shopline = True  # type: ignore[attr-defined]  # ours: added once however often called
        logger.addHandler(handler)
