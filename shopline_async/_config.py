"""Small immutable configuration values: timeouts, retries, rate limits."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ._constants import (
    DEFAULT_BURST,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_INITIAL_RETRY_DELAY,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_MAX_RETRY_DELAY,
    DEFAULT_PACING_HEADROOM,
    DEFAULT_RATE,
    DEFAULT_RETRY_DEADLINE,
    DEFAULT_TOTAL_TIMEOUT,
    RETRYABLE_STATUSES,
)
from ._errors import ConfigError

__all__ = ["RateLimit", "RetryPolicy", "Timeout"]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive(value: float | None) -> bool:
    return value is None or (math.isfinite(value) and value > 0)


@dataclass(frozen=True)
class Timeout:
    """Per-attempt timeouts in seconds; ``None`` disables one.

    ``total`` bounds one attempt (connect, send, wait, read); the retry
    deadline in :class:`RetryPolicy` bounds all attempts together.
    """

    total: float | None = DEFAULT_TOTAL_TIMEOUT
    connect: float | None = DEFAULT_CONNECT_TIMEOUT
    read: float | None = None

    def __post_init__(self) -> None:
        for name in ("total", "connect", "read"):
            _require(_positive(getattr(self, name)), f"Timeout.{name} must be a positive number or None")


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry. PUTs here are idempotent, so retrying is safe.

    Retried: HTTP 429 and ``retry_statuses`` (500/502/503/504), connection
    errors and timeouts. Never retried: other 4xx (401, 422, 423, 433-436 ...).
    Backoff is ``initial_delay * 2**(attempt-1)`` capped at ``max_delay``,
    minus up to 25% jitter; a ``Retry-After`` header (seconds or HTTP date) wins,
    capped at ``max_retry_after``. No retry starts after ``deadline`` seconds
    since the first attempt, not counting time spent waiting for the store's rate limiter or a
    429 cool-down (the client's own queue: a call never loses its retries to it).
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_delay: float = DEFAULT_INITIAL_RETRY_DELAY
    max_delay: float = DEFAULT_MAX_RETRY_DELAY
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    deadline: float | None = DEFAULT_RETRY_DEADLINE
    jitter: bool = True
    retry_statuses: frozenset[int] = field(default=RETRYABLE_STATUSES)

    def __post_init__(self) -> None:
        _require(isinstance(self.max_attempts, int) and self.max_attempts >= 1, "RetryPolicy.max_attempts must be >= 1")
        for name in ("initial_delay", "max_delay", "max_retry_after"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0, f"RetryPolicy.{name} must be >= 0")
        _require(_positive(self.deadline), "RetryPolicy.deadline must be a positive number or None")
        _require(
            all(400 <= s <= 599 and s not in range(433, 437) and s != 423 for s in self.retry_statuses),
            "RetryPolicy.retry_statuses may hold only 4xx/5xx statuses, never 423 or 433-436",
        )

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """One attempt, no retries."""
        return cls(max_attempts=1)


@dataclass(frozen=True)
class RateLimit:
    """Client-side mirror of SHOPLINE's per-store leaky bucket.

    ``rate`` requests per second drain the bucket, ``burst`` is its capacity
    (how many may go at once after a quiet spell), ``max_in_flight`` caps
    concurrent requests to the store. ``headroom`` is the fraction of ``rate``
    left unused: SHOPLINE queues requests and serves them at exactly ``rate``,
    so a client pacing at exactly ``rate`` never lets a backlog (left by any
    hiccup) drain, and every later request waits behind it. ``RateLimit.unlimited()``
    turns pacing off (Enterprise stores) while keeping the in-flight cap.
    """

    rate: float | None = DEFAULT_RATE
    burst: int = DEFAULT_BURST
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    headroom: float = DEFAULT_PACING_HEADROOM

    def __post_init__(self) -> None:
        _require(_positive(self.rate), "RateLimit.rate must be a positive number or None (unlimited)")
        _require(isinstance(self.burst, int) and self.burst >= 1, "RateLimit.burst must be an int >= 1")
        _require(
            isinstance(self.max_in_flight, int) and self.max_in_flight >= 1, "RateLimit.max_in_flight must be >= 1"
        )
        _require(0 <= self.headroom < 0.5, "RateLimit.headroom must be in [0, 0.5)")

    @property
    def paced_rate(self) -> float | None:
        """The rate the client actually sends at: ``rate`` less the headroom."""
        return None if self.rate is None else self.rate * (1 - self.headroom)

    @classmethod
    def unlimited(cls, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> RateLimit:
        """No pacing, for stores without a rate limit (SHOPLINE Enterprise)."""
        return cls(rate=None, max_in_flight=max_in_flight)
