"""The web process's start-up: one math thread per worker, startup objects frozen out of the cyclic collector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json
import recsys_site.wsgi  # first, as in a gunicorn worker: nothing has loaded numpy yet
import numpy
from threadpoolctl import threadpool_info
print(json.dumps({"pools": [p["num_threads"] for p in threadpool_info()], "frozen": gc.get_freeze_count(),
                  "app": callable(recsys_site.wsgi.application)}))
"""


def _probe(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "WEB_MATH_THREADS")}
    env.update(DJANGO_SETTINGS_MODULE="recsys_site.settings.test", **extra)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_web_worker_runs_one_math_thread_and_freezes_its_startup_objects():
    probe = _probe()
    assert probe["app"] and probe["pools"] and set(probe["pools"]) == {1}
    assert probe["frozen"] > 10_000  # Django, DRF, Dash and the packages


def test_an_explicit_thread_count_wins():
    probe = _probe(WEB_MATH_THREADS="2")
    assert set(probe["pools"]) == {2}
