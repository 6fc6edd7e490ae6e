"""Configuration of the mock server: per-store rate limits and fault injection."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from .._constants import DEFAULT_BUCKET_CAPACITY, DEFAULT_RATE

__all__ = ["Faults", "MockStoreConfig"]

BucketMode = Literal["queue", "reject"]


@dataclass(frozen=True)
class Faults:
    """What goes wrong, and how often. Every draw is reproducible from ``seed``.

    A request's draws depend only on the seed, the store, the request path and
    how many times that path was requested before, so the same sequence of
    attempts at a product meets the same faults whatever the concurrency.
    """

    seed: int = 0
    error_rate: float = 0.0
    """Probability of answering with one of ``error_statuses`` (nothing is written)."""
    error_statuses: tuple[int, ...] = (500, 502, 503, 504)
    drop_rate: float = 0.0
    """Probability of closing the connection without a response (nothing is written)."""
    latency_rate: float = 0.0
    """Probability of adding ``latency`` seconds (a (low, high) pair draws uniformly)."""
    latency: float | tuple[float, float] = 0.0
    stall_rate: float = 0.0
    """Probability of stalling ``stall_seconds`` before answering (the write lands late)."""
    stall_seconds: float = 30.0
    garbage_rate: float = 0.0
    """Probability of a 200 whose body is HTML or truncated JSON (the write is applied)."""
    fail_first: int = 0
    """The first ``fail_first`` attempts at each path fail with ``fail_status``: an HTTP
    status, ``"drop"`` (connection closed, no response) or ``"stall"`` (``stall_seconds``)."""
    fail_status: int | Literal["drop", "stall"] = 503
    retry_after: float | None = None
    """``Retry-After`` seconds on injected 5xx and ``fail_first`` answers, if set."""

    def rng(self, store: str, path: str, nth: int) -> random.Random:
        digest = hashlib.blake2b(f"{self.seed}|{store}|{path}|{nth}".encode(), digest_size=8).digest()
        return random.Random(int.from_bytes(digest, "big"))

    @cached_property
    def active(self) -> bool:
        return (
            bool(self.error_rate or self.drop_rate or self.latency_rate or self.stall_rate or self.garbage_rate)
            or self.fail_first > 0
        )


@dataclass(frozen=True)
class MockStoreConfig:
    """One store's behaviour: its bucket (``rate=None`` for unlimited) and its faults."""

    rate: float | None = DEFAULT_RATE
    capacity: int = DEFAULT_BUCKET_CAPACITY
    mode: BucketMode = "queue"
    retry_after: float | None = None
    """``Retry-After`` seconds sent with a 429, if set (SHOPLINE documents none)."""
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if self.rate is not None and not self.rate > 0:
            raise ValueError("rate must be > 0 or None (unlimited)")
        if self.capacity < 1:
            raise ValueError("capacity must be >= 1")
        if self.mode not in ("queue", "reject"):
            raise ValueError("mode must be 'queue' or 'reject'")
