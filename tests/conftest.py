"""Session-wide real servers: a SecantusDB (MongoDB wire protocol) and a Redis, started on free loopback
ports for this test run, unless MONGO_URI / CELERY_BROKER_URL point at servers already running.
Nothing is mocked. Each test that touches the store gets its own database, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MPD_REAL = SHARED_DATA / "mpd-real"
HETREC = SHARED_DATA / "lastfm-hetrec-2k"


@pytest.fixture(scope="session", autouse=True)
def servers(tmp_path_factory):
    """Start (or connect to) MongoDB and Redis for the whole session and point settings at them."""
    from django.conf import settings

    from celery_app import app
    from recsys_site.embedded import free_port, mongo_server, redis_server
    from recsys_site.mongo import close_clients

    var = tmp_path_factory.mktemp("var")
    started = []
    mongo_uri = os.environ.get("MONGO_URI")
    if not mongo_uri:
        mongo = mongo_server(var, free_port())
        mongo_uri = mongo.start()
        started.append(mongo)
    broker = os.environ.get("CELERY_BROKER_URL")
    if not broker:
        redis = redis_server(var, free_port())
        broker = redis.start()
        started.append(redis)
    # Dropping databases is slow on SecantusDB; a server we started is thrown away whole at the end.
    settings.DROP_TEST_DATABASES = not any(s.name == "mongodb" for s in started)
    os.environ["MONGO_URI"] = settings.MONGO_URI = mongo_uri
    os.environ["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL = broker
    app.conf.broker_url = app.conf.result_backend = broker
    settings.PICKS_CACHE_URL = broker.rsplit("/", 1)[0] + "/1"
    close_clients()
    yield {"mongo_uri": mongo_uri, "broker_url": broker, "var": var}
    from ranker.experiments.served_log import SERVED_LOG

    SERVED_LOG.flush()  # while the store is up: the at-exit flush would find it gone
    close_clients()
    for server in reversed(started):
        server.stop()


def _fresh_db_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(settings):
    """A fresh, empty MongoDB database with every index, dropped after the test."""
    from recsys_site.mongo import ensure_indexes, get_client, get_db

    settings.MONGO_DB = _fresh_db_name()
    os.environ["MONGO_DB"] = settings.MONGO_DB
    ensure_indexes()
    yield get_db()
    if settings.DROP_TEST_DATABASES:
        get_client().drop_database(settings.MONGO_DB)
    os.environ.pop("MONGO_DB", None)


@pytest.fixture(scope="module")
def module_store():
    """Like ``store`` but shared by one module (for expensive ingests such as the real MPD sample)."""
    from django.conf import settings

    from recsys_site.mongo import ensure_indexes, get_client, get_db

    previous = settings.MONGO_DB
    settings.MONGO_DB = _fresh_db_name("m")
    ensure_indexes()
    yield get_db()
    if settings.DROP_TEST_DATABASES:
        get_client().drop_database(settings.MONGO_DB)
    settings.MONGO_DB = previous


DEMO_PLAYLISTS = 400


@pytest.fixture(scope="module")
def demo_store(module_store, tmp_path_factory):
    """400 demo playlists ingested into a module-wide database."""
    from ingestion.demo import write_demo_slices
    from ingestion.services import mpd_ingest

    out = tmp_path_factory.mktemp("demo")
    write_demo_slices(out, playlists=DEMO_PLAYLISTS, seed=3, slice_size=200)
    report = mpd_ingest(paths=[str(out)])
    assert report.ok, report.summary()
    return module_store


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from django.conf import settings

    previous = settings.MODEL_DIR
    settings.MODEL_DIR = tmp_path_factory.mktemp("models")
    yield settings.MODEL_DIR
    settings.MODEL_DIR = previous


# No second stage by default (it trains a second first stage): tests/ranker/test_rerank.py trains and serves one.
FAST = {"bpr": {"epochs": 15, "validation_users": 100, "eval_every": 5}, "als": {"factors": 32, "iterations": 5},
        "second_stage_cases": 0}
# Only BPR, for one epoch, in the track blend: a recipe clearly worse than FAST's kNN + ALS + BPR on the demo store
# (its R-precision is about half FAST's, far beyond the paired-bootstrap interval of the version evaluation).
WORSE = {"bpr": {**FAST["bpr"], "epochs": 1, "eval_every": 1}, "als": FAST["als"], "knn_weight": 0.0,
         "als_weight": 0.0, "bpr_weight": 1.0, "second_stage_cases": 0}


@pytest.fixture(scope="module")
def live(demo_store, model_dir):
    """A trained, promoted model and computed buddies: what the weekly job leaves behind."""
    from pairing.services import buddies_compute
    from ranker.training.selectors import live_model, live_model_clear
    from ranker.training.services import model_promote, ranker_train

    model = ranker_train(params=FAST)
    model_promote(version=model.version)
    live_model_clear()
    buddies_compute(k=10)
    yield live_model()
    live_model_clear()


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} does not exist (it lives in ../shared beside the repo)")
    return path


@pytest.fixture
def mpd_real() -> Path:
    return require_shared(MPD_REAL)


@pytest.fixture
def hetrec() -> Path:
    return require_shared(HETREC)


def pytest_sessionfinish(session, exitstatus):
    """A run in which no test passed is a failure, even if pytest would call it a success."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and exitstatus == 0 and not reporter.stats.get("passed"):
        session.exitstatus = 1


def app_client(*scopes: str, app: str = "site", any_user: bool = True):
    """A REST client holding an app token with ``scopes`` (``recsys_site/auth.py``); ``any_user``: a first-party app
    that acts for every user, else only for the users it creates."""
    from rest_framework.test import APIClient

    from recsys_site.auth import credential_create

    _, token = credential_create(kind="app", app=app, scopes=list(scopes), any_user=any_user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client
