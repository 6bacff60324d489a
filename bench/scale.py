#!/usr/bin/env python
"""End to end at growing sizes: MPD-shaped synthetic stores, ingested, then ``weekly_refresh`` on real Celery workers.

    .venv/bin/python bench/scale.py [--sizes 25000 50000 100000 200000] [--workers 2] [--param KEY=VALUE ...]
                                    [--picks-compare 25000] [--sample-users 400] [--json var/bench/scale.json]

For each size N this starts a fresh embedded SecantusDB and Redis under ``var/bench/scale/N/``, writes N demo
playlists (``make_demo_data``, same seed: the data-shape table compares them with the real sample), runs
``manage.py ingest_mpd`` and then ``manage.py run_job weekly_refresh`` with ``--workers`` Celery workers, exactly
the commands a deployment runs. It records per stage the seconds (ingest from the command, the rest from the run
document), the peak RSS of every process (ingest, each worker, the store, the broker; sampled every 0.25 s), the
store's size on disk and the model version's size on disk, then fits each stage's growth exponent b in
time ∝ N^b (least squares on log-log, over every size and over 50k–200k).

At ``--picks-compare`` size it also measures, in one process on the same users, the per-user picks path (one user
at a time, as the API computes picks on the fly and as the precompute did before it was batched) against the
batched shard path, and then the ``precompute_picks`` job with one worker against two (one math thread each).

The training parameters default to a short schedule (``DEFAULT_PARAMS``): the growth exponent of a stage does not
depend on the number of epochs, and the full schedule's absolute time is the short one's times the epoch ratio
(``docs/SCALING.md``). Everything goes to ``--json``; the tables are printed as the run goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))  # before bench/: bench/pairing.py must not hide the pairing package

PYTHON = sys.executable
CELERY = str(Path(sys.executable).parent / "celery")
DEFAULT_SIZES = [25_000, 50_000, 100_000, 200_000]
DEFAULT_PARAMS = ["ranker.bpr.epochs=10", "ranker.bpr.eval_every=5", "ranker.als.iterations=5", "force=true"]
STAGES = ["ingest", "train", "promote", "buddies", "picks", "metrics"]
SEED = 7


def say(line: str) -> None:
    print(line, flush=True)


def du(path: Path) -> int:
    """Bytes on disk under ``path`` (allocated blocks, as ``du`` counts)."""
    if not path.exists():
        return 0
    total = 0
    for p in [path, *path.rglob("*")]:
        with contextlib.suppress(OSError):
            total += p.lstat().st_blocks * 512
    return total


class RssSampler(threading.Thread):
    """Peak resident memory per named process (with its children), sampled until stopped."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.watch: dict[str, psutil.Process] = {}
        self.peak: dict[str, int] = {}
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def add(self, name: str, pid: int) -> None:
        with self.lock:
            self.watch[name] = psutil.Process(pid)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            with self.lock:
                items = list(self.watch.items())
            for name, proc in items:
                try:
                    rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                except psutil.Error:
                    continue
                self.peak[name] = max(self.peak.get(name, 0), rss)


