from __future__ import annotations

import email.utils
import time

import pytest

from shopline_async import (
    APIStatusError,
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimit,
    RateLimitError,
    RetryPolicy,
    SecurityBlockError,
    ServerError,
    StoreFrozenError,
    StoreLockedError,
    Timeout,
)
from shopline_async._errors import describe_errors, error_class_for_status
from shopline_async._retry import parse_retry_after, retry_delay


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidRequestError),
        (401, AuthenticationError),
        (402, StoreFrozenError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (406, InvalidRequestError),
        (412, InvalidRequestError),
        (422, InvalidRequestError),
        (423, StoreLockedError),
        (429, RateLimitError),
        (433, SecurityBlockError),
        (436, SecurityBlockError),
        (500, ServerError),
        (504, ServerError),
        (418, APIStatusError),
        (303, APIStatusError),
    ],
)
def test_status_maps_to_error_class(status: int, cls: type[APIStatusError]) -> None:
    assert error_class_for_status(status) is cls


def test_error_str_is_one_line_with_trace_id() -> None:
    error = NotFoundError("Not Found: gone", status=404, errors="gone", method="PUT", url="https://s/x", trace_id="t-1")
    assert str(error) == "HTTP 404 Not Found: gone (PUT https://s/x, traceId=t-1)"
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("errors", "text"),
    [
        ("Too many request", "Too many request"),
        (["a", "b"], "a; b"),
        ({"title": ["too long"], "price": "bad"}, "title: too long; price: bad"),
        ("multi\nline", "multi line"),
    ],
)
def test_errors_payload_of_any_shape_reads_as_one_line(errors: object, text: str) -> None:
    assert describe_errors(errors) == text


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    now = time.time()
    date = email.utils.formatdate(now + 10, usegmt=True)
    assert 8.5 <= parse_retry_after(date, now=now) <= 10.0  # type: ignore[operator]
    assert parse_retry_after(email.utils.formatdate(now - 100, usegmt=True), now=now) == 0.0
    for junk in (None, "", "soon", "nan", "inf", "-5", "-0.5"):  # a negative delay is malformed: ignored
        assert parse_retry_after(junk) is None


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=5.0, jitter=False)
    assert [retry_delay(policy, n, None) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = RetryPolicy(initial_delay=1.0, max_delay=5.0)
    assert all(0.75 <= retry_delay(jittered, 1, None) <= 1.0 for _ in range(100))


def test_retry_after_wins_but_is_capped() -> None:
    policy = RetryPolicy(initial_delay=1.0, max_retry_after=30.0)
    assert retry_delay(policy, 1, 7.0) == 7.0
    assert retry_delay(policy, 1, 3600.0) == 30.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: RetryPolicy(max_attempts=0),
        lambda: RetryPolicy(initial_delay=-1),
        lambda: RetryPolicy(retry_statuses=frozenset({423})),
        lambda: RetryPolicy(retry_statuses=frozenset({434})),
        lambda: RateLimit(rate=0),
        lambda: RateLimit(burst=0),
        lambda: RateLimit(max_in_flight=0),
        lambda: Timeout(total=-1),
    ],
)
def test_bad_configuration_is_refused(make: object) -> None:
    with pytest.raises(ConfigError):
        make()  # type: ignore[operator]
