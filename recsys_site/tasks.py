"""Thin tasks: each calls one service and owns its retry policy."""

from __future__ import annotations

import logging

from celery import shared_task

from .health import heartbeat_record
from .jobs import (
    RUN_SHARD_TASK,
    RUN_STEP_TASK,
    JobRefused,
    continue_run,
    continue_shard,
    fail_run,
    is_transient,
    job_runs_reap,
    job_start,
)

log = logging.getLogger(__name__)


@shared_task(name="recsys_site.heartbeat", ignore_result=True, time_limit=30, soft_time_limit=20)
def heartbeat() -> None:
    """Sent by beat, run by a worker: its timestamp proves both are alive (shown by /healthz)."""
    heartbeat_record(source="beat")


@shared_task(name=RUN_STEP_TASK, bind=True, ignore_result=True, max_retries=5)
def run_step(self, run_id: str, index: int) -> None:
    """One step of a job run; the store or broker briefly unreachable → retried with backoff, anything else fails
    the run at once (bad data does not get better by retrying)."""
    _retrying_transient(self, run_id, "", lambda: continue_run(run_id=run_id, index=index))


@shared_task(name=RUN_SHARD_TASK, bind=True, ignore_result=True, max_retries=5, acks_late=True,
             reject_on_worker_lost=True)
def run_shard(self, run_id: str, index: int, n: int) -> None:
    """One shard of a sharded step. A worker process lost mid-shard puts the message back at once
    (``reject_on_worker_lost``); a whole worker lost is covered by the shard's lease (``jobs.shards_reap``). A
    redelivered shard that is already done or held does nothing, and a shard that keeps killing its workers fails
    the run after ``SHARD_ATTEMPTS`` claims, so neither path loops."""
    _retrying_transient(self, run_id, f"shard {n} ", lambda: continue_shard(run_id=run_id, index=index, n=n))


def _retrying_transient(task, run_id: str, what: str, work) -> None:
    """Run ``work``; a transient error (store or broker unreachable) is retried with exponential backoff and fails
    the run once retries are exhausted; any other error propagates at once."""
    try:
        work()
    except Exception as exc:
        if not is_transient(exc):
            raise
        if task.request.retries >= task.max_retries:
            fail_run(run_id=run_id, error=f"{what}gave up after {task.max_retries} retries: {exc}")
            raise
        raise task.retry(exc=exc, countdown=min(2 ** task.request.retries * 5, 300)) from exc


@shared_task(name="recsys_site.start_job", ignore_result=True, time_limit=60)
def start_job(name: str, trigger: str = "beat") -> str | None:
    """What beat sends for a scheduled job; a job already running is left alone (and logged)."""
    try:
        return job_start(name=name, trigger=trigger)["_id"]
    except JobRefused as exc:
        log.warning("scheduled %s not started: %s", name, exc)
        return None


@shared_task(name="recsys_site.reap_job_runs", ignore_result=True, time_limit=60)
def reap_job_runs() -> int:
    """Runs whose worker died (lock expired) are marked failed, so their job can start again."""
    return job_runs_reap()
