"""Every new version evaluated (ADR 0019): its recipe and the live one's retrained on one sampled split of the real
store, compared case by case, filed for the Models page, and read by the promotion."""

from __future__ import annotations

import pytest

from tests.conftest import FAST, WORSE

SAMPLE, TEST_SIZE = 300, 60


def _evaluate(version, live, progress=None):
    from ranker.evaluation.services import version_evaluate

    return version_evaluate(version=version, live_version=live, sample=SAMPLE, test_size=TEST_SIZE, seed=0,
                            progress=progress)


def test_a_version_is_evaluated_against_the_live_recipe_on_the_same_cases(live):
    from ranker.evaluation.selectors import evaluation_for_version, model_metrics
    from ranker.training.selectors import model_get
    from ranker.training.served import SERVED_NAME
    from ranker.training.services import ranker_train

    candidate = ranker_train(params=FAST, random_state=1).version
    calls = []
    summary = _evaluate(candidate, live.version, progress=lambda f, m: calls.append((f, m)))
    report = evaluation_for_version(version=candidate)
    assert summary["evaluated"] and report["kind"] == "version" and report["model_version"] == candidate
    assert report["live_version"] == live.version == summary["against"]
    assert report["served"] == SERVED_NAME and set(report["methods"]) == {"live", SERVED_NAME}
    split = report["split"]
    assert split["sample"] == SAMPLE and split["playlists"] == SAMPLE and 0 < split["test_size"] <= TEST_SIZE
    for metric in ("r_precision", "ndcg"):
        d = report["comparison"][metric]
        # Paired on the split's cases: each side's mean is that method's overall mean over the same cases.
        assert d["cases"] == split["test_size"] == summary["cases"]
        assert d["a"] == pytest.approx(report["methods"]["live"]["overall"][metric])
        assert d["b"] == pytest.approx(report["methods"][SERVED_NAME]["overall"][metric])
        assert d["low"] <= d["diff"] <= d["high"] and d["diff"] == pytest.approx(d["b"] - d["a"])
    verdict = model_get(version=candidate)["evaluation"]
    assert verdict["against"] == live.version and verdict["comparison"] == report["comparison"]
    assert verdict["report_id"] == str(report["_id"])
    # The Models page reads the candidate's figures from the report filed under it.
    assert model_metrics(version=candidate)["r_precision"] == report["methods"][SERVED_NAME]["overall"]["r_precision"]
    # Progress went forwards through both trainings, and ended done.
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(f < 0.5 and "live" in m for f, m in calls) and any(f > 0.5 and candidate in m for f, m in calls)


def test_without_a_live_version_the_candidate_is_evaluated_alone(live):
    from ranker.evaluation.selectors import evaluation_for_version
    from ranker.training.selectors import model_get
    from ranker.training.served import SERVED_NAME

    summary = _evaluate(live.version, None)  # the live version itself, as a first version is
    report = evaluation_for_version(version=live.version)
    assert summary["evaluated"] and summary["against"] is None and report["comparison"] == {}
    assert set(report["methods"]) == {SERVED_NAME}
    assert model_get(version=live.version)["evaluation"]["overall"]["ndcg"] == (
        report["methods"][SERVED_NAME]["overall"]["ndcg"])


def test_a_worse_recipe_is_refused_forced_through_and_a_better_one_promoted(live, settings):
    from ranker.training.selectors import live_version, model_get
    from ranker.training.services import PromotionRefused, model_promote, ranker_train

    # The hit-rate rule lets anything through here: what refuses is the evaluation.
    settings.RANKER_PROMOTION_TOLERANCE = 1.0
    worse = ranker_train(params=WORSE).version
    verdict = _evaluate(worse, live.version)
    assert "r_precision" in verdict["worse"]
    d = verdict["comparison"]["r_precision"]
    assert d["high"] < 0 and d["b"] < d["a"]
    with pytest.raises(PromotionRefused, match=r"r_precision .* below the live model .*95 % interval") as refused:
        model_promote(version=worse)
    assert f"[{d['low']:+.4f}, {d['high']:+.4f}]" in str(refused.value)
    assert live_version() == live.version
    doc = model_get(version=worse)
    assert doc["status"] == "rejected" and "r_precision" in doc["reason"]
    model_promote(version=worse, force=True)
    assert live_version() == worse and model_get(version=worse)["forced"] is True
    try:
        # Against the worse recipe now live, the usual one is better beyond the interval, and goes live unforced.
        good = ranker_train(params=FAST).version
        verdict = _evaluate(good, worse)
        assert "r_precision" in verdict["better"] and verdict["comparison"]["r_precision"]["low"] > 0
        assert model_promote(version=good).previous == worse
        assert live_version() == good
    finally:
        model_promote(version=live.version, force=True)  # put the module's live model back
    assert live_version() == live.version


def test_a_recipe_within_the_interval_is_promoted(live, settings):
    from ranker.training.selectors import live_version
    from ranker.training.services import model_promote, ranker_train

    settings.RANKER_PROMOTION_TOLERANCE = 1.0
    same = ranker_train(params=FAST, random_state=2).version
    verdict = _evaluate(same, live.version)
    for metric in ("r_precision", "ndcg"):
        d = verdict["comparison"][metric]
        assert d["low"] <= 0 <= d["high"], d  # the live recipe, retrained on the same split with the same seed
    try:
        assert model_promote(version=same).previous == live.version
    finally:
        model_promote(version=live.version, force=True)
    assert live_version() == live.version


def test_an_evaluation_against_another_live_version_is_not_a_verdict():
    from ranker.training.services import evaluation_refusal

    worse = {"metric": "ndcg", "a": 0.4, "b": 0.3, "diff": -0.1, "low": -0.12, "high": -0.08, "cases": 50}
    within = {**worse, "metric": "r_precision", "diff": -0.01, "low": -0.03, "high": 0.01}
    doc = {"evaluation": {"against": "v1", "comparison": {"r_precision": within, "ndcg": worse}}}
    reason = evaluation_refusal(doc, "v1")
    assert reason.startswith("ndcg 0.3000 is below the live model v1's recipe's 0.4000")
    assert "diff -0.1000, 95 % interval [-0.1200, -0.0800]" in reason and "50 test playlists" in reason
    assert evaluation_refusal(doc, "v2") is None  # the live model changed since: it says nothing about v2
    assert evaluation_refusal({"evaluation": {"against": "v1", "comparison": {"r_precision": within}}}, "v1") is None
    assert evaluation_refusal({}, "v1") is None
