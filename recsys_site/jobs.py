"""Long jobs as run documents, single-flight, observable and safe to kill (after netbox's ``JobRunner``).

A job is a named list of **steps**; each step calls one service. ``job_start`` takes the job's lock, writes a
``job_runs`` document (status ``queued``) and sends the first step to its Celery queue; each step's task
(``recsys_site.run_step``) runs the step and sends the next, so every step is its own task on its own queue
(training and KNN on ``gpu``) and the chain stops at the first failure. ``--sync`` runs the same steps in-process
with the same document.

The run document holds status (queued → running → succeeded | failed | cancelled), progress 0–100 with a
message, each step's status, duration and metrics, the last log lines, the traceback of a failure and the model
version produced. The lock (``job_locks``, one document per job) carries an expiry that a thread renews while a
step runs; a worker killed with SIGKILL stops renewing it, and once it has expired the run is marked failed
(``job_runs_reap``, on beat and before every start) and the job can start again.

A **sharded** step (``Step.shard`` set) fans out: its ``run`` only plans, returning one spec per shard; each shard
is a ``job_shards`` document and its own task (``recsys_site.run_shard``) on the step's queue, so every worker
listening there takes a share. A shard is claimed with a lease that its worker renews; the shard that finishes
last calls ``Step.gather`` (e.g. swap the new picks in) and sends the next step. A worker killed mid-shard stops
renewing: the reaper hands its shard back to the queue (up to ``SHARD_ATTEMPTS`` claims), and another worker
finishes it. Shards must therefore be idempotent (a shard run twice writes the same thing).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from kombu.exceptions import OperationalError
from pymongo import DESCENDING, ReturnDocument
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    DuplicateKeyError,
    NetworkTimeout,
    ServerSelectionTimeoutError,
)

from .collections import JOB_LOCKS, JOB_RUNS, JOB_SHARDS
from .mongo import get_db

log = logging.getLogger(__name__)

# What the workers run (``recsys_site.tasks``), sent by name: the engine does not import its tasks. The tasks keep
# no result, so sending one never touches the result backend (``ignore_result``).
RUN_STEP_TASK = "recsys_site.run_step"
RUN_SHARD_TASK = "recsys_site.run_shard"
SHARD_ATTEMPTS = 3  # claims of one shard before the run fails (a shard that kills every worker it lands on)
LOG_LINES = 50
FINISHED = ("succeeded", "failed", "cancelled")


class JobRefused(Exception):
    """The job is already queued or running; ``run_id`` names that run."""

    def __init__(self, job: str, run_id: str) -> None:
        super().__init__(f"job {job} is already running as run {run_id}")
        self.job, self.run_id = job, run_id


class StopJob(Exception):
    """Raised by a step to end the run early, successfully, with a message (e.g. a candidate not promoted)."""


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Context], dict[str, Any] | None]  # returns the step's metrics
    queue: str = "default"
    weight: float = 1.0  # share of the job's progress bar
    # A sharded step: ``run`` plans and returns the shard specs (JSON-able dicts); ``shard(ctx, spec)`` does one on
    # any worker and returns its metrics; ``gather(ctx, metrics_of_every_shard)`` runs once, after the last shard,
    # and returns the step's metrics; ``abort(ctx)`` cleans up when the run fails or is cancelled mid-way.
    shard: Callable[[Context, dict[str, Any]], dict[str, Any] | None] | None = None
    gather: Callable[[Context, list[dict[str, Any]]], dict[str, Any] | None] | None = None
    abort: Callable[[Context], None] | None = None


@dataclass(frozen=True)
class Job:
    name: str
    description: str
    steps: tuple[Step, ...]
    params: dict[str, Any] = field(default_factory=dict)  # defaults; start(params=...) overrides


REGISTRY: dict[str, Job] = {}


def register(job: Job) -> Job:
    REGISTRY[job.name] = job
    return job


def get_job(name: str) -> Job:
    """A registered job (``recsys_site.job_definitions`` registers them when the app is ready)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown job {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def _now() -> datetime:
    return datetime.now(UTC)


# -- locks ------------------------------------------------------------------------------------------------------

def _lock_ttl() -> timedelta:
    return timedelta(seconds=settings.JOB_LOCK_TTL_SECONDS)


def lock_acquire(*, job: str, run_id: str, ttl: timedelta | None = None) -> None:
    """Take ``job``'s lock for ``run_id``, or raise ``JobRefused`` naming the run that holds it."""
    db = get_db()
    now = _now()
    doc = {"_id": job, "run_id": run_id, "expires_at": now + (ttl or _lock_ttl()), "taken_at": now}
    try:
        db[JOB_LOCKS].insert_one(doc)
        return
    except DuplicateKeyError:
        pass
    # Held: take it over only if it expired (its worker died); the filter makes the takeover atomic.
    taken = db[JOB_LOCKS].find_one_and_update({"_id": job, "expires_at": {"$lt": now}}, {"$set": doc})
    if taken is None:
        holder = db[JOB_LOCKS].find_one({"_id": job}) or {}
        raise JobRefused(job, holder.get("run_id", "?"))
    _mark_lost(taken["run_id"], taken["expires_at"])


def lock_renew(*, job: str, run_id: str) -> bool:
    """Push the expiry forward; False if the lock is no longer ours (it expired and was taken over)."""
    result = get_db()[JOB_LOCKS].update_one({"_id": job, "run_id": run_id},
                                           {"$set": {"expires_at": _now() + _lock_ttl()}})
    return result.matched_count == 1


def lock_hold(*, job: str, run_id: str, ttl: timedelta) -> bool:
    """Set the lock's expiry to ``ttl`` from now (a run whose next step waits in a queue); False if not ours."""
    result = get_db()[JOB_LOCKS].update_one({"_id": job, "run_id": run_id}, {"$set": {"expires_at": _now() + ttl}})
    return result.matched_count == 1


def lock_release(*, job: str, run_id: str) -> None:
    get_db()[JOB_LOCKS].delete_one({"_id": job, "run_id": run_id})


def _mark_lost(run_id: str, expired_at: datetime) -> None:
    get_db()[JOB_RUNS].update_one(
        {"_id": run_id, "status": {"$nin": list(FINISHED)}},
        {"$set": {"status": "failed", "finished_at": _now(),
                  "error": f"worker lost: the run's lock expired at {expired_at:%Y-%m-%d %H:%M:%S} UTC "
                           "without being renewed (killed or hung worker)"}})


def job_runs_reap() -> int:
    """Send lost shards again (``shards_reap``), then mark failed every unfinished run whose lock expired and drop
    those locks. Returns how many runs were marked failed."""
    shards_reap()
    db = get_db()
    reaped = 0
    for lock in list(db[JOB_LOCKS].find({"expires_at": {"$lt": _now()}})):
        if db[JOB_LOCKS].delete_one({"_id": lock["_id"], "run_id": lock["run_id"]}).deleted_count:
            _mark_lost(lock["run_id"], lock["expires_at"])
            reaped += 1
    return reaped


# -- run documents ------------------------------------------------------------------------------------------------

def _update(run_id: str, changes: dict[str, Any], push_log: str | None = None) -> None:
    update: dict[str, Any] = {"$set": changes} if changes else {}
    if push_log is not None:
        update["$push"] = {"log": {"$each": [push_log], "$slice": -LOG_LINES}}
    get_db()[JOB_RUNS].update_one({"_id": run_id}, update)


class Context:
    """What a step sees: its parameters, a progress reporter and a logger into the run document."""

    def __init__(self, run: dict[str, Any], index: int) -> None:
        self.run_id: str = run["_id"]
        self.params: dict[str, Any] = run["params"]
        self.state: dict[str, Any] = run.get("state") or {}  # what earlier steps left for later ones
        self.index = index
        self._steps = run["steps"]
        self._last_write = 0.0

    def progress(self, fraction: float, message: str = "", *, force: bool = False) -> None:
        """This step is ``fraction`` (0–1) done; written at most twice a second unless ``force``."""
        now = time.monotonic()
        if not force and now - self._last_write < 0.5:
            return
        self._last_write = now
        done = sum(s["weight"] for s in self._steps[:self.index])
        total = sum(s["weight"] for s in self._steps) or 1.0
        pct = round(100.0 * (done + self._steps[self.index]["weight"] * min(max(fraction, 0.0), 1.0)) / total, 1)
        _update(self.run_id, {"progress": pct, "message": message or self._steps[self.index]["name"],
                              f"steps.{self.index}.progress": round(100.0 * fraction, 1)})

    def log(self, line: str) -> None:
        log.info("run %s: %s", self.run_id, line)
        _update(self.run_id, {}, push_log=f"{_now():%H:%M:%S} {line}")

    def remember(self, **values: Any) -> None:
        """Leave values for the later steps of this run (e.g. the model version a training produced)."""
        self.state.update(values)
        _update(self.run_id, {f"state.{k}": v for k, v in values.items()})

    def epoch_callback(self, total_epochs: int, label: str) -> Callable[[int, float, dict[str, float]], None]:
        """A recommender ``callback(epoch, elapsed, metrics)`` that reports progress into this step."""
        def report(epoch: int, elapsed: float, metrics: dict[str, float]) -> None:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            self.progress(epoch / max(total_epochs, 1), f"{label}: epoch {epoch}/{total_epochs} {shown}".strip())
        return report


def run_create(*, job: Job, params: dict[str, Any], trigger: str, run_id: str | None = None) -> dict[str, Any]:
    run = {"_id": run_id or uuid.uuid4().hex, "job": job.name, "params": params, "status": "queued", "progress": 0.0,
           "message": "queued", "trigger": trigger, "queued_at": _now(), "log": [], "state": {},
           "steps": [{"name": s.name, "queue": s.queue, "weight": s.weight, "status": "pending", "progress": 0.0}
                     for s in job.steps]}
    get_db()[JOB_RUNS].insert_one(run)
    return run


def run_get(*, run_id: str) -> dict[str, Any] | None:
    return get_db()[JOB_RUNS].find_one({"_id": run_id})


def run_list(*, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    query = {"job": job} if job else {}
    return list(get_db()[JOB_RUNS].find(query, {"log": 0}).sort("queued_at", DESCENDING).limit(limit))


def run_cancel(*, run_id: str) -> bool:
    """Cancel a queued or running run: no further step starts, and the lock is released."""
    run = get_db()[JOB_RUNS].find_one_and_update(
        {"_id": run_id, "status": {"$in": ["queued", "running"]}},
        {"$set": {"status": "cancelled", "finished_at": _now(), "message": "cancelled"}},
        return_document=ReturnDocument.AFTER)
    if run is None:
        return False
    lock_release(job=run["job"], run_id=run_id)
    return True


# -- starting and executing ---------------------------------------------------------------------------------------

def job_start(*, name: str, params: dict[str, Any] | None = None, sync: bool = False, trigger: str = "api",
              run_id: str | None = None) -> dict[str, Any]:
    """Start job ``name``: refused (``JobRefused``) if it is already queued or running.

    Asynchronous by default (the first step goes to its Celery queue); ``sync`` runs every step here, now.
    ``run_id`` names the run (a caller that follows a sync run from another thread knows it in advance).
    Returns the run document as it stands afterwards.
    """
    job = get_job(name)
    unknown = set(params or {}) - set(job.params)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)} for job {name}; known: {sorted(job.params)}")
    job_runs_reap()
    run_id = run_id or uuid.uuid4().hex
    # A queued run's lock must outlive the wait in the queue, not only a step.
    lock_acquire(job=name, run_id=run_id, ttl=timedelta(seconds=settings.JOB_QUEUED_LOCK_TTL_SECONDS))
    try:
        # The lock comes first, so a refused start writes no run document.
        run_create(job=job, params={**job.params, **(params or {})}, trigger=trigger, run_id=run_id)
        if sync:
            for index in range(len(job.steps)):
                try:
                    go_on = execute_step(run_id=run_id, index=index, inline=True)
                except Exception as exc:  # transient: a worker would retry; in-process there is nobody to
                    fail_run(run_id=run_id, error=f"{job.steps[index].name}: {type(exc).__name__}: {exc}")
                    raise
                if not go_on:
                    break
        else:
            _send_step(job, run_id, 0)
    except BaseException as exc:
        # Never leave a run "queued" that nothing will run (e.g. the broker is down).
        get_db()[JOB_RUNS].update_one({"_id": run_id, "status": "queued"}, {"$set": {
            "status": "failed", "finished_at": _now(), "error": f"could not start: {type(exc).__name__}: {exc}"}})
        lock_release(job=name, run_id=run_id)
        raise
    return run_get(run_id=run_id)


