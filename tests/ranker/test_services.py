"""Training, registry, promotion and picks against the real MongoDB-wire server, on demo playlists."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[2]


def _some_playlist(model, min_tracks=10):
    """A user of the model (an MPD pseudo-user) with at least ``min_tracks`` tracks."""
    sizes = model.user_items.getnnz(axis=1)
    row = int((sizes >= min_tracks).nonzero()[0][0])
    return str(model.user_ids[row]), model.item_ids[model.user_items[row].indices].tolist()


def test_live_model_is_registered_and_loaded(live):
    from ranker.training.selectors import live_version, model_get, model_list

    assert live is not None and live.version == live_version()
    doc = model_get(version=live.version)
    assert doc["status"] == "live"
    assert doc["metrics"]["val_hit_rate_50"] is not None
    assert doc["data"]["users"] == len(live.user_ids) and doc["data"]["positives"] == live.user_items.nnz
    assert live.version in [m["_id"] for m in model_list()]


def test_user_track_picks_exclude_their_tracks(live):
    from ranker.picks.serve import recommend_tracks

    user, tracks = _some_playlist(live)
    picks = recommend_tracks(user=user, k=50)
    assert picks.source == "model" and picks.model_version == live.version
    assert len(picks) == 50 and len(set(picks.tracks)) == 50
    assert not set(picks.tracks) & set(tracks)
    assert picks.scores == sorted(picks.scores, reverse=True)


def test_seed_picks_fold_in_and_report_unknown_seeds(live):
    from ranker.picks.serve import recommend_tracks

    _, tracks = _some_playlist(live)
    bogus = "spotify:track:" + "x" * 22
    picks = recommend_tracks(seed_tracks=[*tracks[:5], bogus], k=20)
    assert picks.source == "model"
    assert picks.unknown_seeds == [bogus]
    assert not set(picks.tracks) & set(tracks[:5])


def test_seed_picks_favour_the_seeds_taste(live):
    """Seeds from one playlist: its other tracks must rank far above chance among 500 picks."""
    from ranker.picks.serve import recommend_tracks

    _, tracks = _some_playlist(live, min_tracks=30)
    picks = recommend_tracks(seed_tracks=tracks[:10], k=500)
    found = len(set(picks.tracks) & set(tracks[10:]))
    chance = 500 / len(live.item_ids) * len(tracks[10:])
    assert found > 3 * chance


def test_title_only_and_cold_fallbacks(live):
    from ranker.picks.serve import recommend_tracks

    name = live.titles.names and next(iter(live.titles.names))
    by_title = recommend_tracks(title=name, k=10)
    assert by_title.source == "title" and len(by_title) == 10
    nothing = recommend_tracks(title="zzzz qqqq", k=10)
    assert nothing.source == "popularity" and len(nothing) == 10
    unknown_only = recommend_tracks(seed_tracks=["spotify:track:" + "y" * 22], k=5)
    assert unknown_only.source == "popularity" and unknown_only.unknown_seeds


@pytest.mark.parametrize("bad", [0, 501, "10", True, None])
def test_bad_k_is_refused(live, bad):
    from ranker.picks.serve import recommend_tracks

    with pytest.raises(ValueError, match="k must be"):
        recommend_tracks(title="rock", k=bad)


def test_buddies_have_evidence(live):
    from pairing.selectors import buddies_for_user, buddies_state

    user, tracks = _some_playlist(live)
    buddies = buddies_for_user(user=user, k=5)
    assert len(buddies) == 5
    sims = [b["similarity"] for b in buddies]
    assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 for s in sims)
    assert user not in {b["user"] for b in buddies}
    assert any(b["shared_artists"] for b in buddies)
    state = buddies_state()
    assert state["model_version"] == live.version and state["method"] == "exact"
    assert buddies_for_user(user="nobody:0") is None


def test_playlist_picks_explain_themselves_and_skip_own(live):
    from ranker.picks.serve import recommend_playlists

    user, _ = _some_playlist(live)
    own = int(user.split(":")[1])
    picks = recommend_playlists(user=user, k=5)
    assert picks.source == "model" and len(picks.playlists) == 5
    assert own not in [p["pid"] for p in picks.playlists]
    assert all(p["name"] for p in picks.playlists)
    assert any(p["why"]["buddy"] for p in picks.playlists)
    assert all(0.0 <= p["why"]["new_share"] <= 1.0 for p in picks.playlists)


def test_cold_user_gets_most_followed(live):
    from ranker.picks.serve import recommend_playlists

    picks = recommend_playlists(user="api:new-user", k=3)
    assert picks.source == "most_followed"
    followers = [p["why"]["followers"] for p in picks.playlists]
    assert followers == sorted(followers, reverse=True) and len(followers) == 3


def test_promotion_is_refused_when_worse_and_forced_through(live, settings):
    from ranker.training.selectors import live_version, model_get
    from ranker.training.services import PromotionRefused, model_promote, ranker_train

    candidate = ranker_train(params=FAST)
    assert model_get(version=candidate.version)["status"] == "candidate"
    # A tolerance below -1 demands more than twice the live hit rate: no candidate can meet it.
    settings.RANKER_PROMOTION_TOLERANCE = -1.5
    with pytest.raises(PromotionRefused, match="not promoted"):
        model_promote(version=candidate.version)
    assert live_version() == live.version
    assert model_get(version=candidate.version)["status"] == "rejected"
    model_promote(version=candidate.version, force=True)
    assert live_version() == candidate.version
    assert model_get(version=live.version)["status"] == "retired"
    model_promote(version=live.version, force=True)  # put the module's live model back
    assert live_version() == live.version


def test_a_version_is_never_overwritten(live):
    with pytest.raises(FileExistsError):
        live.save()


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        if file.is_file():
            h.update(file.name.encode())
            h.update(file.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_killed_training_leaves_live_model_and_picks_untouched(live, model_dir):
    """SIGKILL a ``train_ranker --promote`` mid-training: nothing served changes, and serving still works."""
    from django.conf import settings

    from pairing.selectors import buddies_for_user
    from ranker.picks.serve import recommend_tracks
    from ranker.training.selectors import live_model_clear, live_version, model_list

    user, _ = _some_playlist(live)
    before = {"version": live_version(), "files": _tree_digest(model_dir / "ranker" / live.version),
              "models": len(model_list()), "picks": recommend_tracks(user=user, k=20).tracks,
              "buddies": buddies_for_user(user=user, k=10)}
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "recsys_site.settings.test", "MONGO_URI": settings.MONGO_URI,
           "MONGO_DB": settings.MONGO_DB, "MODEL_DIR": str(model_dir)}
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "train_ranker", "--promote", "--force", "--param", "bpr.epochs=100000",
         "--param", "bpr.patience=100000"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, bufsize=1)
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while "epoch" not in seen:  # tqdm's bar: training is under way
            assert proc.poll() is None, f"training ended before it could be killed: {seen[-2000:]}"
            assert time.monotonic() < deadline, f"training never started: {seen[-2000:]}"
            seen += proc.stderr.read(64)
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    live_model_clear()
    assert live_version() == before["version"]
    assert _tree_digest(model_dir / "ranker" / live.version) == before["files"]
    assert len(model_list()) == before["models"]  # nothing half-registered
    assert recommend_tracks(user=user, k=20).tracks == before["picks"]
    assert buddies_for_user(user=user, k=10) == before["buddies"]
