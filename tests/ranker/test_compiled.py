"""The second stage's booster compiled to machine code (lleaves): the same scores as LightGBM's, its object code
cached per model and CPU, and LightGBM's own prediction whenever compiling is not possible."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ranker.recommenders.rerank import SecondStage
from ranker.training.data import rows_matrix
from ranker.training.second_stage import second_stage_train
from tests.ranker.test_rerank import _clustered, _first


@pytest.fixture(scope="module")
def fitted():
    """A fitted stage, its first stage, and a batch of candidates of new playlists to score."""
    pl = _clustered(n=300, seed=2)
    stage = second_stage_train(pl, _first, cases=150, per_part=30, blend_depth=40)
    first = _first().fit(pl.matrix())
    probe = _clustered(n=40, seed=9)
    index = pl.item_index
    seeds = [np.asarray([index[u] for u in probe.item_ids[probe.tracks_of(i)] if u in index])[:5] for i in range(40)]
    return stage, first, rows_matrix(seeds, pl.n_items)


def _fresh(stage: SecondStage) -> SecondStage:
    return SecondStage.from_state(stage.get_state())


def test_the_compiled_booster_scores_and_ranks_exactly_as_lightgbm(fitted, tmp_path):
    stage, first, seeds = fitted
    compiled = _fresh(stage)
    assert not compiled.compiled and compiled.compile(tmp_path) and compiled.compiled
    cands = stage.candidates(first, seeds)
    ours = compiled._compiled(cands.features)
    theirs = stage.booster_.predict(cands.features)
    assert len(ours) == len(cands.features) > 100
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    ids, scores = compiled.rank(first, seeds, 50)
    ids_lgb, scores_lgb = _fresh(stage).rank(first, seeds, 50)
    assert (ids == ids_lgb).all() and (scores == scores_lgb).all()


def test_the_object_code_is_compiled_once_per_model_and_reused(fitted, tmp_path):
    stage, first, seeds = fitted
    assert _fresh(stage).compile(tmp_path)
    [obj] = list(tmp_path.glob("*.o"))
    written = obj.stat().st_mtime_ns
    again = _fresh(stage)
    assert again.compile(tmp_path)  # loaded, not compiled: the file is the same one
    assert list(tmp_path.glob("*.o")) == [obj] and obj.stat().st_mtime_ns == written
    ids, _ = again.rank(first, seeds, 30)
    assert (ids == _fresh(stage).rank(first, seeds, 30)[0]).all()
    # Another model (fewer trees) is another file: never the first model's code.
    state = stage.get_state()
    import lightgbm as lgb

    smaller = lgb.Booster(model_str=str(state["booster"])).model_to_string(num_iteration=1)
    other = _fresh(stage)
    other.booster_ = lgb.Booster(model_str=smaller)
    assert other.compile(tmp_path) and len(list(tmp_path.glob("*.o"))) == 2
    cands = stage.candidates(first, seeds)
    np.testing.assert_allclose(other._compiled(cands.features), other.booster_.predict(cands.features), atol=1e-9)


def test_a_damaged_object_file_is_compiled_again(fitted, tmp_path, caplog):
    stage, first, seeds = fitted
    assert _fresh(stage).compile(tmp_path)
    [obj] = list(tmp_path.glob("*.o"))
    obj.write_bytes(b"not an object file")
    again = _fresh(stage)
    assert again.compile(tmp_path)
    assert "damaged" in caplog.text and obj.stat().st_size > 100
    cands = stage.candidates(first, seeds)
    np.testing.assert_allclose(again._compiled(cands.features), stage.booster_.predict(cands.features), atol=1e-9)


def test_without_a_cache_directory_it_compiles_in_memory(fitted, tmp_path):
    stage, _, _ = fitted
    blocker = tmp_path / "a-file"
    blocker.write_text("a directory cannot be made under a file")
    assert _fresh(stage).compile(blocker / "native")
    assert _fresh(stage).compile(None)


def test_when_it_cannot_compile_lightgbm_predicts_and_says_so(fitted, tmp_path, monkeypatch, caplog):
    stage, first, seeds = fitted
    monkeypatch.setitem(sys.modules, "lleaves", None)  # as if lleaves were not installed
    fallback = _fresh(stage)
    assert not fallback.compile(tmp_path) and not fallback.compiled
    assert "LightGBM's prediction serves" in caplog.text and not list(tmp_path.glob("*.o"))
    ids, _ = fallback.rank(first, seeds, 30)
    assert (ids == _fresh(stage).rank(first, seeds, 30)[0]).all()