def _send_step(job: Job, run_id: str, index: int) -> None:
    # Between steps nobody renews the lock, and the next step may wait behind other work in its queue: the lock
    # lasts as long as a queued run's (as at the start) until the step starts, which shortens it again to
    # JOB_LOCK_TTL_SECONDS under its renewer. A worker that dies mid-step is still noticed within that TTL.
    lock_hold(job=job.name, run_id=run_id, ttl=timedelta(seconds=settings.JOB_QUEUED_LOCK_TTL_SECONDS))
    current_app.send_task(RUN_STEP_TASK, args=[run_id, index], queue=job.steps[index].queue, ignore_result=True,
                          time_limit=settings.JOB_STEP_TIME_LIMIT, soft_time_limit=settings.JOB_STEP_SOFT_TIME_LIMIT)


class _Renewer(threading.Thread):
    """Renews the job's lock (and a shard's lease) while a step or shard runs; stops when it ends or the process
    dies."""

    def __init__(self, job: str, run_id: str, shard: str | None = None, owner: str | None = None) -> None:
        super().__init__(daemon=True, name=f"lock-{job}")
        self.job, self.run_id, self.shard, self.owner = job, run_id, shard, owner
        self.stopped = threading.Event()

    def stop(self) -> None:
        """Stop renewing and wait for a renewal under way, so that none lands after what the caller writes next
        (e.g. the longer expiry of a run whose next step is queued)."""
        self.stopped.set()
        self.join(timeout=10)

    def run(self) -> None:
        interval = max(settings.JOB_LOCK_TTL_SECONDS / 3.0, 0.2)
        while not self.stopped.wait(interval):
            if self.shard is not None:
                get_db()[JOB_SHARDS].update_one({"_id": self.shard, "owner": self.owner, "status": "running"},
                                                {"$set": {"lease_until": _now() + _lock_ttl()}})
            if not lock_renew(job=self.job, run_id=self.run_id):
                log.warning("run %s lost its lock", self.run_id)
                return


