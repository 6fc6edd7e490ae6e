"""The store workflow: one per store, the only thing that drains that store's operations.

Its id is the store's (``workflow_id``), so Temporal runs at most one: submitters reach it by
signal-with-start, however many there are, and it runs one drain activity at a time. It never
ends by itself (an idle workflow costs Temporal nothing but a row), so what it knows of the last
drain, who and when, is there for the next one; it continues-as-new every ``chunks_per_run``
chunks, or when Temporal suggests it, carrying only its queue and its counters.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from ._model import (
        ACTIVITY_NAME,
        GIVE_UP_ACTIVITY_NAME,
        PROGRESS_QUERY,
        SUBMIT_SIGNAL,
        WORKFLOW_NAME,
        Chunk,
        DrainInput,
        DrainOutcome,
        GiveUpInput,
        StoreProgress,
        StoreState,
        SubmissionTotals,
    )

__all__ = ["StoreWorkflow"]

# An operation's own failure is a result, not an activity failure: what fails a drain is a lost
# worker (retried: another takes over) or a bug. A bug that fails the same way every time is not
# retried, anything else is retried a bounded number of times (some 10 minutes); then the chunk's
# rows are reported failed with the reason and the store goes on to its next chunk.
_KEPT_SUBMISSIONS = 100
_DRAIN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=15,
    non_retryable_error_types=[
        "TypeError",
        "AttributeError",
        "KeyError",
        "NameError",
        "DecodeError",
        "ValidationError",
    ],
)
_GIVE_UP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@workflow.defn(name=WORKFLOW_NAME)
class StoreWorkflow:
    @workflow.init
    def __init__(self, state: StoreState) -> None:
        self._state = state
        self._draining = False

    @workflow.run
    async def run(self, state: StoreState) -> None:
        for _ in range(state.settings.chunks_per_run):
            await workflow.wait_condition(lambda: bool(self._state.queued))
            chunk = self._state.queued[0]
            settings = chunk.settings or self._state.settings  # read at each drain: the submitter's
            self._draining = True
            totals = self._state.totals.setdefault(chunk.submission, SubmissionTotals())
            try:
                outcome = await workflow.execute_activity(
                    ACTIVITY_NAME,
                    DrainInput(state.store, chunk, settings, state.last_drainer, state.last_drain_end, totals.stopped),
                    result_type=DrainOutcome,
                    start_to_close_timeout=timedelta(seconds=settings.chunk_timeout),
                    heartbeat_timeout=timedelta(seconds=settings.heartbeat_timeout),
                    retry_policy=_DRAIN_RETRY,
                )
            except ActivityError as failed:
                outcome = await workflow.execute_activity(
                    GIVE_UP_ACTIVITY_NAME,
                    GiveUpInput(state.store, chunk, _reason(failed)),
                    result_type=DrainOutcome,
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=_GIVE_UP_RETRY,
                )
            self._draining = False
            self._state.queued.pop(0)
            totals.done += outcome.ok + outcome.failed
            totals.stopped = totals.stopped or outcome.stopped
            totals.ok += outcome.ok
            totals.failed += outcome.failed
            self._state.last_drainer, self._state.last_drain_end = outcome.drainer, outcome.ended_at
            if workflow.info().is_continue_as_new_suggested():
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self._state)

    @workflow.signal(name=SUBMIT_SIGNAL)
    def submit(self, chunk: Chunk) -> None:
        seen = self._state.seen_chunks.setdefault(chunk.submission, [])
        if chunk.number in seen:  # a submitter that retried: the chunk is queued or done already
            return
        seen.append(chunk.number)
        self._state.queued.append(chunk)
        if chunk.settings is not None:  # the latest submitter's, for the runs to come
            self._state.settings = chunk.settings
        self._state.totals.setdefault(chunk.submission, SubmissionTotals()).submitted += chunk.count
        self._forget_old_submissions()

    def _forget_old_submissions(self) -> None:
        """Keep the counters of the last ``_KEPT_SUBMISSIONS`` only, so that a workflow that lives for
        years carries a bounded state; the results stay in the histories."""
        totals, seen = self._state.totals, self._state.seen_chunks
        for submission in list(totals)[: max(0, len(totals) - _KEPT_SUBMISSIONS)]:
            if totals[submission].done >= totals[submission].submitted:
                del totals[submission]
                seen.pop(submission, None)

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> StoreProgress:
        return StoreProgress(
            store=self._state.store,
            queued_chunks=len(self._state.queued),
            queued_operations=sum(c.count for c in self._state.queued),
            draining=self._draining,
            totals=self._state.totals,
        )


def _reason(failed: ActivityError) -> str:
    """What failed the drain, in a line: the error its last attempt raised."""
    cause = failed.cause if failed.cause is not None else failed
    kind = getattr(cause, "type", None) or type(cause).__name__  # an ApplicationError names the error raised
    return f"{kind}: {getattr(cause, 'message', None) or cause}"[:500]
