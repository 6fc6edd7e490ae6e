"""Logging switched on without code, as openai-python's ``OPENAI_LOG``: ``SHOPLINE_LOG=debug`` (or
``info``, ``warning``) sends the ``shopline_async`` logger's records to stderr.

WARNING: each retry, each 429 and the cool-down it starts, a store that stopped taking writes, a
ledger that failed. INFO: a sync run's start and end, and its summary per store. DEBUG: every
attempt. Every record names its store handle; none carries a token or a header."""

from __future__ import annotations

import logging
import os
import sys

from ._constants import LOGGER_NAME

__all__ = ["LOG_ENV", "setup_logging"]

LOG_ENV = "SHOPLINE_LOG"

# a library's records go where its user's logging config sends them, and nowhere without one (not to
# Python's last-resort handler, which would print every WARNING to stderr)
logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def setup_logging(level: str | None = None) -> None:
    """Log to stderr at ``level`` (debug, info or warning, any case), else at ``$SHOPLINE_LOG``'s;
    nothing if neither. An unknown ``$SHOPLINE_LOG`` is said on stderr, not silently ignored."""
    name = (level or os.environ.get(LOG_ENV) or "").strip().lower()
    if not name:
        return
    if name not in _LEVELS:
        print(
            f"shopline-async: warning: ${LOG_ENV}={name!r} is not a level (debug, info, warning): not logging",
            file=sys.stderr,
        )
        return
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(_LEVELS[name])
    if not any(getattr(h, "_shopline", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._shopline = True  # type: ignore[attr-defined]  # ours: added once however often called
        logger.addHandler(handler)