def execute_step(*, run_id: str, index: int, inline: bool = False) -> bool:
    """Run step ``index`` of a run; True if the run should go on. Transient errors propagate (the task retries).

    A sharded step plans here and sends its shards to the queue (the last shard to finish sends the next step, so
    this returns False); ``inline`` runs the shards here, one after another, instead.
    """
    run = run_get(run_id=run_id)
    if run is None or run["status"] in FINISHED:
        log.info("run %s is %s: step %d not started", run_id, run and run["status"], index)
        return False
    job = get_job(run["job"])
    step = job.steps[index]
    if not lock_renew(job=job.name, run_id=run_id):
        _finish(run_id, job.name, "failed", error="the run's lock expired before this step could start")
        return False
    started = _now()
    changes = {"status": "running", "message": step.name, f"steps.{index}.status": "running",
               f"steps.{index}.started_at": started, "worker": socket.gethostname()}
    if index == 0:
        changes["started_at"] = started
    _update(run_id, changes, push_log=f"{started:%H:%M:%S} step {step.name} started")
    renewer = _Renewer(job.name, run_id)
    renewer.start()
    ctx = Context(run_get(run_id=run_id), index)
    try:
        result = step.run(ctx)
        if step.shard is not None:
            return _fan_out(ctx, job, index, list(result or []), inline=inline)
        metrics = result or {}
    except StopJob as stop:
        _step_done(run_id, index, started, {}, "succeeded", step.name)
        _finish(run_id, job.name, "succeeded", message=str(stop))
        return False
    except Exception as exc:
        if is_transient(exc):
            _update(run_id, {f"steps.{index}.status": "retrying"},
                    push_log=f"{_now():%H:%M:%S} step {step.name}: transient error, will retry: {exc}")
            raise
        _step_done(run_id, index, started, {}, "failed", step.name)
        _finish(run_id, job.name, "failed", error=f"{step.name}: {type(exc).__name__}: {exc}",
                tb=traceback.format_exc())
        return False
    finally:
        renewer.stop()
    _step_done(run_id, index, started, metrics, "succeeded", step.name)
    if index + 1 == len(job.steps):
        _finish(run_id, job.name, "succeeded", message="done")
        return False
    return True


