"""The sharded picks step with real Celery workers on the real Redis and MongoDB: shards spread over two workers,
and a worker SIGKILLed mid-shard whose shard another worker finishes, while the old picks keep serving."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.processes import celery_worker, stop, wait_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _ready(names: list[str]) -> None:
    from celery_app import app

    def answered():
        replies = app.control.ping(timeout=1.0) or []
        seen = {host for reply in replies for host in reply}
        return all(any(host.startswith(f"{n}-") for host in seen) for n in names)

    wait_until(answered, 90, f"workers {names} to answer a ping", interval=0.5)


def _finished(run_id: str):
    from recsys_site.jobs import job_runs_reap, run_get

    job_runs_reap()  # what beat does every JOB_REAP_SECONDS
    run = run_get(run_id=run_id)
    return run if run["status"] in ("succeeded", "failed", "cancelled") else None


def _shards(run_id: str) -> list[dict]:
    from recsys_site.collections import JOB_SHARDS
    from recsys_site.mongo import get_db

    return list(get_db()[JOB_SHARDS].find({"run_id": run_id}).sort("n", 1))


def test_picks_shards_spread_over_two_workers_and_swap_in_once(live, model_dir, settings):
    from ranker.picks.selectors import picks_for_user, picks_state
    from recsys_site.jobs import job_start

    settings.JOB_LOCK_TTL_SECONDS = 5.0
    workers = [celery_worker(settings, model_dir, "left"), celery_worker(settings, model_dir, "right")]
    try:
        _ready(["left", "right"])
        run = job_start(name="precompute_picks", params={"shard_users": 25}, trigger="test")
        final = wait_until(lambda: _finished(run["_id"]), 300, "the sharded run to finish")
    finally:
        for worker in workers:
            stop(worker)
    assert final["status"] == "succeeded", final.get("traceback") or final.get("error")
    shards = _shards(run["_id"])
    users = len(live.user_ids)
    assert len(shards) == -(-users // 25) and all(s["status"] == "done" for s in shards)
    owners = {s["owner"] for s in shards}
    assert len(owners) == 2, owners  # both workers took a share
    step = final["steps"][0]
    assert step["shards"] == step["shards_done"] == len(shards) and step["metrics"]["workers"] == 2
    assert final["metrics"]["picks"]["users"] == users == picks_state()["users"]
    last = str(live.user_ids[-1])
    assert picks_for_user(user=last)["model_version"] == live.version


def test_a_shard_whose_worker_is_killed_is_finished_by_another_and_the_old_picks_serve_until_the_swap(
        live, model_dir, settings):
    from ranker.picks.precompute import picks_precompute
    from ranker.picks.selectors import picks_for_user, picks_state
    from recsys_site.jobs import job_start, run_get

    settings.JOB_LOCK_TTL_SECONDS = 3.0
    picks_precompute(model=live)  # the picks served before the run
    users = [str(u) for u in live.user_ids]
    old_state = picks_state()
    doomed = celery_worker(settings, model_dir, "doomed")
    try:
        _ready(["doomed"])
        run = job_start(name="precompute_picks", params={"shard_users": 60}, trigger="test")
        owner = f":{doomed.pid}"

        def claimed_by_doomed():
            return next((s for s in _shards(run["_id"]) if s["status"] == "running" and s["owner"].endswith(owner)),
                        None)

        killed = wait_until(claimed_by_doomed, 120, "the doomed worker to claim a shard", interval=0.02)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
    finally:
        stop(doomed)
    # Nothing new is served while the run is unfinished.
    assert picks_state()["computed_at"] == old_state["computed_at"]
    assert picks_for_user(user=users[killed["spec"]["start"]])["computed_at"] == old_state["computed_at"]
    assert run_get(run_id=run["_id"])["status"] == "running"

    rescuer = celery_worker(settings, model_dir, "rescuer")
    try:
        final = wait_until(lambda: _finished(run["_id"]), 300, "another worker to finish the run")
    finally:
        stop(rescuer)
    assert final["status"] == "succeeded", final.get("traceback") or final.get("error")
    shard = next(s for s in _shards(run["_id"]) if s["_id"] == killed["_id"])
    assert shard["status"] == "done" and shard["attempts"] >= 2
    assert shard["lost_by"].endswith(owner) and not shard["owner"].endswith(owner)
    assert final["steps"][0]["metrics"]["redelivered"] >= 1
    assert any(f"shard {shard['n']} lost by" in line for line in final["log"])
    new_state = picks_state()
    assert new_state["computed_at"] > old_state["computed_at"] and new_state["users"] == len(users)
    stamps = {picks_for_user(user=u)["computed_at"] for u in users}
    assert stamps == {new_state["computed_at"]}  # every user, none left with the old picks or none at all
