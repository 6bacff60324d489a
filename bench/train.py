#!/usr/bin/env python
"""Our recommenders next to implicit's BPR and ALS on the evaluation harness's split of the real MPD sample, in one run.

    .venv/bin/python bench/train.py [--data PATH] [--test-size 1000] [--seed 0] [--factors 64] [--threads 2]
                                    [--epochs 100] [--implicit-bpr-iters 300] [--als-factors 128]
                                    [--device cpu|cuda] [--methods NAME ...] [--json PATH] [--profile]
                                    [--profile-only] [--speed-rounds 3] [--speed-kernels fused torch]
                                    [--speed-only] [--no-speed]

Every contender trains on the same ``ranker.evaluation.split`` (``--test-size`` test playlists, ``--seed``) and is
scored by the same ``recommend_cases`` + ``score_cases`` (title-only cases get the harness's title fallback):

1. ``popularity``: the harness's baseline (no model);
2. ``itemknn``: ``ItemKNN()`` with its defaults;
3. ``bpr (ours)``: ``BPR(factors=F, epochs=--epochs, learning_rate=0.1, regularization=0.002)``; training seconds
   and samples/s from its ``metrics_`` (early stopping may end it before ``--epochs``; its clock includes the
   validation every 5 epochs). On the CPU that is the fused kernel (ADR 0009); ``--methods bpr-torch`` adds the
   same model on the torch-ops kernel (``bpr (ours, torch ops)``), which is not in the default set;
4. ``implicit bpr``: ``implicit.cpu.bpr.BayesianPersonalizedRanking(factors=F, iterations=--implicit-bpr-iters)``
   (its default learning rate and regularisation); samples/s = iterations × nnz / training seconds;
5. ``implicit als``: ``implicit.cpu.als.AlternatingLeastSquares(factors=--als-factors, regularization=0.01,
   alpha=20, iterations=15)`` on the binary matrix (plain confidence: 20 for a positive, 1 elsewhere);
6. ``served (blend)``: ``ranker.training.served.make_served()`` as it stands, i.e. what Buddies serves.

implicit's models are wrapped in a ``Recommender`` (scores = user factors · item factors, bias column included)
so the harness scores them like ours. Threads: ``--threads`` for torch (``set_num_threads``), for BLAS/OpenMP
(``threadpool_limits``) and for implicit (``num_threads``); while implicit trains, BLAS runs single-threaded
inside its ``num_threads`` workers, as implicit requires. ``--device cuda`` trains our BPR (also inside the
served blend) on the GPU; those figures are marked GPU. The load average is recorded around every contender,
since another process may share the cores.

Speed (the acceptance check of issue 13: our BPR's samples/s ≥ implicit's BPR with the same threads): at 1 thread
and at ``--threads``, ``--speed-rounds`` rounds, each timing 3 epochs (no validation) of our BPR on each of
``--speed-kernels`` and then 3 iterations of implicit's BPR, back to back so they share the load; per thread count
the median samples/s of each and the median of the per-round ratios, with the load average. It runs by default;
``--speed-only`` runs only it, ``--no-speed`` skips it.

``--profile`` also trains our BPR's torch-ops kernel for 3 epochs (no validation) under ``torch.profiler`` and
under cProfile and prints where the time goes (gather, ``index_add_``, sampling, element-wise math): the evidence
of ADR 0009 for why the CPU default is the fused kernel. ``--profile-only`` skips the contenders. The tables go to
stdout, the same numbers as JSON to ``var/bench/train.json`` (or ``--json PATH``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common  # bench/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mpd-real"
DEFAULT_JSON = REPO / "var" / "bench" / "train.json"
PROFILE_EPOCHS = 3
SPEED_EPOCHS = 3

POP, KNN, BPR_OURS, BPR_TORCH, IMP_BPR, IMP_ALS, SERVED = (
    "popularity", "itemknn", "bpr (ours)", "bpr (ours, torch ops)", "implicit bpr", "implicit als", "served (blend)",
)
METHODS = {"popularity": POP, "itemknn": KNN, "bpr": BPR_OURS, "bpr-torch": BPR_TORCH, "implicit-bpr": IMP_BPR,
           "implicit-als": IMP_ALS, "served": SERVED}
DEFAULT_METHODS = [m for m in METHODS if m != "bpr-torch"]

# Which torch ops belong to which part of a BPR epoch (self time; anything else is "other").
OP_GROUPS = {
    "gather (index_select)": ("aten::index_select",),
    "scatter (index_add_, which runs as scatter_add_ on CPU)": ("aten::index_add_", "aten::scatter_add_",
                                                                "aten::expand"),
    "sampling (randperm, randint, searchsorted, indexing)": (
        "aten::randperm", "aten::randint", "aten::random_", "aten::searchsorted", "aten::clamp_", "aten::index",
        "aten::ne", "aten::sort",
    ),
    "element-wise math (mul, sub, sigmoid, sum, ...)": (
        "aten::mul", "aten::mul_", "aten::sub", "aten::sub_", "aten::neg_", "aten::sigmoid", "aten::softplus",
        "aten::sum", "aten::add_", "aten::add", "aten::copy_", "aten::fill_", "aten::_to_copy", "aten::to",
        "aten::neg", "aten::rsub", "aten::empty", "aten::empty_strided", "aten::zeros", "aten::zero_",
        "aten::select", "aten::slice", "aten::as_strided", "aten::unsqueeze", "aten::view", "aten::item",
        "aten::_local_scalar_dense",
    ),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder of mpd.slice.*.json files (default: {DEFAULT_DATA})")
    parser.add_argument("--test-size", type=int, default=1000, help="test playlists in the split (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="split and model seed (default 0)")
    parser.add_argument("--factors", type=int, default=64, help="factors of both BPRs (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="threads for torch, BLAS/OpenMP and implicit (2)")
    parser.add_argument("--epochs", type=int, default=100, help="most epochs of our BPR (default 100)")
    parser.add_argument("--implicit-bpr-iters", type=int, default=300, help="implicit BPR iterations (default 300)")
    parser.add_argument("--als-factors", type=int, default=128, help="implicit ALS factors (default 128)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where our BPR trains, also inside the served blend (default cpu)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS,
                        help=f"contenders to run (default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write JSON (default: {DEFAULT_JSON})")
    parser.add_argument("--profile", action="store_true",
                        help=f"also profile {PROFILE_EPOCHS} epochs of our BPR (torch.profiler and cProfile); "
                        "stats go next to the JSON as train.prof")
    parser.add_argument("--profile-only", action="store_true", help="only the --profile part, no contenders")
    parser.add_argument("--speed-rounds", type=int, default=3,
                        help=f"rounds of {SPEED_EPOCHS} epochs per BPR and thread count in the speed table (3)")
    parser.add_argument("--speed-kernels", nargs="+", choices=["fused", "torch"], default=["fused", "torch"],
                        help="our BPR's kernels in the speed table (default: fused torch)")
    parser.add_argument("--speed-only", action="store_true", help="only the speed table, no contenders")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args()
    if min(args.test_size, args.factors, args.threads, args.epochs, args.implicit_bpr_iters, args.als_factors,
           args.speed_rounds) < 1:
        parser.error("sizes, threads, epochs, iterations and rounds must be at least 1")
    if args.profile_only:
        args.profile, args.methods = True, []
    if args.speed_only:
        args.methods, args.no_speed = [], False
    if args.device == "cuda" or (args.profile_only and not args.speed_only):
        args.no_speed = True  # the speed table compares CPU kernels
    return args


def setup_django() -> None:
    _common.setup_django("recsys_site.settings.test")


# --- data --------------------------------------------------------------------------------------------------------
def load_playlists(data_path: Path) -> tuple[Any, dict[str, Any]]:
    """Read + decode + validate every slice (no database) into ``Playlists``; rejected playlists are counted."""
    from ingestion.mpd import Problem, decode_slice, iter_sources, validate_playlist
    from ranker.training.data import Playlists

    sources = list(iter_sources([data_path]))
    problems = [s for s in sources if isinstance(s, Problem)]
    if problems:
        sys.exit(f"bench/train.py: {problems[0]}")
    counts = {"files": len(sources), "bytes": sum(s.path.stat().st_size for s in sources), "rejected": 0}

    def docs() -> Any:
        for source in sources:
            for index, raw in enumerate(decode_slice(source.read(), name=source.name)):
                doc = validate_playlist(raw, file=source.name, index=index)
                if isinstance(doc, Problem):
                    counts["rejected"] += 1
                    continue
                yield doc

    started = time.perf_counter()
    playlists = Playlists.from_docs(docs())
    counts["load_seconds"] = round(time.perf_counter() - started, 2)
    return playlists, counts


# --- implicit behind our contract ---------------------------------------------------------------------------------
def implicit_adapter() -> type:
    """``Recommender`` subclasses around implicit's CPU models (defined late: the base imports Django's app)."""
    import numpy as np
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    from ranker.recommenders.base import Recommender, check_fitted

    class ImplicitMF(Recommender):
        """An implicit matrix factorisation model; ``score`` needs the trained user indices (no fold-in)."""

        name = "implicit_mf"

        def __init__(self, make: Any, params: dict[str, Any]) -> None:
            self.make, self.params = make, params
            self.model: Any = None
            self.metrics_: dict[str, Any] = {}

        @property
        def n_items(self) -> int:
            check_fitted(self, "model")
            return self.model.item_factors.shape[0]

        def fit(self, interactions: sp.csr_matrix, *, negatives: sp.csr_matrix | None = None,
                show_progress: bool = False, callback: Any = None) -> ImplicitMF:
            # implicit parallelises over users itself: BLAS inside its workers stays single-threaded (it warns
            # otherwise), so the total stays at num_threads.
            with threadpool_limits(1, user_api="blas"):
                self.model = self.make(**self.params)
                train = sp.csr_matrix(interactions * 1.0, dtype=np.float32)
                started = time.perf_counter()
                self.model.fit(train, show_progress=show_progress)
                seconds = time.perf_counter() - started
            self.metrics_ = {"seconds": round(seconds, 3), "nnz": int(train.nnz)}
            return self

        def score(self, userids: np.ndarray | None, user_items: sp.csr_matrix) -> np.ndarray:
            check_fitted(self, "model")
            if userids is None:
                raise NotImplementedError("implicit adapters score trained users only (no fold-in)")
            users = np.asarray(self.model.user_factors)[userids]
            return (users @ np.asarray(self.model.item_factors).T).astype(np.float32)

        def get_params(self) -> dict[str, Any]:
            return dict(self.params)

        def get_state(self) -> dict[str, np.ndarray]:
            return {"user_factors": self.model.user_factors, "item_factors": self.model.item_factors}

        def set_state(self, state: dict[str, np.ndarray]) -> None:
            raise NotImplementedError("benchmark adapter: not persisted")

    return ImplicitMF


# --- contenders --------------------------------------------------------------------------------------------------
def make_factory(method: str, args: argparse.Namespace) -> Any:
    from ranker.recommenders import BPR, ItemKNN
    from ranker.training.served import make_served

    if method == POP:
        return None
    if method == KNN:
        return ItemKNN
    if method in (BPR_OURS, BPR_TORCH):
        kernel = "torch" if method == BPR_TORCH else "auto"
        return lambda: BPR(factors=args.factors, threads=args.threads, epochs=args.epochs, learning_rate=0.1,
                           regularization=0.002, device=args.device, kernel=kernel, random_state=args.seed)
    if method == SERVED:
        return lambda: make_served(threads=args.threads, device=args.device, random_state=args.seed)
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    adapter = implicit_adapter()
    if method == IMP_BPR:
        params = {"factors": args.factors, "iterations": args.implicit_bpr_iters, "num_threads": args.threads,
                  "random_state": args.seed}
        return lambda: adapter(BayesianPersonalizedRanking, params)
    params = {"factors": args.als_factors, "regularization": 0.01, "alpha": 20.0, "iterations": 15,
              "num_threads": args.threads, "random_state": args.seed}
    return lambda: adapter(AlternatingLeastSquares, params)


def run_method(method: str, split: Any, args: argparse.Namespace) -> dict[str, Any]:
    from ranker.evaluation.harness import evaluate_method

    progress = not args.no_progress
    print(f"--- {method}", file=sys.stderr)
    load_before = os.getloadavg()[0]
    result, model = evaluate_method(make_factory(method, args), split, show_progress=progress)
    train_s = result.train_seconds
    row: dict[str, Any] = {"method": method, "overall": result.overall, "per_category": result.per_category,
                           "train_seconds": round(train_s, 3), "recommend_seconds": round(result.recommend_seconds, 3),
                           "samples_per_s": None, "epochs": None, "gpu": False,
                           "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    metrics = dict(getattr(model, "metrics_", {}) or {})
    if method in (BPR_OURS, BPR_TORCH, SERVED):
        bpr = metrics.get("bpr", {}) if method == SERVED else metrics
        row.update(samples_per_s=bpr.get("samples_per_s"), epochs=bpr.get("epochs"),
                   gpu=str(bpr.get("device", "cpu")).startswith("cuda"), detail=metrics)
        if method != SERVED:  # the model's own clock: training only, without the setup of the factors
            row["train_seconds"] = bpr.get("seconds", row["train_seconds"])
        else:  # what ranker.training.served held when this ran: it changes as the blend is tuned
            from ranker.training.served import served_params

            row["components"] = model.describe() if hasattr(model, "describe") else type(model).__name__
            row["served_params"] = served_params()
    elif method == IMP_BPR:
        seconds = metrics["seconds"]
        row.update(train_seconds=seconds, epochs=args.implicit_bpr_iters, detail=metrics,
                   samples_per_s=round(args.implicit_bpr_iters * metrics["nnz"] / seconds, 1))
    elif method == IMP_ALS:
        row.update(train_seconds=metrics["seconds"], epochs=15, detail=metrics)
    print(f"    train {row['train_seconds']:.1f} s, recommend {row['recommend_seconds']:.1f} s, "
          f"R-precision {result.overall['r_precision']:.4f}, load {row['load_1min']}", file=sys.stderr)
    return row


# --- profile -----------------------------------------------------------------------------------------------------
def profile_bpr(split: Any, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """3 epochs of our BPR's torch-ops kernel under torch.profiler (op self time by group), then 3 more under
    cProfile (the fused kernel is one C call: nothing for either to see inside)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from ranker.recommenders import BPR

    def model() -> Any:
        return BPR(factors=args.factors, threads=args.threads, epochs=PROFILE_EPOCHS, learning_rate=0.1,
                   regularization=0.002, device=args.device, random_state=args.seed, validation_users=0,
                   kernel="torch")

    print(f"--- profile: {PROFILE_EPOCHS} epochs of our BPR (torch ops)", file=sys.stderr)
    plain = model().fit(split.train)  # unprofiled reference for the same 3 epochs
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=activities) as prof:
        profiled = model().fit(split.train)
    events = prof.key_averages()
    gpu = args.device == "cuda"

    def self_us(e: Any) -> float:
        return float(getattr(e, "self_device_time_total", 0.0) if gpu else e.self_cpu_time_total)

    total = sum(self_us(e) for e in events) or 1.0
    groups = {name: 0.0 for name in OP_GROUPS} | {"other": 0.0}
    for e in events:
        group = next((name for name, ops in OP_GROUPS.items() if e.key in ops), "other")
        groups[group] += self_us(e)
    samples = profiled.metrics_["samples"]
    ops = sorted(events, key=self_us, reverse=True)[:15]
    op_rows = [{"op": e.key, "calls": e.count, "self_ms": round(self_us(e) / 1e3, 1),
                "share": round(self_us(e) / total, 4), "ns_per_sample": round(self_us(e) * 1e3 / samples, 1)}
               for e in ops]
    group_rows = [{"group": name, "self_ms": round(us / 1e3, 1), "share": round(us / total, 4),
                   "ns_per_sample": round(us * 1e3 / samples, 1)}
                  for name, us in sorted(groups.items(), key=lambda kv: -kv[1])]

    profiler = cProfile.Profile()
    profiler.runcall(lambda: model().fit(split.train))
    profiler.dump_stats(out)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(15)
    torch.set_num_threads(args.threads)
    return {"epochs": PROFILE_EPOCHS, "samples": samples, "device": args.device,
            "time_kind": "self device time" if gpu else "self CPU time",
            "samples_per_s_unprofiled": plain.metrics_["samples_per_s"],
            "samples_per_s_profiled": profiled.metrics_["samples_per_s"],
            "groups": group_rows, "ops": op_rows, "cprofile": text.getvalue(), "prof_file": str(out)}