def continue_run(*, run_id: str, index: int) -> None:
    """What the step task does: run the step, then send the next one to its queue."""
    if execute_step(run_id=run_id, index=index):
        run = run_get(run_id=run_id)
        _send_step(get_job(run["job"]), run_id, index + 1)


# -- sharded steps ------------------------------------------------------------------------------------------------

def _shard_id(run_id: str, index: int, n: int) -> str:
    return f"{run_id}:{index}:{n}"


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _fan_out(ctx: Context, job: Job, index: int, specs: list[dict[str, Any]], *, inline: bool) -> bool:
    """Write one ``job_shards`` document per spec and send each to the step's queue (or run them here)."""
    now = _now()
    run_id = ctx.run_id
    _update(run_id, {f"steps.{index}.shards": len(specs), f"steps.{index}.shards_done": 0},
            push_log=f"{now:%H:%M:%S} step {job.steps[index].name}: {len(specs)} shards")
    if not specs:
        return _gather(ctx, job, index)
    get_db()[JOB_SHARDS].insert_many([
        {"_id": _shard_id(run_id, index, n), "run_id": run_id, "step": index, "n": n, "spec": spec,
         "status": "pending", "attempts": 0, "sent_at": now} for n, spec in enumerate(specs)])
    if inline:
        go_on = False
        for n in range(len(specs)):
            go_on = execute_shard(run_id=run_id, index=index, n=n)
        return go_on
    for n in range(len(specs)):
        _send_shard(job, run_id, index, n)
    return False


