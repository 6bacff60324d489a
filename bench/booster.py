#!/usr/bin/env python
"""The second stage's booster per request: LightGBM's own prediction against the same booster compiled for the CPU
(lleaves, ``ranker.recommenders.compiled``). The evidence of ADR 0020.

    .venv/bin/python bench/booster.py [--model DIR] [--rows 500,814,1207,2000] [--repeat 200] [--json PATH]

``--model`` is a model version's directory (``MODEL_DIR/ranker/<version>``): its ``second_stage.npz`` is measured.
Without it, a booster of the served shape is fitted on seeded random features: LambdaRank with the served
parameters (``DEFAULT_PARAMS``: 31 leaves, at least 50 rows a leaf), one column per feature the stage computes and
``--rounds`` trees (203: what early stopping kept for the served version in the acceptance run). Prediction time
depends on the trees' number and depth, not on what the features mean.

For each number of rows (a continuation at k=500 asks for 814 at 200 candidates per part, 1,207 at 400), the
milliseconds of one prediction on one thread, as a web worker makes it (median and p99 over ``--repeat``), by
LightGBM (``Booster.predict(num_threads=1)``) and by the compiled booster (``n_jobs=1``); the largest difference
between their scores; the seconds to compile, and to load the compiled code from its cache as a second process of
the machine does. The table goes to stdout, the numbers as JSON to ``var/bench/booster.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as in a web worker (recsys_site.wsgi), before numpy loads

import numpy as np  # noqa: E402 (after the thread setting)
from _common import REPO, machine_facts, setup_django, write_json  # noqa: E402

DEFAULT_JSON = REPO / "var" / "bench" / "booster.json"


def _synthetic_booster(rounds: int, seed: int) -> str:
    import lightgbm as lgb

    from ranker.recommenders.rerank import DEFAULT_PARAMS, FEATURES

    rng = np.random.default_rng(seed)
    groups = [800] * 300
    x = rng.standard_normal((sum(groups), len(FEATURES)))
    relevant = x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] + rng.standard_normal(len(x)) > 2.5
    params = {k: v for k, v in DEFAULT_PARAMS.items() if k not in ("eval_at", "metric", "first_metric_only")}
    booster = lgb.train({**params, "seed": seed, "num_threads": os.cpu_count()},
                        lgb.Dataset(x, relevant.astype(float), group=groups), num_boost_round=rounds)
    return booster.model_to_string()


def _times(fn, x: np.ndarray, repeat: int) -> tuple[float, float]:
    fn(x)  # warm
    out = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - began) * 1000)
    return float(np.median(out)), float(np.percentile(out, 99))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model version directory (default: a synthetic booster)")
    parser.add_argument("--rounds", type=int, default=203, help="trees of the synthetic booster (default 203)")
    parser.add_argument("--rows", default="500,814,1207,2000", help="rows per prediction (comma-separated)")
    parser.add_argument("--repeat", type=int, default=200, help="predictions timed per row count (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write JSON (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    setup_django("recsys_site.settings.local")

    import lightgbm as lgb

    from ranker.recommenders.compiled import compile_booster

    if args.model:
        with np.load(args.model / "second_stage.npz", allow_pickle=False) as state:
            text = str(state["booster"])
        source = str(args.model)
    else:
        text = _synthetic_booster(args.rounds, args.seed)
        source = f"synthetic, {args.rounds} rounds"
    booster = lgb.Booster(model_str=text)
    with tempfile.TemporaryDirectory() as cache:
        began = time.perf_counter()
        compiled = compile_booster(text, Path(cache))
        compile_s = time.perf_counter() - began
        began = time.perf_counter()
        loaded = compile_booster(text, Path(cache))
        load_s = time.perf_counter() - began
    if compiled is None or loaded is None:
        print("the booster could not be compiled (see the warning above)", file=sys.stderr)
        return 1

    rng = np.random.default_rng(args.seed + 1)
    rows_out: list[dict[str, Any]] = []
    for rows in (int(r) for r in args.rows.split(",")):
        x = rng.standard_normal((rows, booster.num_feature())).astype(np.float32)  # the stage's features are float32
        lgb_p50, lgb_p99 = _times(lambda a: booster.predict(a, num_threads=1), x, args.repeat)
        ours_p50, ours_p99 = _times(loaded, x, args.repeat)
        diff = float(np.abs(loaded(x) - booster.predict(x, num_threads=1)).max())
        rows_out.append({"rows": rows, "lightgbm_ms_p50": lgb_p50, "lightgbm_ms_p99": lgb_p99,
                         "compiled_ms_p50": ours_p50, "compiled_ms_p99": ours_p99, "speedup_p50": lgb_p50 / ours_p50,
                         "max_abs_diff": diff})

    trees = booster.num_trees()
    print(f"booster: {source}; {trees} trees, {booster.num_feature()} features; one thread")
    print(f"compile {compile_s:.1f} s; load from the cache {load_s * 1000:.0f} ms\n")
    print(f"{'rows':>6} {'LightGBM p50 ms':>16} {'p99':>7} {'compiled p50 ms':>16} {'p99':>7} {'speed-up':>9} "
          f"{'max |diff|':>11}")
    for r in rows_out:
        print(f"{r['rows']:>6} {r['lightgbm_ms_p50']:>16.2f} {r['lightgbm_ms_p99']:>7.2f} "
              f"{r['compiled_ms_p50']:>16.2f} {r['compiled_ms_p99']:>7.2f} {r['speedup_p50']:>8.1f}× "
              f"{r['max_abs_diff']:>11.1e}")
    write_json(args.json, {"machine": machine_facts("lightgbm", "lleaves", "llvmlite"), "source": source,
                           "trees": trees, "compile_s": compile_s, "load_s": load_s, "rows": rows_out,
                           "args": json.loads(json.dumps(vars(args), default=str))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
