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


WARM_PROBE = """
import json
import recsys_site.wsgi  # as a gunicorn worker starts, before any request
from ranker.training import selectors
if recsys_site.wsgi.warming is not None:
    recsys_site.wsgi.warming.join(120)
model = selectors._live._model
print(json.dumps({"loaded": model.version if model is not None else None,
                  "playlist_space": model is not None and model._space is not None}))
"""


def _probe(script: str = PROBE, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "WEB_MATH_THREADS")}
    env.update(DJANGO_SETTINGS_MODULE="recsys_site.settings.test", **extra)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
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


def test_a_web_worker_loads_the_live_model_before_its_first_request(live, model_dir, settings):
    where = {"MONGO_URI": settings.MONGO_URI, "MONGO_DB": settings.MONGO_DB, "MODEL_DIR": str(model_dir)}
    warmed = _probe(WARM_PROBE, WEB_WARM_START="true", **where)  # the product's default (off in test settings)
    assert warmed == {"loaded": live.version, "playlist_space": True}
    assert _probe(WARM_PROBE, WEB_WARM_START="false", **where)["loaded"] is None  # the switch: the first request


def test_a_store_that_cannot_answer_does_not_stop_a_worker_from_starting():
    probe = _probe(MONGO_URI="mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300", MONGO_DB="nowhere")
    assert probe["app"]