def _send_shard(job: Job, run_id: str, index: int, n: int) -> None:
    current_app.send_task(RUN_SHARD_TASK, args=[run_id, index, n], queue=job.steps[index].queue, ignore_result=True,
                          time_limit=settings.JOB_STEP_TIME_LIMIT, soft_time_limit=settings.JOB_STEP_SOFT_TIME_LIMIT)


def execute_shard(*, run_id: str, index: int, n: int) -> bool:
    """Claim shard ``n`` of step ``index`` and run it; True if it was the last one and the run should go on.

    A shard that is done, or held by a live worker, is left alone (a duplicate delivery does nothing). Transient
    errors hand the shard back and propagate (the task retries); any other error fails the run.
    """
    db = get_db()
    run = run_get(run_id=run_id)
    if run is None:
        return False
    job = get_job(run["job"])
    step = job.steps[index]
    ctx = Context(run, index)
    if run["status"] in FINISHED:
        _abort(step, ctx)
        return False
    now, me = _now(), _worker_name()
    shard = db[JOB_SHARDS].find_one_and_update(
        {"_id": _shard_id(run_id, index, n),
         "$or": [{"status": "pending"}, {"status": "running", "lease_until": {"$lt": now}}]},
        {"$set": {"status": "running", "owner": me, "lease_until": now + _lock_ttl(), "started_at": now},
         "$inc": {"attempts": 1}}, return_document=ReturnDocument.AFTER)
    if shard is None:
        log.info("run %s: shard %d of step %s is done or held by a live worker", run_id, n, step.name)
        return False
    if shard["attempts"] > SHARD_ATTEMPTS:
        return _shard_failed(ctx, job, shard, f"claimed {shard['attempts'] - 1} times without finishing "
                                              "(its workers died)")
    renewer = _Renewer(job.name, run_id, shard=shard["_id"], owner=me)
    renewer.start()
    try:
        metrics = step.shard(ctx, shard["spec"]) or {}
    except Exception as exc:
        if is_transient(exc):
            db[JOB_SHARDS].update_one({"_id": shard["_id"], "owner": me, "status": "running"},
                                      {"$set": {"status": "pending"}})
            raise
        return _shard_failed(ctx, job, shard, f"{type(exc).__name__}: {exc}", traceback.format_exc())
    finally:
        renewer.stop()
    ended = _now()
    done = db[JOB_SHARDS].find_one_and_update(
        {"_id": shard["_id"], "owner": me, "status": "running"},
        {"$set": {"status": "done", "metrics": metrics, "finished_at": ended,
                  "duration_s": round((ended - now).total_seconds(), 3)}})
    if done is None:  # our lease lapsed and another worker took the shard over: its result is the one that counts
        log.warning("run %s: shard %d finished here after another worker took it over", run_id, n)
        return False
    after = db[JOB_RUNS].find_one_and_update({"_id": run_id}, {"$inc": {f"steps.{index}.shards_done": 1}},
                                             projection={"steps": 1}, return_document=ReturnDocument.AFTER)
    finished, total = after["steps"][index]["shards_done"], after["steps"][index]["shards"]
    ctx.progress(finished / total, f"{step.name}: {finished:,} of {total:,} shards", force=finished == total)
    if finished < total:
        return False
    return _gather(ctx, job, index)


