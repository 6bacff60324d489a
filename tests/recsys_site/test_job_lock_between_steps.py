"""Issue 15: a run's lock is held from its first step to its last. While the next step waits in a busy queue
(nobody renews the lock between steps), the reaper leaves the run alone; once a step runs, a worker that dies is
still noticed after ``JOB_LOCK_TTL_SECONDS``."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from tests.processes import wait_until


def _noop(ctx):
    return {"ok": 1}


@pytest.fixture
def busy_queue(settings):
    """A queue no worker consumes: the next step waits there as behind a long backlog. Emptied afterwards."""
    name = f"busy-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    yield name, client
    client.delete(name)


def test_the_lock_outlives_a_wait_between_steps_and_a_dead_step_is_still_reaped(store, settings, busy_queue):
    from recsys_site.collections import JOB_LOCKS
    from recsys_site.jobs import Job, Step, continue_run, job_runs_reap, job_start, lock_renew, register, run_get

    queue, broker = busy_queue
    settings.JOB_LOCK_TTL_SECONDS = 0.5
    name = f"test_two_steps_{uuid.uuid4().hex[:6]}"
    register(Job(name, "two quick steps", (Step("first", _noop, queue=queue), Step("second", _noop, queue=queue))))
    run = job_start(name=name, trigger="test")
    continue_run(run_id=run["_id"], index=0)  # what the worker does with step 0: run it, send step 1
    assert run_get(run_id=run["_id"])["steps"][0]["status"] == "succeeded"
    assert broker.llen(queue) == 2  # step 0's message (run here instead) and step 1's, waiting

    time.sleep(4 * settings.JOB_LOCK_TTL_SECONDS)  # many lock lifetimes pass while step 1 waits
    assert job_runs_reap() == 0
    current = run_get(run_id=run["_id"])
    assert current["status"] == "running", current.get("error")
    assert store[JOB_LOCKS].find_one({"_id": name})["run_id"] == run["_id"]

    # Step 1 starts (its worker renews the lock to the short TTL), then the worker dies: reaped as before.
    assert lock_renew(job=name, run_id=run["_id"])
    wait_until(lambda: job_runs_reap() or run_get(run_id=run["_id"])["status"] == "failed", 30, "the reaper")
    lost = run_get(run_id=run["_id"])
    assert lost["status"] == "failed" and "worker lost" in lost["error"]