def speed(split: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Our BPR (each of ``--speed-kernels``) against implicit's BPR, samples/s at 1 and ``--threads`` threads."""
    import statistics

    import torch
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits

    from ranker.recommenders import BPR

    adapter = implicit_adapter()
    out = []
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        runs: dict[str, list[float]] = {k: [] for k in [*args.speed_kernels, "implicit"]}
        loads = [os.getloadavg()[0]]
        for rnd in range(args.speed_rounds):
            print(f"--- speed: {threads} thread(s), round {rnd + 1}/{args.speed_rounds}", file=sys.stderr)
            with threadpool_limits(threads):
                for kernel in args.speed_kernels:
                    ours = BPR(factors=args.factors, threads=threads, epochs=SPEED_EPOCHS, learning_rate=0.1,
                               regularization=0.002, random_state=args.seed + rnd, validation_users=0,
                               kernel=kernel).fit(split.train)
                    if ours.metrics_["kernel"] != kernel:
                        sys.exit(f"bench/train.py: asked for the {kernel} kernel, got {ours.metrics_['kernel']}")
                    runs[kernel].append(ours.metrics_["samples_per_s"])
            theirs = adapter(BayesianPersonalizedRanking, {"factors": args.factors, "iterations": SPEED_EPOCHS,
                                                           "num_threads": threads, "random_state": args.seed + rnd})
            theirs.fit(split.train)
            runs["implicit"].append(SPEED_EPOCHS * theirs.metrics_["nnz"] / theirs.metrics_["seconds"])
            loads.append(os.getloadavg()[0])
        row: dict[str, Any] = {"threads": threads, "rounds": args.speed_rounds, "epochs": SPEED_EPOCHS,
                               "load_1min": [round(min(loads), 2), round(max(loads), 2)],
                               "implicit": round(statistics.median(runs["implicit"]), 1),
                               "samples_per_s": {k: [round(v, 1) for v in vs] for k, vs in runs.items()}}
        for kernel in args.speed_kernels:
            row[kernel] = round(statistics.median(runs[kernel]), 1)
            # Paired: each round's ours / implicit, then the median, so a load spike hits both sides of a ratio.
            row[f"{kernel}_ratio"] = round(statistics.median(
                a / b for a, b in zip(runs[kernel], runs["implicit"], strict=True)), 3)
        out.append(row)
    torch.set_num_threads(args.threads)
    return out


# --- report ------------------------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]]) -> str:
    head = ("method", "R-precision", "R-prec (artist)", "NDCG", "ndcg_g", "clicks", "train s", "samples/s")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "--:|" * (len(head) - 1)]
    for r in rows:
        o = r["overall"]
        gpu = " GPU" if r["gpu"] else ""
        sps = f"{r['samples_per_s']:,.0f}{gpu}" if r["samples_per_s"] else "—"
        if r["method"] == SERVED and r["samples_per_s"]:
            sps += " (its BPR)"
        train = f"{r['train_seconds']:.1f}{gpu}" if r["method"] != POP else "—"
        cells = (r["method"] + (" [GPU]" if r["gpu"] else ""), f"{o['r_precision']:.4f}",
                 f"{o['r_precision_artist']:.4f}", f"{o['ndcg']:.4f}", f"{o['ndcg_g']:.4f}", f"{o['clicks']:.2f}",
                 train, sps)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def category_table(rows: list[dict[str, Any]]) -> str:
    from ranker.evaluation.harness import CATEGORY_NAMES

    lines = ["| category | " + " | ".join(r["method"] for r in rows) + " |", "|---|" + "--:|" * len(rows)]
    for cat in CATEGORY_NAMES:
        if not any(cat in r["per_category"] for r in rows):
            continue
        cells = [f"{r['per_category'][cat]['r_precision']:.3f} / {r['per_category'][cat]['ndcg']:.3f}"
                 if cat in r["per_category"] else "—" for r in rows]
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profile_text(p: dict[str, Any], implicit_sps: float | None) -> str:
    lines = [f"profile: {p['epochs']} epochs of our BPR on {p['device']}, {p['samples']:,} samples; "
             f"{p['samples_per_s_unprofiled']:,.0f} samples/s unprofiled, {p['samples_per_s_profiled']:,.0f} under "
             f"torch.profiler ({p['time_kind']} by op group)", ""]
    lines += ["| where | ms | share | ns/sample |", "|---|--:|--:|--:|"]
    lines += [f"| {g['group']} | {g['self_ms']:,.1f} | {g['share']:.1%} | {g['ns_per_sample']:,.1f} |"
              for g in p["groups"]]
    lines.append(f"| **total** | {sum(g['self_ms'] for g in p['groups']):,.1f} | 100% | "
                 f"{sum(g['ns_per_sample'] for g in p['groups']):,.1f} |")
    if implicit_sps:
        lines.append(f"| implicit bpr, whole epoch (for scale) | | | {1e9 / implicit_sps:,.1f} |")
    lines += ["", "top ops:", "", "| op | calls | self ms | share | ns/sample |", "|---|--:|--:|--:|--:|"]
    lines += [f"| {o['op']} | {o['calls']:,} | {o['self_ms']:,.1f} | {o['share']:.1%} | {o['ns_per_sample']:,.1f} |"
              for o in p["ops"]]
    lines += ["", f"cProfile of another {p['epochs']} epochs ({p['prof_file']}), by own time:", p["cprofile"]]
    return "\n".join(lines)