def _gather(ctx: Context, job: Job, index: int) -> bool:
    """After the last shard: the step's ``gather`` (exactly once: only one shard can bring the count to the total)."""
    step = job.steps[index]
    started = _step_started(ctx.run_id, index)
    shards = list(get_db()[JOB_SHARDS].find({"run_id": ctx.run_id, "step": index}).sort("n", 1))
    try:
        metrics = (step.gather(ctx, [s.get("metrics") or {} for s in shards]) if step.gather else {}) or {}
    except Exception as exc:
        _step_done(ctx.run_id, index, started, {}, "failed", step.name)
        _finish(ctx.run_id, job.name, "failed", error=f"{step.name}: {type(exc).__name__}: {exc}",
                tb=traceback.format_exc())
        _abort(step, ctx)
        return False
    metrics = {**metrics, "shards": len(shards), "workers": len({s.get("owner") for s in shards}),
               "redelivered": sum(1 for s in shards if s.get("attempts", 1) > 1)}
    _step_done(ctx.run_id, index, started, metrics, "succeeded", step.name)
    if index + 1 == len(job.steps):
        _finish(ctx.run_id, job.name, "succeeded", message="done")
        return False
    return True


def _shard_failed(ctx: Context, job: Job, shard: dict[str, Any], error: str, tb: str | None = None) -> bool:
    step = job.steps[ctx.index]
    get_db()[JOB_SHARDS].update_one({"_id": shard["_id"]}, {"$set": {"status": "failed", "error": error}})
    started = _step_started(ctx.run_id, ctx.index)
    _step_done(ctx.run_id, ctx.index, started, {}, "failed", step.name)
    _finish(ctx.run_id, job.name, "failed", error=f"{step.name}: shard {shard['n']}: {error}", tb=tb)
    _abort(step, ctx)
    return False


def _step_started(run_id: str, index: int) -> datetime:
    """When step ``index`` of the run started (as an aware datetime: the store hands back naive UTC)."""
    run = run_get(run_id=run_id) or {}
    started = run.get("steps", [{}] * (index + 1))[index].get("started_at") or _now()
    return started if started.tzinfo is not None else started.replace(tzinfo=UTC)


def _abort(step: Step, ctx: Context) -> None:
    if step.abort is None:
        return
    try:
        step.abort(ctx)
    except Exception:  # cleanup is best effort: the run has already failed for a reason worth keeping
        log.exception("run %s: cleaning up step %s failed", ctx.run_id, step.name)


