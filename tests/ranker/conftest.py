"""A small store with demo playlists (real MongoDB-wire server) and a model directory per module."""

from __future__ import annotations

import pytest

DEMO_PLAYLISTS = 400
FAST = {"bpr": {"epochs": 15, "validation_users": 100, "eval_every": 5}, "als": {"factors": 32, "iterations": 5}}


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


@pytest.fixture(scope="module")
def live(demo_store, model_dir):
    """A trained, promoted model and computed buddies: what the weekly job leaves behind."""
    from pairing.services import buddies_compute
    from ranker.selectors import live_model, live_model_clear
    from ranker.services import model_promote, ranker_train

    model = ranker_train(params=FAST)
    model_promote(version=model.version)
    live_model_clear()
    buddies_compute(k=10)
    yield live_model()
    live_model_clear()
