"""What travels through Temporal: operations in chunks, results, a store workflow's state.

Dataclasses of JSON types, so Temporal's default converter carries them and the workflow sandbox
can import this module; operations and results inside them as JSON text. Nothing here is secret:
tokens stay in each worker's own configuration, and an operation names its store by handle only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from .._constants import DEFAULT_BUCKET_CAPACITY, DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_RATE

__all__ = [
    "Chunk",
    "DrainInput",
    "DrainOutcome",
    "FleetOperation",
    "GiveUpInput",
    "OperationResult",
    "StoreProgress",
    "StoreSettings",
    "StoreState",
    "StoreStopped",
    "SubmissionTotals",
    "in_submission",
    "workflow_id",
]

WORKFLOW_NAME = "shopline-store"
ACTIVITY_NAME = "shopline-drain-chunk"
GIVE_UP_ACTIVITY_NAME = "shopline-give-up-chunk"
SUBMIT_SIGNAL = "submit"
PROGRESS_QUERY = "progress"


def workflow_id(app: str, store: str) -> str:
    """The one workflow of ``store`` for ``app``: Temporal runs at most one per id, so one drain loop per store."""
    return f"shopline-store/{app}/{store}"


class FleetOperation(msgspec.Struct, frozen=True):
    """One product or image update, validated by the submitter. ``body`` is the update as it will be sent.

    ``seq`` numbers the submission's operations (what a heartbeat checkpoints); ``line`` is the
    input file's line, if it came from one.
    """

    seq: int
    line: int | None
    key: str
    kind: str  # "product" or "image"
    product_id: str
    body: dict[str, Any]
    image_id: str | None = None


class OperationResult(msgspec.Struct, frozen=True):
    """What became of one operation, as the SDK's ``Result`` says it (the error as one line of text)."""

    submission: str
    store: str
    seq: int
    line: int | None
    key: str
    kind: str
    ok: bool
    outcome: str
    status: int | None = None
    trace_id: str | None = None
    trace_ids: list[str] = []
    attempts: int = 0
    error: str | None = None
    product_id: str | None = None
    image_id: str | None = None


# Operations and results cross Temporal as msgspec JSON text inside the dataclasses below: its
# default converter rebuilds a dataclass per value from its type hints, which cost several times
# the SDK's own work per request when every operation was one (benchmarks/README.md).
_operations_decoder = msgspec.json.Decoder(list[FleetOperation])
_results_decoder = msgspec.json.Decoder(list[OperationResult])


def encode_results(results: list[OperationResult]) -> str:
    return msgspec.json.encode(results).decode()


def in_submission(submission: str, asked: str) -> bool:
    """Whether ``submission`` is the one asked for: that id, or a content of that name
    (``nightly`` asks for ``nightly@3f9a2b1c`` and every other ``nightly@...``)."""
    return submission == asked or submission.startswith(asked + "@")


def decode_results(text: str) -> list[OperationResult]:
    return _results_decoder.decode(text) if text else []


@dataclass
class Chunk:
    """Operations of one submission for one store; ``number`` orders the submission's chunks for that store."""

    submission: str
    number: int
    count: int
    operations: str  # JSON: list[FleetOperation]
    settings: StoreSettings | None = None
    """How its drain runs, as its submitter said (None: as the store workflow was started)."""

    @classmethod
    def of(
        cls, submission: str, number: int, operations: list[FleetOperation], settings: StoreSettings | None = None
    ) -> Chunk:
        return cls(submission, number, len(operations), msgspec.json.encode(operations).decode(), settings)

    def decoded(self) -> list[FleetOperation]:
        return _operations_decoder.decode(self.operations)


@dataclass
class StoreSettings:
    """How a store's drain activities run. Seconds, as floats: JSON carries them as they are."""

    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    chunk_timeout: float = 3600.0  # start to close, a chunk of a few hundred at 4/s takes minutes
    chunks_per_run: int = 20  # then continue-as-new, so a run's history stays far below Temporal's caps
    bucket_capacity: int = DEFAULT_BUCKET_CAPACITY  # what a worker taking a store over assumes it holds
    bucket_rate: float = DEFAULT_RATE


@dataclass
class StoreStopped:
    """A store's answer that it cannot be written: the rest of the submission is not sent to it."""

    status: int
    trace_id: str | None
    message: str


@dataclass
class SubmissionTotals:
    """One submission's counts in one store: operations submitted, done, and done ok; and, if the
    store answered that it cannot be written (401, 402, 403, 423, 433-436), that answer."""

    submitted: int = 0
    done: int = 0
    ok: int = 0
    failed: int = 0
    stopped: StoreStopped | None = None


@dataclass
class StoreState:
    """A store workflow's state, carried from run to run by continue-as-new."""

    app: str
    store: str
    settings: StoreSettings = field(default_factory=StoreSettings)
    queued: list[Chunk] = field(default_factory=list)
    totals: dict[str, SubmissionTotals] = field(default_factory=dict)
    seen_chunks: dict[str, list[int]] = field(default_factory=dict)  # a chunk signalled twice runs once
    last_drainer: str | None = None
    last_drain_end: float | None = None  # the drainer's wall clock, seconds since the epoch


@dataclass
class DrainInput:
    store: str
    chunk: Chunk
    settings: StoreSettings
    last_drainer: str | None
    last_drain_end: float | None
    stopped: StoreStopped | None = None
    """The store answered so to an earlier chunk of this submission: send nothing."""


@dataclass
class GiveUpInput:
    """A chunk whose drain failed for good, and why: its rows are reported failed, the store goes on."""

    store: str
    chunk: Chunk
    reason: str


@dataclass
class DrainOutcome:
    results: str  # JSON: list[OperationResult]
    ok: int
    failed: int
    drainer: str
    ended_at: float
    attempt: int = 1
    resumed: int = 0  # results taken from an earlier attempt's last heartbeat, not sent again
    stopped: StoreStopped | None = None  # the store answered that it cannot be written


@dataclass
class StoreProgress:
    """A store workflow's state: chunks and operations queued, whether a drain runs, counts per submission."""

    store: str
    queued_chunks: int
    queued_operations: int
    draining: bool
    totals: dict[str, SubmissionTotals]