def speed_text(rows: list[dict[str, Any]], kernels: list[str]) -> str:
    names = {"fused": "bpr (ours, fused)", "torch": "bpr (ours, torch ops)"}
    head = ["threads", *(f"{names[k]} | ours / implicit" for k in kernels), "implicit bpr", "load (1 min)"]
    lines = [f"BPR samples/s on the CPU, same threads (median of {rows[0]['rounds']} paired rounds of "
             f"{rows[0]['epochs']} epochs; ours / implicit = median of the per-round ratios):", "",
             "| " + " | ".join(head) + " |", "|--:|" + "--:|--:|" * len(kernels) + "--:|--:|"]
    for r in rows:
        cells = [str(r["threads"])]
        cells += [f"{r[k]:,.0f} | {r[f'{k}_ratio']:.2f}×" for k in kernels]
        cells += [f"{r['implicit']:,.0f}", f"{r['load_1min'][0]:.2f}–{r['load_1min'][1]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_facts(device: str) -> dict[str, Any]:
    import implicit
    import numpy as np
    import scipy
    import threadpoolctl
    import torch

    facts = {**_common.machine_facts(), "numpy": np.__version__, "scipy": scipy.__version__,
             "torch": torch.__version__, "implicit": implicit.__version__, "threadpoolctl": threadpoolctl.__version__}
    if device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def main() -> int:
    args = parse_args()
    data_path = args.data.expanduser().resolve()
    if not data_path.exists():
        sys.exit(f"bench/train.py: no MPD data at {data_path}\n"
                 "  the real sample lives in ../shared/data/mpd-real beside the repository; pass --data PATH")
    # Before numpy, scipy or torch load their BLAS and OpenMP runtimes, which read these once.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    setup_django()
    import torch
    from threadpoolctl import threadpool_limits

    from ranker.evaluation.harness import split as make_split

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"bench/train.py: --device cuda but torch {torch.__version__} sees no CUDA device")
    torch.set_num_threads(args.threads)
    facts = machine_facts(args.device)
    load_start = os.getloadavg()
    with threadpool_limits(args.threads):
        print(f"loading {data_path} ...", file=sys.stderr)
        playlists, data = load_playlists(data_path)
        started = time.perf_counter()
        split = make_split(playlists, test_size=args.test_size, random_state=args.seed)
        data.update(playlists=len(playlists), items=playlists.n_items, train_nnz=int(split.train.nnz),
                    test_cases=len(split.cases), split_seconds=round(time.perf_counter() - started, 2))
        rows = [run_method(METHODS[m], split, args) for m in METHODS if m in args.methods]
        speed_rows = [] if args.no_speed else speed(split, args)
        prof = None
        if args.profile:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            prof = profile_bpr(split, args, args.json.with_name("train.prof"))
    load_end = os.getloadavg()
    out = {
        "benchmark": "bench/train.py",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "data": {"path": str(data_path), **data},
        "machine": facts,
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end]},
        "settings": {"test_size": args.test_size, "seed": args.seed, "factors": args.factors, "threads": args.threads,
                     "epochs": args.epochs, "implicit_bpr_iters": args.implicit_bpr_iters,
                     "als_factors": args.als_factors, "device": args.device, "speed_rounds": args.speed_rounds,
                     "speed_kernels": args.speed_kernels},
        "results": rows,
        "speed": speed_rows,
        "profile": prof,
    }
    _common.write_json(args.json, out)

    print()
    print(f"data: {data_path} ({data['files']} files, {data['bytes'] / 1e6:.1f} MB): {data['playlists']:,} "
          f"playlists, {data['items']:,} tracks, {data['rejected']:,} rejected; split seed {args.seed}: "
          f"{data['test_cases']:,} test playlists, {data['train_nnz']:,} training positives")
    print(f"machine: {facts['cores']} cores ({facts['cpu']}), {args.threads} threads, Python {facts['python']}, "
          f"numpy {facts['numpy']}, scipy {facts['scipy']}, torch {facts['torch']}, implicit {facts['implicit']}"
          + (f", GPU {facts['gpu']}" if "gpu" in facts else ""))
    print(f"load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in load_start)} at start, "
          f"{' '.join(f'{x:.2f}' for x in load_end)} at end; per contender (1 min, before → after): "
          + ", ".join(f"{r['method']} {r['load_1min'][0]:.2f}→{r['load_1min'][1]:.2f}" for r in rows))
    device = ("our BPR on **cuda** (figures marked GPU; implicit stays on the CPU)" if args.device == "cuda"
              else "device: cpu")
    epochs = ", ".join(f"{r['method']} {r['epochs']}" for r in rows if r["epochs"])
    print(f"{device}; {args.factors} factors (ALS {args.als_factors}); epochs run: {epochs}; overall = mean over "
          "test playlists; train s = fit only; samples/s = (u, i, j) triples per training second\n")
    served = next((r for r in rows if r["method"] == SERVED), None)
    if served:
        print(f"served (blend) = {served['components']} (ranker.training.served as imported by this run)")
    if rows:
        print(table(rows))
        print("\nR-precision / NDCG per category:\n")
        print(category_table(rows))
    if speed_rows:
        print("\n" + speed_text(speed_rows, args.speed_kernels))
    print(f"\nJSON: {args.json}")
    if prof:
        implicit_sps = next((r["samples_per_s"] for r in rows if r["method"] == IMP_BPR), None)
        print("\n" + profile_text(prof, implicit_sps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