def continue_shard(*, run_id: str, index: int, n: int) -> None:
    """What the shard task does: run the shard; the last one sends the next step."""
    if execute_shard(run_id=run_id, index=index, n=n):
        run = run_get(run_id=run_id)
        _send_step(get_job(run["job"]), run_id, index + 1)


def shards_reap() -> int:
    """Shards whose worker stopped renewing their lease go back to the queue; runs with shards still to do keep
    their lock (between shards no step renews it). Returns how many shards were sent again."""
    db = get_db()
    now = _now()
    resent = 0
    for shard in list(db[JOB_SHARDS].find({"status": "running", "lease_until": {"$lt": now}})):
        run = run_get(run_id=shard["run_id"])
        if run is None or run["status"] in FINISHED:
            db[JOB_SHARDS].update_one({"_id": shard["_id"], "status": "running"}, {"$set": {"status": "abandoned"}})
            continue
        back = db[JOB_SHARDS].find_one_and_update(
            {"_id": shard["_id"], "status": "running", "lease_until": shard["lease_until"]},
            {"$set": {"status": "pending", "sent_at": now, "lost_by": shard.get("owner")}})
        if back is not None:
            log.warning("run %s: shard %d lost by %s (lease expired); sent again", run["_id"], shard["n"],
                        shard.get("owner"))
            _update(run["_id"], {}, push_log=f"{now:%H:%M:%S} shard {shard['n']} lost by {shard.get('owner')}; "
                                             "sent again")
            _send_shard(get_job(run["job"]), run["_id"], shard["step"], shard["n"])
            resent += 1
    for run_id in db[JOB_SHARDS].distinct("run_id", {"status": {"$in": ["pending", "running"]}}):
        run = run_get(run_id=run_id)
        if run is not None and run["status"] not in FINISHED:
            lock_renew(job=run["job"], run_id=run_id)
    return resent


def fail_run(*, run_id: str, error: str) -> None:
    """Mark a run failed from outside a step (retries exhausted, time limit)."""
    run = run_get(run_id=run_id)
    if run is not None:
        _finish(run_id, run["job"], "failed", error=error)


def _step_done(run_id: str, index: int, started: datetime, metrics: dict[str, Any], status: str, name: str = ""
               ) -> None:
    ended = _now()
    _update(run_id, {f"steps.{index}.status": status, f"steps.{index}.finished_at": ended,
                     f"steps.{index}.duration_s": round((ended - started).total_seconds(), 3),
                     f"steps.{index}.metrics": metrics, f"steps.{index}.progress": 100.0},
            push_log=f"{ended:%H:%M:%S} step {name or index + 1} {status}")


def _finish(run_id: str, job: str, status: str, *, message: str = "", error: str | None = None,
            tb: str | None = None) -> None:
    run = run_get(run_id=run_id) or {}
    ended = _now()
    began = run.get("started_at") or run.get("queued_at") or ended
    if began.tzinfo is None:
        began = began.replace(tzinfo=UTC)
    changes: dict[str, Any] = {"status": status, "finished_at": ended, "message": error or message,
                               "duration_s": round((ended - began).total_seconds(), 3)}
    if status == "succeeded":
        changes["progress"] = 100.0
        changes["metrics"] = {s["name"]: s.get("metrics", {}) for s in run.get("steps", [])}
    if error:
        changes["error"] = error
    if tb:
        changes["traceback"] = tb
    # Never overwrite a cancellation or an earlier verdict.
    get_db()[JOB_RUNS].update_one({"_id": run_id, "status": {"$nin": list(FINISHED)}}, {"$set": changes})
    lock_release(job=job, run_id=run_id)
    log.info("run %s (%s) %s %s", run_id, job, status, error or message)


def is_transient(exc: BaseException) -> bool:
    """Failures worth retrying: the store or the broker briefly unreachable. Bad data is not."""

    return isinstance(exc, AutoReconnect | ConnectionFailure | NetworkTimeout | ServerSelectionTimeoutError |
                      OperationalError)
