"""`make run`'s supervisor end to end: embedded servers, demo data, gunicorn, worker, beat, clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from recsys_site.embedded import free_port, pid_alive

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_run_brings_everything_up_and_ctrl_c_stops_it(tmp_path):
    web_port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MONGO_URI", "CELERY_BROKER_URL", "MONGO_DB")}
    env.update(VAR_DIR=str(tmp_path / "var"), WEB_PORT=str(web_port), MONGO_PORT=str(free_port()),
               REDIS_PORT=str(free_port()), HEARTBEAT_SECONDS="1", WEB_WORKERS="1",
               DJANGO_SETTINGS_MODULE="recsys_site.settings.local")
    log = (tmp_path / "stack.log").open("w+")
    stack = subprocess.Popen([sys.executable, "-m", "recsys_site.stack", "run", "--demo-playlists", "60"],
                             cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while "Buddies is running" not in (tmp_path / "stack.log").read_text():
            assert stack.poll() is None, (tmp_path / "stack.log").read_text()
            assert time.monotonic() < deadline, "the stack did not come up in time"
            time.sleep(0.5)
        health = {}
        while time.monotonic() < deadline and not health.get("scheduler", {}).get("ok"):
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=10) as response:
                health = json.loads(response.read())
            time.sleep(0.5)
        assert health["status"] == "ok" and health["mongodb"]["ok"] and health["broker"]["ok"]
        assert health["scheduler"]["ok"], health
        output = (tmp_path / "stack.log").read_text()
        assert "60 new" in output  # the demo data was generated and ingested into the empty store
        pids = {p.stem: json.loads(p.read_text())["pid"] for p in (tmp_path / "var" / "run").glob("*.pid")}
        assert set(pids) == {"mongodb", "redis"}
    finally:
        stack.send_signal(signal.SIGINT)
        status = stack.wait(timeout=90)
    assert status == 0, (tmp_path / "stack.log").read_text()
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not list((tmp_path / "var" / "run").glob("*.pid"))
    for name in ("web", "worker", "beat"):
        assert f"stopping {name}" in (tmp_path / "stack.log").read_text()
