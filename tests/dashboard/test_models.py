"""The Models page against a real store: a promoted model with an evaluation report, and a second version trained
here, so that training curves, evaluation tables and comparisons are checked against what was recorded."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest

from tests.conftest import FAST
from tests.dashboard.layout import find, rows_of, text_of

pytestmark = pytest.mark.django_db


def fmt(value: Any) -> Any:
    """``value`` as the page's tables show it."""
    from dashboard.components import table_data

    return table_data([{"v": value}], ["v"])[0]["c0"]


@pytest.fixture(scope="module")
def versions(live):
    """The live version (evaluated with ``manage.py evaluate``) and a newer candidate trained with a callback."""
    from django.core.management import call_command

    from ranker.training.services import ranker_train

    call_command("evaluate", "--test-size", "20", "--second-stage-cases", "60", "--categories",
                 "first5_no_title,title_first10", "--epochs", "2", "--no-progress", stdout=io.StringIO())
    calls: list[tuple[int, float, dict[str, float]]] = []
    newer = ranker_train(params=FAST, random_state=1, callback=lambda e, t, m: calls.append((e, t, dict(m))))
    return {"old": live.version, "new": newer.version, "calls": calls, "newer": newer}


def _registry(version: str) -> dict[str, Any]:
    from recsys_site.mongo import get_db

    return get_db()["models"].find_one({"_id": version})


def test_training_records_the_per_epoch_history(versions):
    from django.conf import settings

    history = _registry(versions["new"])["history"]
    # What BPR reported through the callback, epoch by epoch, is what the registry kept.
    bpr_calls = [(e, m) for e, _t, m in versions["calls"] if "loss" in m]
    assert [h["epoch"] for h in history] == [e for e, _ in bpr_calls] == list(range(1, FAST["bpr"]["epochs"] + 1))
    assert [h["loss"] for h in history] == pytest.approx([m["loss"] for _, m in bpr_calls], abs=1e-6)
    validated = [h["epoch"] for h in history if "val_hit_rate_50" in h]
    assert validated == [5, 10, 15]
    assert all(np.isfinite(h["loss"]) and h["loss"] > 0 for h in history)
    # ALS and item-kNN also reported (progress only): the callback saw more than BPR's epochs.
    assert len(versions["calls"]) > len(bpr_calls)
    # The artifact's meta.json holds the same history.
    meta = json.loads((settings.MODEL_DIR / "ranker" / versions["new"] / "meta.json").read_text())
    assert meta["history"] == history
    assert max(h.get("val_hit_rate_50", 0) for h in history) == pytest.approx(
        _registry(versions["new"])["metrics"]["val_hit_rate_50"], abs=1e-6)


def test_layout_lists_every_version_marks_the_live_one_and_plots_its_curves(versions):
    from dashboard.components import MAIN_CHART
    from dashboard.pages.models import layout

    page = layout()
    dropdown = find(page, "models-version")
    assert {o["value"] for o in dropdown.options} == {versions["old"], versions["new"]}
    assert dropdown.value == versions["old"]  # the live version is shown first
    assert "serving" in next(o["label"] for o in dropdown.options if o["value"] == versions["old"])
    rows = {r["version"]: r for r in rows_of(find(page, "models-table"))}
    assert rows[versions["old"]]["status"] == "live ★" and rows[versions["new"]]["status"] == "candidate"
    assert rows[versions["old"]]["evaluated"] == "yes" and rows[versions["new"]]["evaluated"] == "no"
    chart = find(page, "models-curves")
    assert chart.className == MAIN_CHART
    loss = chart.figure.data[0]
    history = _registry(versions["old"])["history"]
    assert list(loss.x) == [h["epoch"] for h in history]
    assert list(loss.y) == pytest.approx([h["loss"] for h in history])
    val = chart.figure.data[1]
    assert list(val.x) == [5, 10, 15]
    assert list(val.y) == pytest.approx([h["val_hit_rate_50"] for h in history if "val_hit_rate_50" in h])


def test_picking_a_version_shows_its_curves(versions):
    from dashboard.pages.models import layout, version_view

    figure, detail = version_view(versions["new"], "r_precision")
    history = _registry(versions["new"])["history"]
    assert list(figure.data[0].y) == pytest.approx([h["loss"] for h in history])
    assert versions["new"] in figure.layout.title.text
    assert f"Version {versions['new']}: candidate" in text_of(detail)
    # The query string picks the version too.
    assert find(layout(version=versions["new"]), "models-version").value == versions["new"]


def test_evaluation_tables_match_the_recorded_report(versions):
    from dashboard.pages.models import version_detail
    from recsys_site.mongo import get_db

    report = get_db()["evaluations"].find_one({})
    assert report["model_version"] == versions["old"]  # filed under the version live when it ran
    detail = version_detail(versions["old"], "ndcg")
    overall = {r["method"]: r for r in rows_of(find(detail, "models-eval-overall"))}
    served = report["served"]
    # baselines beside it, and the blend alone when the second stage re-ranks it
    first_stage = {"blend"} if served == "reranked" else set()
    assert set(overall) == {f"{served} (served)", "popularity", "itemknn", "als", "bpr"} | first_stage
    for method, result in report["methods"].items():
        label = f"{method} (served)" if method == served else method
        for metric in ("r_precision", "ndcg", "clicks"):
            assert overall[label][metric] == fmt(result["overall"][metric])
    categories = {r["category"]: r for r in rows_of(find(detail, "models-eval-categories"))}
    assert set(categories) == {"first5_no_title", "title_first10", "overall"}
    for cat in ("first5_no_title", "title_first10"):
        for method, result in report["methods"].items():
            label = f"{method} (served)" if method == served else method
            assert categories[cat][label] == fmt(result["per_category"][cat]["ndcg"])
    playlists = {r["method"]: r for r in rows_of(find(detail, "models-eval-playlists"))}
    assert set(playlists) == {"buddies (served)", "content", "most_followed"}
    for method in ("content", "most_followed"):
        for metric in ("hit_rate_10", "precision_10"):
            assert playlists[method][metric] == fmt(report["playlists"][method][metric])


