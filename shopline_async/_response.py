"""What a successful call returns besides the model: status, trace id, attempts, timing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Response"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Response(Generic[T]):
    """A decoded response and the facts of the call that produced it.

    ``trace_id`` is the final attempt's ``traceId`` header; ``trace_ids`` holds
    every attempt's, oldest first. ``elapsed`` counts all attempts and waits (for the rate
    limiter and between retries); ``network_time`` only the time requests were on the wire.
    """

    data: T
    status: int
    trace_id: str | None
    method: str
    url: str
    attempts: int
    elapsed: float
    trace_ids: tuple[str, ...] = ()
    network_time: float = 0.0
