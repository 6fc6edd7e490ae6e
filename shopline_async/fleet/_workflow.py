"""The store workflow: one per store, the only thing that drains that store's operations.

Its id is the store's (``workflow_id``), so Temporal runs at most one: submitters reach it by
signal-with-start, however many there are, and it runs one drain activity at a time, chunk by
chunk, submission by submission. It continues-as-new every ``chunks_per_run`` chunks, or when
Temporal suggests it, carrying its queue and who drained the store last (for the next drain's
wait for SHOPLINE's bucket). Idle for ``idle_timeout`` it ends, and the next submit starts it
again; ``fleet stop`` ends it after the chunk it is draining, its queued chunks reported not sent.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from ._model import (
        ACTIVITY_NAME,
        GIVE_UP_ACTIVITY_NAME,
        STOP_SIGNAL,
        SUBMIT_SIGNAL,
        WORKFLOW_NAME,
        DrainInput,
        DrainOutcome,
        GiveUpInput,
        Queued,
        StoreState,
        Submitted,
    )

__all__ = ["StoreWorkflow"]

# An operation's own failure is a result, not an activity failure: what fails a drain is a lost
# worker or database (retried: another takes over, the database comes back) or a bug. A bug that
# fails the same way every time is not retried, anything else is retried a bounded number of
# times (some 10 minutes); then the chunk's rows are reported failed with the reason and the store
# goes on to its next chunk.
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
        self._stopping = False
        self._drains = 0

    @workflow.run
    async def run(self, state: StoreState) -> None:
        for _ in range(state.settings.chunks_per_run):
            if not await self._wait_for_work():
                await workflow.wait_condition(workflow.all_handlers_finished)
                return
            await self._drain_next()
            if workflow.info().is_continue_as_new_suggested():
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._stopping:  # came with the last chunk of this run: not carried over
            await self._wait_for_work()
            return
        workflow.continue_as_new(self._state)

    async def _wait_for_work(self) -> bool:
        """Whether there is a chunk to drain: False once idle for ``idle_timeout``, or stopped."""
        try:
            await workflow.wait_condition(
                lambda: bool(self._state.queued) or self._stopping,
                timeout=timedelta(seconds=self._state.settings.idle_timeout),
            )
        except asyncio.TimeoutError:
            return bool(self._state.queued)  # a submit that came with the timeout is drained
        if self._stopping:
            for queued in self._state.queued:
                for number in range(queued.next, queued.chunks):
                    reason = "the store's workflow was stopped (fleet stop) before its turn"
                    await self._give_up(queued, number, self._drain_id(), reason, sent=False)
            self._state.queued.clear()
            return False
        return True

    async def _drain_next(self) -> None:
        queued = self._state.queued[0]
        settings = queued.settings or self._state.settings  # read at each drain: the submitter's
        drain = self._drain_id()
        job = DrainInput(
            self._state.app,
            self._state.store,
            queued.submission,
            queued.next,
            drain,
            settings,
            self._state.last_drainer,
            self._state.last_drain_end,
            queued.round,
        )
        try:
            outcome = await workflow.execute_activity(
                ACTIVITY_NAME,
                job,
                result_type=DrainOutcome,
                start_to_close_timeout=timedelta(seconds=settings.chunk_timeout),
                heartbeat_timeout=timedelta(seconds=settings.heartbeat_timeout),
                retry_policy=_DRAIN_RETRY,
            )
        except ActivityError as failed:
            outcome = await self._give_up(queued, queued.next, drain, _reason(failed), sent=True)
        queued.next += 1
        if queued.next >= queued.chunks:
            self._state.queued.pop(0)
        self._state.last_drainer, self._state.last_drain_end = outcome.drainer, outcome.ended_at

    async def _give_up(self, queued: Queued, number: int, drain: str, reason: str, *, sent: bool) -> DrainOutcome:
        job = GiveUpInput(
            self._state.app, self._state.store, queued.submission, number, drain, reason, sent, queued.round
        )
        outcome: DrainOutcome = await workflow.execute_activity(
            GIVE_UP_ACTIVITY_NAME,
            job,
            result_type=DrainOutcome,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=_GIVE_UP_RETRY,
        )
        return outcome

    def _drain_id(self) -> str:
        """A name for one drain, unique to it: this run's id and the drain's number in the run."""
        self._drains += 1
        return f"{workflow.info().run_id}/{self._drains}"

    @workflow.signal(name=SUBMIT_SIGNAL)
    def submit(self, submitted: Submitted) -> None:
        if any((q.submission, q.round) == (submitted.submission, submitted.round) for q in self._state.queued):
            return  # a submitter that retried: queued already
        queued = Queued(submitted.submission, submitted.chunks, 0, submitted.settings, submitted.round)
        self._state.queued.append(queued)
        if submitted.settings is not None:  # the latest submitter's, for the runs to come
            self._state.settings = submitted.settings

    @workflow.signal(name=STOP_SIGNAL)
    def stop(self) -> None:
        self._stopping = True


def _reason(failed: ActivityError) -> str:
    """What failed the drain, in a line: the error its last attempt raised."""
    cause = failed.cause if failed.cause is not None else failed
    kind = getattr(cause, "type", None) or type(cause).__name__  # an ApplicationError names the error raised
    return f"{kind}: {getattr(cause, 'message', None) or cause}"[:500]
