#!/usr/bin/env python
"""The second stage of track picks measured: LightGBM against XGBoost on the same candidates, what each feature group
is worth, and what the stage costs per playlist. The evidence of ADR 0018.

    .venv/bin/python bench/rerank.py [--data PATH] [--test-size 1000] [--seed 0] [--cases 2500] [--folds 2]
                                     [--ablations] [--json PATH]

One split of the real MPD sample (``ranker.evaluation.harness.split``, as ``manage.py evaluate`` makes it); the
served blend is fitted on its training part and scored (the baseline). The second stage's training data is cut
from the training part only (``ranker.training.second_stage.second_stage_data``: ``--cases`` playlists in each of
``--folds`` folds, never a test playlist), and the test playlists' candidates and features are computed once. On
them:

1. ``lightgbm``: the served ``SecondStage`` (LightGBM LambdaRank, ``DEFAULT_PARAMS``);
2. ``xgboost``: ``xgboost.XGBRanker(objective="rank:ndcg")`` with the same rounds cap, learning rate and sampling
   as near as the two libraries allow (depth 6; its top-k pairs at 100 per list, which bounds its time on 2 cores),
   early-stopped on NDCG@500 of the same validation playlists;
3. ``--ablations``: LightGBM again without each feature group (the group's columns set to zero), which says what
   the group adds beyond the others. To keep the run short these fits use truncation 100 and early stopping on
   NDCG@100 (``ABLATION_PARAMS``), and a row ``lightgbm (ablation settings)`` with every feature is their reference.

Every row is scored on the same test playlists and compared with the blend by the paired bootstrap (95 % interval).
Speed: each booster's training seconds, and per test playlist the milliseconds of the features and of the
prediction (2 cores, batches of 128 playlists). The table goes to stdout, everything to ``--json`` (default
``var/bench/rerank.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, machine_facts, setup_django, write_json

DEFAULT_DATA = REPO.parent / "shared" / "data" / "mpd-real"
DEFAULT_JSON = REPO / "var" / "bench" / "rerank.json"

ABLATION_PARAMS = {"lambdarank_truncation_level": 100, "eval_at": [100]}
GROUPS = {
    "part scores and ranks": ("knn", "knn_rank", "als", "als_rank", "bpr", "bpr_rank", "blend", "blend_rank"),
    "title (text model)": ("text", "text_rank", "has_title"),
    "popularity": ("popularity", "log_popularity"),
    "artist / album share": ("artist_share", "album_share"),
    "co-occurrence with the seeds": ("cooc_max", "cooc_mean", "cooc_max_cosine", "cooc_seed_share"),
    "factor similarity to the seeds": ("als_seed_max", "als_seed_mean", "bpr_seed_max", "bpr_seed_mean"),
    "the last five seeds": ("cooc_last_max", "cooc_last_mean", "als_last_max"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=2500, help="training playlists per fold (default 2500)")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--ablations", action="store_true", help="also retrain LightGBM without each feature group")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    setup_django("recsys_site.settings.test")
    from train import load_playlists  # bench/train.py: the sample read without a store

    from ranker.evaluation.compare import paired_bootstrap
    from ranker.evaluation.harness import complete, evaluate_method, score_cases, split, training_rows
    from ranker.recommenders.rerank import FEATURES, Candidates
    from ranker.training.data import rows_matrix
    from ranker.training.second_stage import second_stage_data
    from ranker.training.served import make_served

    playlists, _ = load_playlists(args.data)
    the_split = split(playlists, test_size=args.test_size, random_state=args.seed)
    say(f"{len(playlists):,} playlists, {len(the_split.cases)} test playlists; fitting the blend ...")
    blend, fitted = evaluate_method(lambda: make_served(None, random_state=args.seed), the_split)
    rows, names = training_rows(the_split)
    began = time.perf_counter()
    stage, train, hidden, cases = second_stage_data(
        playlists, lambda: make_served(None, random_state=args.seed), train_rows=rows, names=names,
        exclude_rows=the_split.test_rows(), cases=args.cases, folds=args.folds, random_state=args.seed,
        show_progress=True)
    data_seconds = time.perf_counter() - began
    say(f"training data: {len(cases):,} playlists, {train.features.shape[0]:,} candidates in {data_seconds:.0f} s")
    began = time.perf_counter()
    test: list[Candidates] = []
    for start in range(0, len(the_split.cases), 128):
        batch = the_split.cases[start:start + 128]
        test.append(stage.candidates(fitted, rows_matrix([c.seeds for c in batch], playlists.n_items),
                                     titles=[c.title for c in batch], text=the_split.text, tail=500,
                                     order=[c.seeds for c in batch]))
    feature_ms = 1000 * (time.perf_counter() - began) / len(the_split.cases)
    by_popularity = np.argsort(-the_split.popularity, kind="stable")

    def scored(predict: Any) -> tuple[Any, float]:
        began = time.perf_counter()
        ranked = [row for cands in test for row in stage.order(cands, 500, predict=predict)[0]]
        ms = 1000 * (time.perf_counter() - began) / len(the_split.cases)
        ranked = [complete(r, by_popularity[~np.isin(by_popularity, c.seeds)], 500)
                  for r, c in zip(ranked, the_split.cases, strict=True)]
        return score_cases(the_split, ranked), ms

    rows_out: dict[str, dict[str, Any]] = {"blend (first stage)": {"result": blend, "fit_s": blend.train_seconds}}
    say("LightGBM ...")
    began = time.perf_counter()
    stage.fit(train, hidden, random_state=args.seed)
    result, ms = scored(stage.booster_.predict)
    rows_out["lightgbm (served)"] = {"result": result, "fit_s": time.perf_counter() - began, "predict_ms": ms,
                                     "rounds": stage.metrics_["rounds"], "gain": stage.metrics_["gain"]}
    say("XGBoost ...")
    rows_out["xgboost"] = xgboost_row(train, hidden, stage, scored, seed=args.seed)
    if args.ablations:
        stage.params = {**stage.params, **ABLATION_PARAMS}
        say("LightGBM with the ablation settings ...")
        began = time.perf_counter()
        stage.fit(train, hidden, random_state=args.seed)
        result, ms = scored(stage.booster_.predict)
        rows_out["lightgbm (ablation settings)"] = {"result": result, "fit_s": time.perf_counter() - began,
                                                    "predict_ms": ms, "rounds": stage.metrics_["rounds"]}
        for group, columns in GROUPS.items():
            say(f"LightGBM without {group} ...")
            masked = [FEATURES.index(c) for c in columns]
            keep = train.features[:, masked].copy()
            train.features[:, masked] = 0.0
            began = time.perf_counter()
            stage.fit(train, hidden, random_state=args.seed)
            train.features[:, masked] = keep

            def predict(x: np.ndarray, masked: list[int] = masked) -> np.ndarray:
                x = x.copy()
                x[:, masked] = 0.0
                return stage.booster_.predict(x)

            result, ms = scored(predict)
            rows_out[f"lightgbm without {group}"] = {"result": result, "fit_s": time.perf_counter() - began,
                                                     "predict_ms": ms, "rounds": stage.metrics_["rounds"]}
    report = table(rows_out, blend, paired_bootstrap, feature_ms=feature_ms, data_seconds=data_seconds)
    print(report["table"])
    facts = machine_facts("lightgbm", "xgboost-cpu", "xgboost", "torch")
    write_json(args.json, {"machine": facts, "args": vars(args) | {"data": str(args.data), "json": str(args.json)},
                           **{k: v for k, v in report.items() if k != "table"}})
    say(f"wrote {args.json}")
    return 0


def xgboost_row(train: Any, hidden: list[np.ndarray], stage: Any, scored: Any, *, seed: int) -> dict[str, Any]:
    """XGBoost's ranker on the same training playlists and the same validation split as LightGBM's ``fit``."""
    import xgboost as xgb

    labels = [np.isin(ids, h).astype(np.float32) for ids, h in zip(train.ids, hidden, strict=True)]
    useful = [r for r, y in enumerate(labels) if y.any() and not y.all()]
    rng = np.random.default_rng(seed)
    rng.shuffle(useful)
    n_valid = max(1, int(len(useful) * 0.2))
    parts = {"valid": sorted(useful[:n_valid]), "train": sorted(useful[n_valid:])}

    def stack(rows: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.concatenate([train.of(r)[1] for r in rows])
        y = np.concatenate([labels[r] for r in rows])
        qid = np.concatenate([np.full(len(train.ids[r]), n) for n, r in enumerate(rows)])
        return x, y, qid

    x, y, qid = stack(parts["train"])
    vx, vy, vqid = stack(parts["valid"])
    model = xgb.XGBRanker(objective="rank:ndcg", n_estimators=400, learning_rate=0.05, max_depth=6,
                          min_child_weight=50, subsample=0.8, colsample_bytree=0.9, tree_method="hist",
                          eval_metric="ndcg@500", early_stopping_rounds=30, random_state=seed,
                          lambdarank_pair_method="topk", lambdarank_num_pair_per_sample=100)
    began = time.perf_counter()
    model.fit(x, y, qid=qid, eval_set=[(vx, vy)], eval_qid=[vqid], verbose=False)
    fit_s = time.perf_counter() - began
    result, ms = scored(model.predict)
    return {"result": result, "fit_s": fit_s, "predict_ms": ms, "rounds": int(model.best_iteration) + 1}


def table(rows: dict[str, dict[str, Any]], blend: Any, paired_bootstrap: Any, *, feature_ms: float,
          data_seconds: float) -> dict[str, Any]:
    head = ("| method | R-precision | vs blend [95 %] | NDCG | vs blend [95 %] | clicks | title-only R-prec "
            "| fit s | predict ms/playlist |")
    lines = [head, "|---|---:|---|---:|---|---:|---:|---:|---:|"]
    out = {}
    for name, row in rows.items():
        r = row["result"]
        diffs = {m: paired_bootstrap(blend.values(m), r.values(m), metric=m) for m in ("r_precision", "ndcg")}
        cells = []
        for m in ("r_precision", "ndcg"):
            d = diffs[m]
            cells += [f"{r.overall[m]:.4f}", "—" if r is blend else
                      f"{d.relative:+.1%} [{d.low / d.a:+.1%}, {d.high / d.a:+.1%}]"]
        lines.append(f"| {name} | {' | '.join(cells)} | {r.overall['clicks']:.2f} | "
                     f"{r.per_category.get('title_only', {}).get('r_precision', float('nan')):.4f} | "
                     f"{row['fit_s']:.0f} | {row.get('predict_ms', float('nan')):.2f} |")
        out[name] = {"overall": r.overall, "per_category": r.per_category, "fit_seconds": row["fit_s"],
                     "predict_ms": row.get("predict_ms"), "rounds": row.get("rounds"), "gain": row.get("gain"),
                     "vs_blend": {m: d.to_json() for m, d in diffs.items()}}
    lines.append("")
    lines.append(f"features: {feature_ms:.1f} ms per test playlist (candidates from every part and the text model, "
                 f"batches of 128); training data {data_seconds:.0f} s")
    return {"table": "\n".join(lines), "rows": out, "feature_ms": feature_ms, "data_seconds": data_seconds}


def say(message: str) -> None:
    print(f"[rerank] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
