"""What goes into a batch (product and image updates) and what comes out (a result per operation,
the batch's summary and progress)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

import msgspec

from ._client import Store
from .models._image import ImageUpdate, ProductImage
from .models._product import Product, ProductUpdate

__all__ = [
    "AnyResult",
    "BatchReport",
    "BatchSummary",
    "Operation",
    "Outcome",
    "Progress",
    "Result",
    "UpdateImage",
    "UpdateProduct",
]

Outcome = Literal["ok", "applied_without_body", "unchanged", "failed", "invalid", "not_attempted", "cancelled"]


class UpdateProduct(msgspec.Struct, frozen=True):
    """Update (upsert) one product in one store. ``key`` comes back in the result (default: product_id)."""

    store: str | Store
    product_id: str
    product: ProductUpdate | Mapping[str, Any]
    key: Hashable = None

    kind: ClassVar[str] = "product"


class UpdateImage(msgspec.Struct, frozen=True):
    """Update one product image in one store. ``key`` comes back in the result (default: image_id)."""

    store: str | Store
    product_id: str
    image_id: str
    image: ImageUpdate | Mapping[str, Any]
    key: Hashable = None

    kind: ClassVar[str] = "image"


Operation = UpdateProduct | UpdateImage
# what a result's ``data`` is: the product for an UpdateProduct, the image for an UpdateImage
ModelT = TypeVar("ModelT", bound=Product | ProductImage, covariant=True)


class Result(msgspec.Struct, Generic[ModelT], frozen=True, kw_only=True):
    """What became of one operation.

    ``outcome``: ``ok``; ``applied_without_body`` (a 2xx, so written, but the answer was ``{}``
    or ``{"product": null}``: ``data`` is None, ``ok`` is true); ``unchanged`` (not sent: the
    executor's ledger shows this very body acknowledged for this target before; ``status`` and
    ``trace_id`` are that write's, and ``ok`` is true); ``failed`` (the API or the network said
    no; with ``attempts == 0`` it was not sent, because an earlier response showed that its
    store cannot be written: ``error`` is then a StoreUnavailableError carrying that response's status and trace id);
    ``invalid`` (refused before sending); ``not_attempted`` (the batch stopped first);
    ``cancelled`` (stopped mid-request: it may or may not have been applied). ``trace_id`` is
    the final attempt's, ``trace_ids`` every attempt's.
    """

    index: int
    key: Hashable
    store: str
    kind: str
    outcome: Outcome
    data: ModelT | None = None
    error: Exception | None = None
    status: int | None = None
    trace_id: str | None = None
    trace_ids: tuple[str, ...] = ()
    attempts: int = 0
    elapsed: float = 0.0
    network_time: float = 0.0

    @property
    def ok(self) -> bool:
        """The target holds this update: written now, or found unchanged in the ledger."""
        return self.outcome == "ok" or self.outcome == "unchanged" or self.outcome == "applied_without_body"


AnyResult = Result[Product | ProductImage]


@dataclass(frozen=True, slots=True)
class Progress:
    """Counts for a progress bar: taken from the input, finished ok, finished otherwise, in flight,
    and not attempted (the batch stopped before sending them: neither ok nor failed)."""

    taken: int
    done: int
    failed: int
    in_flight: int
    not_attempted: int = 0


@dataclass
class BatchSummary:
    """Totals of a batch. Latency percentiles, in seconds, are of time on the network per attempted
    operation (all its attempts, not the waits for the rate limiter or between retries)."""

    total: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    retries: int = 0
    rate_limited: int = 0
    elapsed: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0

    @property
    def throughput(self) -> float:
        """Operations finished per second of wall time."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> int:
        """Written now: ``ok`` and ``applied_without_body``."""
        return self.outcomes["ok"] + self.outcomes["applied_without_body"]

    @property
    def unchanged(self) -> int:
        """Skipped: the ledger showed the same body already acknowledged."""
        return self.outcomes["unchanged"]

    @property
    def failed(self) -> int:
        return self.total - self.ok - self.unchanged


@dataclass
class BatchReport(Generic[ModelT]):
    """Every result in input order, and the summary."""

    results: list[Result[ModelT]]
    summary: BatchSummary


class Histogram:
    """Latency percentiles in constant memory: 2% wide logarithmic buckets from 0.1 ms."""

    _BASE = 1.02
    _FLOOR = 1e-4
    _PER_LOG = 1 / math.log(_BASE)  # one log per sample instead of the two of math.log(x, base)

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()

    def add(self, seconds: float) -> None:
        bucket = int(math.log(seconds / self._FLOOR) * self._PER_LOG) + 1 if seconds > self._FLOOR else 0
        self._counts[bucket] += 1

    def quantile(self, q: float) -> float:
        rank = q * self._counts.total()
        seen = 0
        for bucket in sorted(self._counts):
            seen += self._counts[bucket]
            if seen >= rank:
                return self._FLOOR * self._BASE**bucket
        return 0.0  # no samples
