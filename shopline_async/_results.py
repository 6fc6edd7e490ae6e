"""One result row: what ``sync`` writes to its results file and the fleet keeps in its database.

Both build their rows here, so a row says the same thing, in the same fields, whichever ran it.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from ._errors import ValidationError
from ._operations import AnyResult

__all__ = ["ResultRow", "error_text"]


class ResultRow(Struct, omit_defaults=True):
    """What became of one input row.

    ``outcome`` is the SDK's (``ok``, ``applied_without_body``, ``failed``, ``cancelled``,
    ``not_attempted``), or ``skipped`` with ``reason`` ``unchanged`` (the ledger shows this very
    body acknowledged before: not sent), or ``invalid`` (refused before sending; ``error`` says
    why and where). ``line`` is the input file's line (None for an operation built in Python);
    ``submission`` and ``seq`` (the operation's number in it) are the fleet's.
    """

    key: Any
    line: int | None
    store: str | None
    kind: str | None
    ok: bool
    outcome: str
    product_id: str | None = None
    image_id: str | None = None
    reason: str | None = None
    status: int | None = None
    trace_id: str | None = None
    trace_ids: list[str] = []
    attempts: int = 0
    elapsed_ms: float = 0.0
    error: str | None = None
    submission: str | None = None
    seq: int | None = None

    @classmethod
    def of(
        cls,
        result: AnyResult,
        *,
        line: int | None,
        key: Any,
        product_id: str | None,
        image_id: str | None,
        submission: str | None = None,
        seq: int | None = None,
    ) -> ResultRow:
        unchanged = result.outcome == "unchanged"
        return cls(
            key=key,
            line=line,
            store=result.store,
            kind=result.kind,
            ok=result.ok,
            outcome="skipped" if unchanged else result.outcome,
            product_id=product_id or None,
            image_id=image_id,
            reason="unchanged" if unchanged else None,
            status=result.status,
            trace_id=result.trace_id,
            trace_ids=list(result.trace_ids),
            attempts=result.attempts,
            elapsed_ms=round(result.elapsed * 1000, 1),
            error=error_text(result.error) if result.error is not None else None,
            submission=submission,
            seq=seq,
        )

    @classmethod
    def refused(
        cls,
        message: str,
        *,
        line: int | None,
        key: Any,
        store: str | None,
        outcome: str = "invalid",
        kind: str | None = None,
        product_id: str | None = None,
        image_id: str | None = None,
        submission: str | None = None,
        seq: int | None = None,
    ) -> ResultRow:
        """A row not sent: ``invalid`` (refused before sending) or ``failed`` (``message`` says why)."""
        return cls(
            key=key,
            line=line,
            store=store,
            kind=kind,
            ok=False,
            outcome=outcome,
            product_id=product_id,
            image_id=image_id,
            error=message,
            submission=submission,
            seq=seq,
        )


def error_text(error: Exception) -> str:
    """One line for the results file or the terminal: every field error of a ValidationError."""
    if isinstance(error, ValidationError):
        return "; ".join(str(e) for e in error.errors)
    return str(error)
