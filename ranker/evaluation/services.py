"""Writes of the evaluation: the reports of ``manage.py evaluate`` and of every new version's evaluation, kept for
the dashboard."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from ranker import collections as c
from ranker.recommenders.base import Callback
from ranker.recommenders.device import resolve_device
from ranker.training.data import Playlists
from ranker.training.selectors import live_version, model_get
from ranker.training.served import SERVED_NAME, served_params
from ranker.training.services import EVALUATION_METRICS, model_record_evaluation
from recsys_site.mongo import get_db

from .compare import paired_bootstrap
from .harness import MethodResult, Split, evaluate_served, split

log = logging.getLogger(__name__)

LIVE = "live"  # the live version's recipe, retrained on the split, in a version's report

Progress = Callable[[float, str], None]


def evaluation_record(*, report: dict[str, Any], model_version: str | None = None) -> Any:
    """Keep an evaluation report (``manage.py evaluate --json``'s content) for the dashboard.

    The harness retrains the served recipe on a split of the store as it is now, so a report belongs to the data
    and parameters of its time rather than to one version's files: it is filed under ``model_version`` (default:
    the report's own ``model_version``, else the version live when it is recorded), which the dashboard shows it
    with.
    """
    doc = json.loads(json.dumps(report, default=float))  # plain types only: numpy floats would not encode
    version = model_version or doc.get("model_version") or live_version()
    stored = {**doc, "model_version": version, "created_at": datetime.now(UTC)}
    return get_db()[c.EVALUATIONS].insert_one(stored).inserted_id


def version_evaluate(*, version: str, live_version: str | None, sample: int, test_size: int, seed: int = 0,
                     progress: Progress | None = None) -> dict[str, Any]:
    """Evaluate a new version's recipe on the RecSys 2018 harness, like for like against the live one's.

    ``sample`` playlists are drawn from the store (seeded) and split once (``test_size`` test playlists). The
    served recipe is trained on the split's training part with the candidate's parameters and, when there is a
    live version other than ``version`` whose parameters are known, with the live version's, both with the same
    seed (``harness.evaluate_served``); both are scored on the same cases and compared by the paired bootstrap
    (candidate − live) on ``EVALUATION_METRICS``. Recorded twice: the report under ``version`` in ``evaluations``
    (``manage.py evaluate``'s shape, ``kind`` "version", plus ``comparison``), which the Models page shows, and
    the verdict on the version's registry document (``model_record_evaluation``), which promotion reads.

    What is compared is the recipes, retrained today on today's data: not the live version's files, trained on the
    data of its week. Returns a summary for the job's run document; ``evaluated`` is False (nothing recorded)
    when no sampled playlist is long enough for a test case.
    """
    candidate = model_get(version=version)
    if candidate is None:
        raise ValueError(f"unknown model version {version!r}")
    against, live_params = _live_recipe(version, live_version)
    playlists = Playlists.from_store().sample(sample, seed=seed)
    the_split = split(playlists, test_size=test_size, random_state=seed)
    if not the_split.cases:
        reason = f"no playlist among the {len(playlists):,} sampled is long enough for a test case"
        log.warning("version %s not evaluated: %s", version, reason)
        return {"evaluated": False, "version": version, "reason": reason}
    recipes = [(name, params) for name, params in ((LIVE, live_params), (SERVED_NAME, candidate.get("params")))
               if name != LIVE or against is not None]
    methods: dict[str, MethodResult] = {}
    for n, (name, params) in enumerate(recipes):
        share = 1.0 / len(recipes)
        label = f"evaluating {'the live ' + against if name == LIVE else version}'s recipe"
        methods[name] = _trained(params, the_split, seed=seed, callback=_phase(progress, n * share, share, label,
                                                                                params))
    comparison = ({m: paired_bootstrap(methods[LIVE].values(m), methods[SERVED_NAME].values(m), metric=m,
                                       random_state=seed) for m in EVALUATION_METRICS} if against else {})
    report = {
        "kind": "version", "served": SERVED_NAME, "model_version": version, "live_version": against,
        "methods": {name: result.to_json() for name, result in methods.items()},
        "split": {"test_size": len(the_split.cases), "seed": seed, "playlists": len(playlists), "sample": sample,
                  "categories": sorted({case.category for case in the_split.cases})},
        "comparison": {m: d.to_json() for m, d in comparison.items()},
    }
    report_id = evaluation_record(report=report, model_version=version)
    overall = {m: methods[SERVED_NAME].overall[m] for m in EVALUATION_METRICS}
    verdict = {"against": against, "report_id": str(report_id), "cases": len(the_split.cases), "sample": sample,
               "seed": seed, "overall": overall, "comparison": report["comparison"],
               "worse": [m for m, d in comparison.items() if d.high < 0],
               "better": [m for m, d in comparison.items() if d.low > 0]}
    model_record_evaluation(version=version, evaluation=verdict)
    if progress is not None:
        progress(1.0, f"evaluated {version}")
    return {"evaluated": True, "version": version, **{k: v for k, v in verdict.items() if k != "report_id"}}


def _live_recipe(version: str, live: str | None) -> tuple[str | None, dict[str, Any] | None]:
    """The live version and its parameters, or (None, None) when there is nothing to compare with: no live
    version, the candidate itself, or a version registered without its parameters."""
    if live is None or live == version:
        return None, None
    params = (model_get(version=live) or {}).get("params")
    if not params:
        log.warning("live version %s has no recorded parameters: %s is evaluated alone", live, version)
        return None, None
    # A version recorded before the second stage existed served the blend alone: its recipe had none.
    return live, {"second_stage_cases": 0, **params}


def _trained(params: dict[str, Any] | None, the_split: Split, *, seed: int, callback: Callback | None
             ) -> MethodResult:
    return evaluate_served(params, the_split, random_state=seed, device=str(resolve_device()),
                           threads=settings.RANKER_THREADS, callback=callback)


def _phase(progress: Progress | None, start: float, share: float, label: str, params: dict[str, Any] | None
           ) -> Callback | None:
    """A training callback that reports into [start, start + share) of the evaluation. The blend's parts report in
    turn (item-kNN once, ALS per iteration, BPR per epoch), each counting from 1: the calls are counted, so the
    progress only goes forwards."""
    if progress is None:
        return None
    p = served_params(params)
    expected = 1 + int(p["als"]["iterations"]) + int(p["bpr"]["epochs"])
    calls = 0

    def report(epoch: int, elapsed: float, metrics: dict[str, float]) -> None:
        nonlocal calls
        calls += 1
        part = "BPR" if "loss" in metrics else "kNN, ALS"
        progress(start + share * min(calls / expected, 1.0), f"{label}: {part}, step {calls}/{expected}")

    return report