def test_a_version_without_evaluation_says_so(versions):
    from dashboard.pages.models import version_detail

    detail = version_detail(versions["new"])
    assert f"No evaluation recorded for version {versions['new']}" in text_of(detail)
    assert find(detail, "models-eval-overall") is None


def test_comparing_two_versions_shows_the_deltas(versions):
    from dashboard.pages.models import compare_rows, compare_view
    from recsys_site.mongo import get_db

    old, new = _registry(versions["old"]), _registry(versions["new"])
    rows = {r["metric"]: r for r in compare_rows(versions["old"], versions["new"])}
    a, b = old["metrics"]["val_hit_rate_50"], new["metrics"]["val_hit_rate_50"]
    assert rows["val_hit_rate_50"]["A"] == a and rows["val_hit_rate_50"]["B"] == b
    assert rows["val_hit_rate_50"]["delta (B − A)"] == pytest.approx(b - a)
    assert rows["final_loss"]["delta (B − A)"] == pytest.approx(new["history"][-1]["loss"] - old["history"][-1]["loss"])
    assert rows["positives"]["delta (B − A)"] == new["data"]["positives"] - old["data"]["positives"]
    # Only A was evaluated: its R-precision is shown, B's and the delta are missing.
    report = get_db()["evaluations"].find_one({})
    assert rows["r_precision"]["A"] == pytest.approx(report["methods"][report["served"]]["overall"]["r_precision"])
    assert rows["r_precision"]["B"] is None and rows["r_precision"]["delta (B − A)"] is None
    # Swapping the sides flips the sign.
    swapped = {r["metric"]: r for r in compare_rows(versions["new"], versions["old"])}
    assert swapped["val_hit_rate_50"]["delta (B − A)"] == pytest.approx(a - b)
    view = compare_view(versions["old"], versions["new"])
    shown = {r["metric"]: r for r in rows_of(find(view, "models-compare-table"))}
    assert shown["r_precision"]["B"] == "—" and shown["r_precision"]["delta (B − A)"] == "—"
    assert "pick two different versions" in text_of(compare_view(versions["old"], versions["old"]))


def test_a_version_evaluated_by_the_job_shows_its_like_for_like_comparison(versions):
    """Last in this module: it adds a third version, evaluated as the training jobs do, against the live one."""
    from dashboard.pages.models import layout, version_detail
    from ranker.evaluation.selectors import evaluation_for_version
    from ranker.evaluation.services import version_evaluate
    from ranker.training.services import ranker_train

    third = ranker_train(params=FAST, random_state=3).version
    version_evaluate(version=third, live_version=versions["old"], sample=300, test_size=40, seed=0)
    report = evaluation_for_version(version=third)
    detail = version_detail(third)
    assert f"live the same recipe with those of {versions['old']}" in text_of(detail)
    shown = {r["metric"]: r for r in rows_of(find(detail, "models-eval-comparison"))}
    assert set(shown) == {"r_precision", "ndcg"}
    for metric, d in report["comparison"].items():
        row = shown[metric]
        assert (row["live recipe"], row["this version"]) == (fmt(d["a"]), fmt(d["b"]))
        assert row["diff"] == f"{d['diff']:+.4f}" and row["95 % interval"] == f"[{d['low']:+.4f}, {d['high']:+.4f}]"
        assert row["verdict"] == ("worse" if d["high"] < 0 else "better" if d["low"] > 0 else "within noise")
    overall = {r["method"]: r for r in rows_of(find(detail, "models-eval-overall"))}
    assert set(overall) == {f"{report['served']} (served)", "live"}
    assert overall["live"]["r_precision"] == fmt(report["methods"]["live"]["overall"]["r_precision"])
    assert find(detail, "models-eval-playlists") is None  # the version evaluation scores track picks only
    # The all-versions table has each version's figures and comparison; a manage.py evaluate report has none.
    rows = {r["version"]: r for r in rows_of(find(layout(), "models-table"))}
    d = report["comparison"]["ndcg"]
    assert rows[third]["ndcg"] == fmt(report["methods"][report["served"]]["overall"]["ndcg"])
    assert rows[third]["against"] == versions["old"]
    assert rows[third]["ndcg vs live"].startswith(f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] (")
    assert rows[versions["old"]]["ndcg vs live"] is None and rows[versions["old"]]["against"] is None
    assert find(version_detail(versions["old"]), "models-eval-comparison") is None


def test_empty_store_says_there_is_no_model(store):
    from dashboard.pages.models import compare_view, layout, version_view

    page = layout()
    assert "No model version yet" in text_of(find(page, "models-empty"))
    annotation = find(page, "models-curves").figure.layout.annotations[0].text
    assert "No model version yet" in annotation
    figure, detail = version_view(None)
    assert "No model version yet" in figure.layout.annotations[0].text
    assert "Two versions are needed" in text_of(compare_view(None, None))