class World:
    """One size's servers, folders and environment."""

    def __init__(self, root: Path, *, size: int, reuse: bool = False) -> None:
        from recsys_site.embedded import free_port, mongo_server, redis_server

        self.root = root
        self.size = size
        if root.exists() and not reuse:
            shutil.rmtree(root / "mongo", ignore_errors=True)
            shutil.rmtree(root / "models", ignore_errors=True)
            shutil.rmtree(root / "run", ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        self.mongo = mongo_server(root, free_port())
        self.redis = redis_server(root, free_port())
        self.workers: list[subprocess.Popen] = []

    def start(self) -> None:
        mongo_uri = self.mongo.start()
        broker = self.redis.start()
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "recsys_site.settings.local", "MONGO_URI": mongo_uri,
                    "MONGO_DB": "buddies", "CELERY_BROKER_URL": broker, "MODEL_DIR": str(self.root / "models"),
                    "VAR_DIR": str(self.root), "PICKS_CACHE_URL": "", "DEBUG": "false", "PYTHONUNBUFFERED": "1"}

    def manage(self, *args: str, sampler: RssSampler | None = None, name: str | None = None,
               env: dict[str, str] | None = None) -> tuple[float, str]:
        began = time.perf_counter()
        proc = subprocess.Popen([PYTHON, "manage.py", *args], cwd=REPO, env={**self.env, **(env or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if sampler is not None and name:
            sampler.add(name, proc.pid)
        out, _ = proc.communicate()
        seconds = time.perf_counter() - began
        with open(self.root / "commands.log", "a") as log:  # every command's own output, phases and bars included
            log.write(f"\n$ manage.py {' '.join(args)[:200]}  ({seconds:.1f} s, exit {proc.returncode})\n{out}")
        if proc.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} exited {proc.returncode}:\n{out[-4000:]}")
        return seconds, out

    def start_workers(self, n: int, sampler: RssSampler | None, *, math_threads: int | None = None) -> None:
        env = dict(self.env)
        if math_threads:
            env.update({k: str(math_threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
            env["RANKER_THREADS"] = str(math_threads)
        for i in range(n):
            log = open(self.root / f"worker-{len(self.workers)}.log", "a")  # noqa: SIM115 (closed with the process)
            proc = subprocess.Popen([CELERY, "-A", "celery_app", "worker", "--pool", "solo", "--queues", "default,gpu",
                                     "--loglevel", "WARNING", "--hostname", f"scale{self.size}-{i}-{os.getpid()}@%h"],
                                    cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            self.workers.append(proc)
            if sampler is not None:
                sampler.add(f"worker {i + 1}", proc.pid)

    def stop_workers(self) -> None:
        for proc in self.workers:
            proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.workers = []

    def db(self):
        from pymongo import MongoClient

        return MongoClient(self.env["MONGO_URI"])[self.env["MONGO_DB"]]

    def last_run(self, job: str) -> dict[str, Any]:
        return self.db()["job_runs"].find_one({"job": job}, sort=[("queued_at", -1)])

    def stop(self) -> None:
        self.stop_workers()
        self.redis.stop()
        self.mongo.stop()


def demo_slices(root: Path, size: int) -> Path:
    """N demo playlists, written once per (N, seed) and reused by later runs."""
    from ingestion.demo import write_demo_slices

    out = root / f"demo-{size}-s{SEED}"
    marker = out / ".complete"
    if not marker.exists():
        shutil.rmtree(out, ignore_errors=True)
        began = time.perf_counter()
        write_demo_slices(out, playlists=size, seed=SEED, show_progress=True)
        marker.write_text(json.dumps({"playlists": size, "seed": SEED}))
        say(f"  demo data: {size:,} playlists written in {time.perf_counter() - began:.0f} s")
    return out


COMPARE = r"""
import json, time, numpy as np
from ranker.training.selectors import live_model
from ranker.picks.serve import recommend_tracks, recommend_playlists
from ranker.picks.precompute import picks_compute
model = live_model()
rng = np.random.default_rng(0)
rows = np.sort(rng.choice(len(model.user_ids), size=min(SAMPLE, len(model.user_ids)), replace=False))
users = model.user_ids[rows].tolist()
picks_compute(model=model, rows=rows[:8])  # warm both paths (indexes, FAISS) before timing
recommend_playlists(user=users[0], k=10, model=model)
t = time.perf_counter()
for u in users:
    recommend_tracks(user=u, k=50, model=model)
    recommend_playlists(user=u, k=10, model=model)
per_user = time.perf_counter() - t
t = time.perf_counter()
docs, _ = picks_compute(model=model, rows=rows)
batched = time.perf_counter() - t
print("RESULT " + json.dumps({"users": len(users), "per_user_ms": 1000 * per_user / len(users),
                              "batched_ms": 1000 * batched / len(users)}))
"""


RECALL = r"""
import json, time, numpy as np
from ranker.training.selectors import live_model
from ranker.recommenders.candidates import CandidateScorer
model = live_model()
rng = np.random.default_rng(1)
rows = np.sort(rng.choice(len(model.user_ids), size=min(SAMPLE, len(model.user_ids)), replace=False))
t = time.perf_counter()
scorer = CandidateScorer(model.recommender)
built = time.perf_counter() - t
hits = []
for start in range(0, len(rows), 16):
    part = rows[start:start + 16]
    liked = model.user_items[part]
    dense, _ = model.recommender.recommend(part, liked, 50)
    got, _ = scorer.recommend(part, liked, 50)
    hits += [len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (b >= 0).sum()) for a, b in zip(got, dense)]
print("RESULT " + json.dumps({"users": len(rows), "tracks": len(model.item_ids), "recall_at_50": float(np.mean(hits)),
                              "index_seconds": built}))
"""


def candidate_recall(world: World, sample: int) -> dict[str, Any]:
    """How much of the dense blend's top 50 the candidate path finds, on sampled users."""
    _, out = world.manage("shell", "-c", RECALL.replace("SAMPLE", str(sample)))
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    say(f"  candidate recall@50 against dense scoring: {result['recall_at_50']:.3f} ({result['users']} users, "
        f"{result['tracks']:,} tracks; indexes built in {result['index_seconds']:.1f} s)")
    return result


def picks_compare(world: World, sample: int, sampler: RssSampler) -> dict[str, Any]:
    """Per-user against batched picks in one process, then the picks job on one worker against two."""
    _, out = world.manage("shell", "-c", COMPARE.replace("SAMPLE", str(sample)),
                          env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    result["speedup"] = result["per_user_ms"] / result["batched_ms"]
    say(f"  picks per user: one at a time {result['per_user_ms']:.2f} ms, batched {result['batched_ms']:.2f} ms "
        f"→ {result['speedup']:.1f}× ({result['users']} users, one math thread)")
    for workers in (1, 2):
        world.start_workers(workers, None, math_threads=1)
        world.manage("run_job", "precompute_picks")
        world.stop_workers()
        step = world.last_run("precompute_picks")["steps"][0]
        result[f"job_{workers}_worker_s"] = step["duration_s"]
        result[f"job_{workers}_worker_owners"] = step["metrics"].get("workers")
        say(f"  precompute_picks with {workers} worker(s): {step['duration_s']:.1f} s "
            f"({step['metrics'].get('shards')} shards, {step['metrics'].get('workers')} workers took a share)")
    result["workers_speedup"] = result["job_1_worker_s"] / result["job_2_worker_s"]
    say(f"  two workers against one: {result['workers_speedup']:.2f}×")
    return result


def run_size(size: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    say(f"\n== {size:,} playlists ==")
    demo = demo_slices(root, size)
    reuse = args.reuse and (root / str(size) / "mongo").exists()
    world = World(root / str(size), size=size, reuse=reuse)
    sampler = RssSampler()
    sampler.start()
    world.start()
    sampler.add("store (SecantusDB)", world.mongo.process.pid if world.mongo.process else 0)
    sampler.add("broker (Redis)", world.redis.process.pid if world.redis.process else 0)
    result: dict[str, Any] = {"playlists": size, "seconds": {}}
    try:
        if reuse:
            say("  ingest: skipped (--reuse: the store kept by an earlier --keep run)")
            world.manage("shell", "-c", "from recsys_site.jobs import run_cancel, run_list\n"
                         "for r in run_list(limit=20):\n"
                         "    r['status'] in ('queued', 'running') and run_cancel(run_id=r['_id'])")
            result["seconds"]["ingest"] = None
        else:
            seconds, out = world.manage("ingest_mpd", str(demo), sampler=sampler, name="ingest")
            result["seconds"]["ingest"] = round(seconds, 2)
            say(f"  ingest: {seconds:.1f} s ({size / seconds:,.0f} playlists/s)")
        world.start_workers(args.workers, sampler)
        params = [p for kv in args.param for p in ("--param", kv)]
        world.manage("run_job", "weekly_refresh", *params)
        world.stop_workers()
        run = world.last_run("weekly_refresh")
        if run["status"] != "succeeded":
            raise RuntimeError(f"weekly_refresh {run['status']}: {run.get('error')}")
        for step in run["steps"]:
            result["seconds"][step["name"]] = step.get("duration_s")
        result["weekly_refresh_s"] = run.get("duration_s")
        result["model_version"] = run.get("model_version")
        result["picks"] = run["metrics"].get("picks")
        result["buddies"] = run["metrics"].get("buddies")
        result["data"] = (run["metrics"].get("train") or {})
        counts = world.db()["model_live"].find_one({}) or {}
        version_dir = world.root / "models" / "ranker" / str(counts.get("version") or result["model_version"])
        result["model_bytes"] = du(version_dir)
        if size == args.picks_compare:
            result["picks_compare"] = picks_compare(world, args.sample_users, sampler)
        if args.recall_users:
            result["candidate_recall"] = candidate_recall(world, args.recall_users)
    finally:
        sampler.stopped.set()
        world.stop()
    result["store_bytes"] = du(world.root / "mongo")
    result["peak_rss"] = dict(sampler.peak)
    say("  " + ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items() if v is not None))
    say(f"  store on disk {result['store_bytes'] / 2**20:,.0f} MiB, "
        f"model version {result['model_bytes'] / 2**20:,.1f} MiB")
    say("  peak RSS: " + ", ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in result["peak_rss"].items()))
    if not args.keep:
        shutil.rmtree(world.root / "mongo", ignore_errors=True)
        shutil.rmtree(world.root / "models", ignore_errors=True)
    return result


def exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(time) on log(size)."""
    points = [(n, t) for n, t in points if t and t > 0]
    if len(points) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else None


def report(results: list[dict[str, Any]]) -> dict[str, Any]:
    sizes = [r["playlists"] for r in results]
    say("\n| stage | " + " | ".join(f"{n:,}" for n in sizes) + " | b (all) | b (50k–200k) |")
    say("|---|" + "---:|" * (len(sizes) + 2))
    exponents = {}
    for stage in [*STAGES, "total"]:
        times = [sum(v for v in r["seconds"].values() if v) if stage == "total" else r["seconds"].get(stage)
                 for r in results]
        b_all = exponent(list(zip(sizes, times, strict=True)))
        b_big = exponent([(n, t) for n, t in zip(sizes, times, strict=True) if n >= 50_000])
        exponents[stage] = {"all": b_all, "50k-200k": b_big}
        fmt = lambda b: "–" if b is None else f"{b:.2f}"  # noqa: E731
        say(f"| {stage} | " + " | ".join("–" if t is None else f"{t:,.1f} s" for t in times)
            + f" | {fmt(b_all)} | {fmt(b_big)} |")
    say("\n| size | store on disk | model version | peak RSS (largest process) |")
    say("|---:|---:|---:|---|")
    for r in results:
        name, peak = max(r["peak_rss"].items(), key=lambda kv: kv[1]) if r["peak_rss"] else ("–", 0)
        say(f"| {r['playlists']:,} | {r['store_bytes'] / 2**20:,.0f} MiB | {r['model_bytes'] / 2**20:,.1f} MiB | "
            f"{peak / 2**20:,.0f} MiB ({name}) |")
    return exponents


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--workers", type=int, default=2, help="Celery workers for weekly_refresh (solo pool each)")
    parser.add_argument("--param", action="append", default=None, metavar="KEY=VALUE",
                        help=f"weekly_refresh parameters (default: {' '.join(DEFAULT_PARAMS)})")
    parser.add_argument("--picks-compare", type=int, default=25_000, help="size at which picks paths are compared")
    parser.add_argument("--sample-users", type=int, default=400, help="users timed one at a time vs batched")
    parser.add_argument("--recall-users", type=int, default=200,
                        help="users on which candidate picks are checked against dense scoring (0: skip)")
    parser.add_argument("--root", type=Path, default=REPO / "var" / "bench" / "scale")
    parser.add_argument("--json", type=Path, default=REPO / "var" / "bench" / "scale.json")
    parser.add_argument("--keep", action="store_true", help="keep each size's store and models")
    parser.add_argument("--reuse", action="store_true", help="reuse a size's kept store (skips its ingest)")
    parser.add_argument("--no-shape", action="store_true", help="skip the data-shape table")
    synthetic = parser.add_argument_group("synthetic stages (no store: train, buddies, picks in one process)")
    synthetic.add_argument("--synthetic-users", type=int, nargs="+", metavar="N",
                           help="run bench/synthetic_stages.py at these sizes instead of the store-backed run")
    synthetic.add_argument("--device", default="cuda", help="cpu or cuda (default cuda)")
    synthetic.add_argument("--epochs", type=int, default=5, help="BPR epochs")
    synthetic.add_argument("--cpu-train", action="store_true", help="also train on the CPU, for the ratio")
    synthetic.add_argument("--cpu-sample", type=int, default=500, help="users picked densely on the CPU for the ratio")
    args = parser.parse_args()
    if args.synthetic_users:
        return synthetic_main(args)
    args.param = args.param if args.param is not None else DEFAULT_PARAMS
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsys_site.settings.local")
    import django

    django.setup()
    args.root.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}
    out: dict[str, Any] = {"sizes": args.sizes, "workers": args.workers, "params": args.param, "machine": machine,
                           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "results": []}
    if not args.no_shape:
        import data_shape

        real = data_shape.DEFAULT_REAL
        smallest = demo_slices(args.root, min(args.sizes))
        columns = {f"demo {min(args.sizes):,}": data_shape.shape([smallest])}
        if real.exists():
            columns = {"real sample": data_shape.shape([real]), **columns}
        say(data_shape.table(columns))
        out["shape"] = columns
    for size in sorted(args.sizes):
        out["results"].append(run_size(size, args, args.root))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str))
    out["exponents"] = report(out["results"])
    args.json.write_text(json.dumps(out, indent=2, default=str))
    say(f"\nwritten {args.json}")
    return 0


def synthetic_main(args: argparse.Namespace) -> int:
    """``--synthetic-users``: needs only numpy, scipy, torch and psutil (a bare GPU box has them), not Django."""
    import synthetic_stages

    out: dict[str, Any] = {"mode": "synthetic", "device": args.device, "epochs": args.epochs,
                           "machine": {"cpus": os.cpu_count(),
                                       "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
                           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "results": []}
    for users in sorted(args.synthetic_users):
        out["results"].append(synthetic_stages.run(users, device=args.device, epochs=args.epochs,
                                                   cpu_sample=args.cpu_sample, cpu_train=args.cpu_train))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str))
    sizes = [r["users"] for r in out["results"]]
    say(f"\n| stage ({args.device}) | " + " | ".join(f"{n:,} users" for n in sizes) + " | b |")
    say("|---|" + "---:|" * (len(sizes) + 1))
    out["exponents"] = {}
    for stage in ("data", "train", "buddies", "picks"):
        times = [r["stages"][stage]["seconds"] for r in out["results"]]
        b = exponent(list(zip(sizes, times, strict=True)))
        out["exponents"][stage] = b
        say(f"| {stage} | " + " | ".join(f"{t:,.1f} s" for t in times) + f" | {'–' if b is None else f'{b:.2f}'} |")
    args.json.write_text(json.dumps(out, indent=2, default=str))
    say(f"\nwritten {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
