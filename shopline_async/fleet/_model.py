"""What travels through Temporal: references to chunks, a store workflow's state, drain outcomes.

Dataclasses of JSON types, so Temporal's default converter carries them and the workflow sandbox
can import this module. Operations and their results do not travel: they are in the fleet's
database (``_database``), and Temporal carries a submission's id and a chunk's number, so a
history grows by a few hundred bytes per chunk. Nothing here is secret: tokens stay in each
worker's own configuration, and an operation names its store by handle only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from .._constants import DEFAULT_BUCKET_CAPACITY, DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_RATE

__all__ = [
    "DrainInput",
    "DrainOutcome",
    "FleetOperation",
    "GiveUpInput",
    "Queued",
    "StoreSettings",
    "StoreState",
    "StoreStopped",
    "Submitted",
    "decode_operations",
    "encode_operations",
    "workflow_id",
]

WORKFLOW_NAME = "shopline-store"
ACTIVITY_NAME = "shopline-drain-chunk"
GIVE_UP_ACTIVITY_NAME = "shopline-give-up-chunk"
SUBMIT_SIGNAL = "submit"
STOP_SIGNAL = "stop"


def workflow_id(app: str, store: str) -> str:
    """The one workflow of ``store`` for ``app``: Temporal runs at most one per id, so one drain loop per store."""
    return f"shopline-store/{app}/{store}"


class FleetOperation(msgspec.Struct, frozen=True):
    """One product or image update, validated by the submitter. ``body`` is the update as it will be sent.

    ``seq`` numbers the submission's operations (its result's key in the database); ``line`` is the
    input file's line, if it came from one.
    """

    seq: int
    line: int | None
    key: str
    kind: str  # "product" or "image"
    product_id: str
    body: dict[str, Any]
    image_id: str | None = None


_operations_decoder = msgspec.json.Decoder(list[FleetOperation])


def encode_operations(operations: list[FleetOperation]) -> bytes:
    return msgspec.json.encode(operations)


def decode_operations(encoded: bytes) -> list[FleetOperation]:
    return _operations_decoder.decode(encoded)


@dataclass
class Submitted:
    """A submission's chunks for one store, recorded in the database: what a submit signals."""

    submission: str
    chunks: int
    settings: StoreSettings | None = None
    """How its drains run, as its submitter said (None: as the store workflow was started)."""
    round: int = 1
    """Submitted again once done, a submission drains again: its next round."""


@dataclass
class Queued:
    """A submission a store workflow has yet to drain, from chunk ``next`` on."""

    submission: str
    chunks: int
    next: int = 0
    settings: StoreSettings | None = None
    round: int = 1


@dataclass
class StoreSettings:
    """How a store's drain activities run. Seconds, as floats: JSON carries them as they are."""

    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    chunk_timeout: float = 3600.0  # start to close, a chunk of a few hundred at 4/s takes minutes
    chunks_per_run: int = 20  # then continue-as-new, so a run's history stays far below Temporal's caps
    bucket_capacity: int = DEFAULT_BUCKET_CAPACITY  # what a worker taking a store over assumes it holds
    bucket_rate: float = DEFAULT_RATE
    idle_timeout: float = 600.0  # then the store workflow ends; the next submit starts it again


@dataclass
class StoreStopped:
    """A store's answer that it cannot be written: the rest of the submission is not sent to it."""

    status: int
    trace_id: str | None
    message: str


@dataclass
class StoreState:
    """A store workflow's state, carried from run to run by continue-as-new."""

    app: str
    store: str
    settings: StoreSettings = field(default_factory=StoreSettings)
    queued: list[Queued] = field(default_factory=list)
    last_drainer: str | None = None
    last_drain_end: float | None = None  # the drainer's wall clock, seconds since the epoch


@dataclass
class DrainInput:
    """One chunk to drain. ``drain`` names this drain (its attempts share it): what an attempt finds
    recorded under it in the database was done by an earlier attempt and is not sent again."""

    app: str
    store: str
    submission: str
    number: int
    drain: str
    settings: StoreSettings
    last_drainer: str | None
    last_drain_end: float | None
    round: int = 1


@dataclass
class GiveUpInput:
    """A chunk not drained, and why: its rows without a result of ``drain`` are reported failed,
    as not confirmed (``sent``: its drain may have sent them) or not sent; the store goes on."""

    app: str
    store: str
    submission: str
    number: int
    drain: str
    reason: str
    sent: bool = True
    round: int = 1


@dataclass
class DrainOutcome:
    """What a drain did: rows it recorded ok and failed (the results are in the database)."""

    ok: int
    failed: int
    drainer: str
    ended_at: float
    attempt: int = 1
    resumed: int = 0  # rows an earlier attempt of this drain recorded, not sent again
    stopped: StoreStopped | None = None  # the store answered that it cannot be written
