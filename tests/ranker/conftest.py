"""A live model over the demo store (``demo_store`` and ``model_dir`` come from tests/conftest.py)."""

from __future__ import annotations

import pytest

FAST = {"bpr": {"epochs": 15, "validation_users": 100, "eval_every": 5}, "als": {"factors": 32, "iterations": 5}}


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
