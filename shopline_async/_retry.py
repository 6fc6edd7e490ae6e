"""Retry decisions in one place: what to retry, how long to wait."""

from __future__ import annotations

import email.utils
import math
import random
import time

from ._config import RetryPolicy

__all__ = ["parse_retry_after", "retry_delay", "should_retry_status"]


def should_retry_status(policy: RetryPolicy, status: int) -> bool:
    return status in policy.retry_statuses


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); ``None`` if absent
    or malformed (a negative number included: backoff then goes as if there were none)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        return _seconds_until(value, time.time() if now is None else now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _seconds_until(date: str, now: float) -> float | None:
    """An HTTP date's distance from ``now``: 0 for a date passed, None for one that is not a date."""
    try:
        when = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def retry_delay(policy: RetryPolicy, attempt: int, retry_after: float | None) -> float:
    """How long to wait before attempt ``attempt + 1``.

    A server's Retry-After wins (capped at ``max_retry_after``); otherwise
    exponential backoff capped at ``max_delay``, with up to 25% jitter taken
    off so that tasks retrying together spread out.
    """
    if retry_after is not None:
        return min(retry_after, policy.max_retry_after)
    delay = min(policy.max_delay, policy.initial_delay * 2.0 ** (attempt - 1))
    if policy.jitter:
        delay *= 1.0 - 0.25 * random.random()
    return delay
