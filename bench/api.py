#!/usr/bin/env python
"""Load benchmark of the REST API: latency and errors at a constant arrival rate, against gunicorn with 2 workers
started as the product starts them (``recsys_site.stack.gunicorn_command``).

    .venv/bin/python bench/api.py [--quick] [--duration S] [--rates 100,300,1000] [--scenarios ...] [--json PATH]

Scenarios (each at every rate in ``--rates``; continuation also at 50 requests/s):

1. ``picks cached``: ``GET /api/v1/users/{id}/playlists/recommended?k=10`` for users whose picks were precomputed,
   after one warm-up request per user that fills the picks cache (process LRU over Redis);
2. ``picks no cache (peer)``: the same requests against a second gunicorn with both cache tiers off
   (``PICKS_CACHE_URL=""``, ``PICKS_CACHE_LOCAL_SECONDS=0``): every request reads the precomputed picks from
   MongoDB, which is what a deployment without the cache would do;
3. ``picks on the fly``: the same endpoint for users whose precomputed picks were removed, each request with a
   (user, k) the cache has never seen, so every response is computed from the live model (``source: model``);
4. ``continuation k=500`` and ``k=50``: ``POST /api/v1/recommendations/continuation`` with the name and the first
   5, 10, 25 or 100 tracks of real sample playlists.

The cached and peer scenarios use only users in the ``control`` arm of the default A/B experiment: the
``discovery`` arm changes the re-ranking weights, so its picks are never precomputed and the peer would compute
them instead of reading them. The on-the-fly pool has users of both arms (both compute). The response's
``source`` and ``cached`` fields are counted for every step and printed.

The load generator is an open model in this process (asyncio, one new connection per request, as gunicorn's sync
workers close every connection): request i is due at t0 + i/rate whatever happened to the earlier ones, and its
latency runs from that due time, so a slow server cannot slow the generator down and hide its own queueing
(coordinated omission). A request that has not answered within ``--timeout`` counts as an error (``timeout``);
with ``--max-inflight`` requests outstanding, a due request is not sent and counts as an error (``not_sent``).

World: unless ``MONGO_URI`` is set, an embedded SecantusDB and Redis are started on ports from ``--port-base``
with a persistent store in ``var/bench/api-store`` (git-ignored), so a re-run skips what is already done:
ingest the real MPD sample, train and promote a model, compute buddies, precompute picks. The DRF throttle is
raised to 1,000,000/min for the run (the throttle is not what is measured). Everything started is stopped at
the end, also on error or Ctrl-C. The table goes to stdout, the same figures as JSON to ``var/bench/api.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common  # bench/ is on sys.path when a script runs

REPO = _common.REPO
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mpd-real"
DEFAULT_STORE = REPO / "var" / "bench" / "api-store"
DEFAULT_JSON = REPO / "var" / "bench" / "api.json"
BIN = Path(sys.executable).parent
THROTTLE = "1000000/min"
SETTINGS = "recsys_site.settings.production"  # DEBUG off, as deployed

CACHED, PEER, FLY, CONT500, CONT50 = ("picks cached", "picks no cache (peer)", "picks on the fly",
                                      "continuation k=500", "continuation k=50")
SCENARIOS = [CACHED, PEER, FLY, CONT500, CONT50]
SHORT = {"cached": CACHED, "peer": PEER, "fly": FLY, "cont500": CONT500, "cont50": CONT50}
SLUG = {v: k for k, v in SHORT.items()}
SEED_COUNTS = (5, 10, 25, 100)
SOURCE_RE = re.compile(rb'"source":"([a-z_]+)"')
CACHED_RE = re.compile(rb'"cached":(true|false)')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s steps at 20 and 50 requests/s")
    parser.add_argument("--duration", type=float, help="seconds per step (default 25; 3 with --quick)")
    parser.add_argument("--rates", help="comma-separated requests/s (default 100,300,1000; 20,50 with --quick)")
    parser.add_argument("--continuation-extra-rate", type=float, default=50,
                        help="continuation also runs at this rate (default 50; 0 for none)")
    parser.add_argument("--scenarios", default="cached,fly,cont500,cont50,peer",
                        help="any of cached, peer, fly, cont500, cont50 (default: all)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds before a request counts as an error")
    parser.add_argument("--max-inflight", type=int, default=1000, help="outstanding requests at most (default 1000)")
    parser.add_argument("--clients", type=int, default=1000,
                        help="distinct clients the requests come from, as X-Forwarded-For (documentation addresses "
                        "2001:db8::/32), which DRF's throttle keys on (default 1000; 1 = all from 127.0.0.1)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per gunicorn worker (default: the product's WEB_THREADS; 1 = sync workers)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"MPD sample (default {DEFAULT_DATA})")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"persistent world (default {DEFAULT_STORE})")
    parser.add_argument("--port-base", type=int, default=28470,
                        help="MongoDB on this port, Redis +1, gunicorn +10 and +11 (default 28470)")
    parser.add_argument("--max-load", type=float, default=1.0,
                        help="wait (up to --load-wait s) for the 1-minute load average to fall below this first")
    parser.add_argument("--load-wait", type=float, default=600)
    parser.add_argument("--retry-writes", action="store_true",
                        help="keep pymongo's retryable writes on for the gunicorns against the embedded SecantusDB "
                        "(off by default: SecantusDB 0.7 scans its retryable-write records on every write and sorts "
                        "them once it holds 10,000, which becomes the bottleneck after ~10k API requests)")
    parser.add_argument("--web-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for both gunicorns, e.g. OPENBLAS_NUM_THREADS=1 (repeatable)")
    parser.add_argument("--profile", action="append", default=[], metavar="SCENARIO@RATE",
                        help="py-spy the gunicorn workers and SecantusDB during that step, e.g. cached@300 "
                        "(repeatable); prints the top functions, raw stacks go to the store's run/ folder")
    parser.add_argument("--prepare-only", action="store_true", help="prepare the world and stop")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write JSON (default {DEFAULT_JSON})")
    args = parser.parse_args()
    args.duration = args.duration or (3.0 if args.quick else 25.0)
    args.rates = [float(r) for r in (args.rates or ("20,50" if args.quick else "100,300,1000")).split(",")]
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in names if s not in SHORT]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SHORT)}")
    args.scenarios = [SHORT[s] for s in names]
    bad = [e for e in args.web_env if "=" not in e]
    if bad:
        parser.error(f"--web-env takes KEY=VALUE, not {bad[0]!r}")
    args.web_env = dict(e.split("=", 1) for e in args.web_env)
    profiles = set()
    for spec in args.profile:
        name, _, rate = spec.partition("@")
        if name not in SHORT or not rate:
            parser.error(f"--profile takes SCENARIO@RATE with a scenario of {', '.join(SHORT)}, not {spec!r}")
        profiles.add((SHORT[name], float(rate)))
    args.profile = profiles
    return args


def say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the world: servers, data, model, picks ----------------------------------------------------------------------
@dataclass
class World:
    store: Path
    env: dict[str, str]
    servers: list = field(default_factory=list)
    webs: list = field(default_factory=list)
    embedded: bool = True
    retry_writes: bool = False

    def stop(self) -> None:
        for web in reversed(self.webs):
            web.stop()
        self.webs.clear()
        for server in reversed(self.servers):
            with contextlib.suppress(Exception):
                server.stop()
        self.servers.clear()


def start_world(args: argparse.Namespace) -> World:
    sys.path.insert(0, str(REPO))
    from recsys_site.embedded import mongo_server, redis_server

    store = args.store.resolve()
    (store / "run").mkdir(parents=True, exist_ok=True)
    world = World(store=store, env={}, retry_writes=args.retry_writes)
    mongo_uri = os.environ.get("MONGO_URI", "")
    redis_url = os.environ.get("REDIS_URL", "")
    world.embedded = not mongo_uri
    if not mongo_uri:
        server = mongo_server(store, args.port_base)
        world.servers.append(server)
        say(f"starting the embedded SecantusDB on port {args.port_base}, data in {store / 'mongo'} ...")
        mongo_uri = server.start(timeout=120)
    if not redis_url:
        server = redis_server(store, args.port_base + 1)
        world.servers.append(server)
        say(f"starting the embedded Redis on port {args.port_base + 1} ...")
        redis_url = server.start()
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    world.env = {
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(40),
        "MONGO_URI": mongo_uri,
        "MONGO_DB": os.environ.get("MONGO_DB", "buddies"),
        "CELERY_BROKER_URL": f"{base}/0",
        "PICKS_CACHE_URL": f"{base}/1",
        "VAR_DIR": str(store),
        "MODEL_DIR": str(store / "models"),
        "DATABASE_URL": f"sqlite:///{store / 'django.sqlite3'}",
        "API_THROTTLE_ANON": THROTTLE,
        "API_THROTTLE_USER": THROTTLE,
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(world.env)
    return world


def manage(world: World, *args: str, capture: bool = False) -> str:
    cmd = [sys.executable, str(REPO / "manage.py"), *args]
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO, env={**os.environ, **world.env}, text=True,
                            stdout=subprocess.PIPE if capture else None)
    if result.returncode != 0:
        raise SystemExit(f"bench/api.py: `manage.py {' '.join(args)[:200]}` failed with status {result.returncode}")
    if not capture:
        say(f"  manage.py {args[0]} done in {time.perf_counter() - started:.1f} s")
    return result.stdout or ""


def fly_user(user: str) -> bool:
    """The users whose precomputed picks are removed, so that the on-the-fly scenario forces the compute path."""
    return int(hashlib.sha1(f"bench-api:{user}".encode()).hexdigest()[:8], 16) % 3 == 0


def prepare(world: World, data: Path) -> dict[str, Any]:
    """Ingest, train + promote, buddies, picks: each skipped when the store already has it for the live model."""
    say(f"preparing the world in {world.store} (each step is skipped when already done)")
    manage(world, "migrate", "--noinput", "-v", "0")
    manage(world, "ensure_indexes")
    status = json.loads(manage(world, "store_status", capture=True))
    if status["playlists"] == 0:
        say(f"ingesting the real MPD sample {data} (about 2 minutes) ...")
    else:
        say(f"store holds {status['playlists']:,} playlists; ingest_mpd skips files it has (sha256) ...")
    manage(world, "ingest_mpd", str(data), "--no-progress")

    _common.setup_django(SETTINGS)
    from pairing.selectors import buddies_state
    from ranker.artifacts import model_root
    from ranker.selectors import live_version, picks_state

    live = live_version()
    if live is None or not (model_root() / live).exists():
        say("training and promoting a model (a few minutes on 2 cores) ...")
        manage(world, "train_ranker", "--promote", "--force")
        live = live_version()
    else:
        say(f"live model {live} is there")
    if (buddies_state() or {}).get("model_version") != live:
        say("computing buddies ...")
        manage(world, "compute_buddies", "--no-progress")
    else:
        say("buddies of the live model are there")
    if (picks_state() or {}).get("model_version") != live:
        say("precomputing picks for every user (picks_precompute has no subset; about 4-5 minutes) ...")
        manage(world, "shell", "-c", "from ranker.services import picks_precompute; "
               "print(picks_precompute(show_progress=True))")
    else:
        say("precomputed picks of the live model are there")
    from recsys_site.mongo import get_db

    db = get_db()
    users = [u["_id"] for u in db["users"].find({}, {"_id": 1})]
    fly = [u for u in users if fly_user(u)]
    removed = 0
    for start in range(0, len(fly), 500):
        removed += db["picks"].delete_many({"_id": {"$in": fly[start:start + 500]}}).deleted_count
    say(f"on-the-fly pool: {len(fly):,} users without precomputed picks ({removed:,} removed now)")
    return {"live_model": live, "store_status": json.loads(manage(world, "store_status", capture=True))}


def request_material(quick: bool) -> dict[str, Any]:
    """User pools and continuation bodies, from the store."""
    from ranker.experiments import active_for
    from recsys_site.mongo import get_db

    db = get_db()
    with_picks = {p["_id"] for p in db["picks"].find({}, {"_id": 1})}
    users = sorted(u["_id"] for u in db["users"].find({}, {"_id": 1}))
    control = [u for u in users if active_for(kind="playlists", user=u)[1] == "control"]
    cached = [u for u in control if u in with_picks and not fly_user(u)]
    fly = [u for u in users if fly_user(u) and u not in with_picks]  # both arms: both compute
    if quick:
        cached = cached[:300]
    bodies = []
    for doc in db["playlists"].find({}, {"name": 1, "tracks.uri": 1}).sort("_id", 1):
        uris = [t["uri"] for t in doc.get("tracks", [])]
        n = SEED_COUNTS[len(bodies) % len(SEED_COUNTS)]
        if len(uris) > n:
            bodies.append({"name": doc.get("name") or "", "seed_tracks": uris[:n]})
        if len(bodies) >= 2000:
            break
    return {"cached": cached, "fly": fly, "bodies": bodies, "control_users": len(control), "users": len(users)}


# --- gunicorn ----------------------------------------------------------------------------------------------------
class Web:
    def __init__(self, world: World, name: str, port: int, workers: int, threads: int, env: dict[str, str]) -> None:
        self.name, self.port, self.world = name, port, world
        metrics = world.store / "run" / f"prometheus-{name}"
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(parents=True)
        self.env = {**os.environ, **world.env, "PROMETHEUS_MULTIPROC_DIR": str(metrics), **env}
        if world.embedded and not world.retry_writes:
            uri = self.env["MONGO_URI"]
            self.env["MONGO_URI"] = uri + ("&" if "?" in uri else ("?" if uri.endswith("/") else "/?")) + \
                "retryWrites=false"
        from recsys_site.stack import gunicorn_command

        self.cmd = gunicorn_command(port=port, workers=workers, threads=threads)
        self.log = world.store / "run" / f"web-{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        from recsys_site.embedded import port_is_free

        if not port_is_free(self.port):
            raise SystemExit(f"bench/api.py: port {self.port} is busy; pass another --port-base")
        with self.log.open("ab") as handle:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench/api.py: gunicorn ({self.name}) exited with status {self.proc.returncode}; "
                                 f"see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as response:
                    response.read()
                    say(f"gunicorn '{self.name}' up on port {self.port} (PID {self.proc.pid}, workers "
                        f"{self.worker_pids()})")
                    return
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"bench/api.py: gunicorn ({self.name}) did not answer /healthz in 120 s; see {self.log}")

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        return children(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return sorted(out)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pids(world: World, web: Web) -> dict[str, list[int]]:
    pids = {"gunicorn": ([web.proc.pid] if web.proc else []) + web.worker_pids()}
    for server in world.servers:
        if server.process is not None:
            pids[server.name] = [server.process.pid]
    return pids


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat), to tell what others used."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def cpu_snapshot(pids: dict[str, list[int]]) -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()}
    out["load generator"] = usage.ru_utime + usage.ru_stime
    out["machine"] = machine_busy()
    return out


def wait_quiet(world: World, web: Web, limit: float = 90.0) -> tuple[float, bool]:
    """Wait until the servers are idle (under 0.2 cores for 2 s): an overloaded step leaves queued requests.

    Returns (seconds waited, whether they went idle)."""
    pids = server_pids(world, web)
    started = time.monotonic()
    quiet = 0
    before = cpu_snapshot(pids)
    while time.monotonic() - started < limit:
        time.sleep(1.0)
        now = cpu_snapshot(pids)
        busy = sum(now[k] - before[k] for k in pids)  # only the servers: "machine" and the generator are not
        before = now
        quiet = quiet + 1 if busy < 0.2 else 0
        if quiet >= 2:
            return time.monotonic() - started, True
    return time.monotonic() - started, False


# --- profiles ----------------------------------------------------------------------------------------------------
def start_profiles(world: World, web: Web, seconds: float, tag: str) -> list[tuple[str, Path, subprocess.Popen]]:
    """py-spy record (sampling, non-blocking) on each gunicorn worker and on SecantusDB for ``seconds``."""
    spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if spy is None:
        say("--profile: py-spy is not installed (pip install -e '.[bench]'); not profiling")
        return []
    targets = [(f"gunicorn worker {n + 1}", pid) for n, pid in enumerate(web.worker_pids())]
    targets += [(server.name, server.process.pid) for server in world.servers
                if server.name == "mongodb" and server.process is not None]
    out = []
    for name, pid in targets:
        path = world.store / "run" / f"profile-{tag}-{name.replace(' ', '-')}.txt"
        cmd = [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "100",
               "--format", "raw", "--nolineno", "--nonblocking", "--output", str(path)]
        out.append((name, path, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    return out


def finish_profiles(profiles: list[tuple[str, Path, subprocess.Popen]], top: int = 12) -> dict[str, Any]:
    """Per process: samples, the functions with the most samples on top of the stack (self) and the project's
    functions with the most samples anywhere on the stack (inclusive)."""
    summary: dict[str, Any] = {}
    for name, path, proc in profiles:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        own: Counter = Counter()
        inclusive: Counter = Counter()
        parts: Counter = Counter()
        total = 0
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if not count.isdigit() or not stack:
                    continue
                n = int(count)
                total += n
                frames = stack.split(";")
                own[frames[-1]] += n
                part = next((label for label, marks in BREAKDOWN if any(m in stack for m in marks)), "other")
                parts[part] += n
                for frame in set(frames):
                    if _project_frame(frame):
                        inclusive[frame] += n
        summary[name] = {"samples": total, "self_pct": _shares(own, total, top),
                         "breakdown_pct": _shares(parts, total, len(BREAKDOWN) + 1) if "worker" in name else [],
                         "project_inclusive_pct": _shares(inclusive, total, top), "raw": str(path)}
    return summary


# Where a gunicorn worker's samples are, by the first rule whose marker is on the stack (py-spy samples a worker
# whether it is on a core or waiting, so these are shares of its wall time).
BREAKDOWN = (
    ("idle (waiting for a connection)", ("SyncWorker.wait",)),
    ("close_graceful (waiting for the client to close)", ("close_graceful",)),
    ("MongoDB: known_user (user lookup)", ("known_user",)),
    ("MongoDB: served_record (A/B log insert)", ("served_record",)),
    ("MongoDB: other", ("pymongo/",)),
    ("Redis (picks cache)", ("redis/",)),
    ("model scoring and re-ranking", ("ranker/recommenders/", "ranker/playlists.py", "numpy/", "scipy/")),
    ("DRF throttle", ("throttling",)),
    ("serializers and JSON rendering", ("Serializer", "JSONRenderer", "render")),
    ("writing the response", ("write (gunicorn",)),
)
PACKAGES = ("recsys_site/", "ingestion/", "ranker/", "pairing/", "dashboard/", "celery_app/")


def _project_frame(frame: str) -> bool:
    """py-spy writes ``function (path)``, the path shortened to the package: is it one of ours?"""
    path = frame.rpartition(" (")[2].rstrip(")")
    return path.startswith(PACKAGES) or (path.startswith(f"{REPO}/") and "/.venv/" not in path)


def _shares(counts: Counter, total: int, top: int) -> list[list[Any]]:
    return [[frame, round(100 * n / total, 1)] for frame, n in counts.most_common(top)] if total else []


def print_profiles(tag: str, summary: dict[str, Any]) -> None:
    for name, prof in summary.items():
        print(f"\nprofile {tag}, {name}: {prof['samples']:,} samples (raw stacks: {prof['raw']})")
        for title, key in (("where the wall time goes", "breakdown_pct"), ("self", "self_pct"),
                           ("project, inclusive", "project_inclusive_pct")):
            if not prof[key]:
                continue
            print(f"  {title}:")
            for frame, pct in prof[key]:
                print(f"    {pct:5.1f}%  {frame[:150]}")


# --- the load generator ------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    due: float
    lag: float  # send time - due time
    latency: float  # completion - due time; inf for a timeout or a connection error
    status: str
    source: str | None = None
    cached: str | None = None


class Generator:
    def __init__(self, port: int, timeout: float, max_inflight: int, clients: int = 1) -> None:
        self.port, self.timeout, self.max_inflight, self.clients = port, timeout, max_inflight, clients
        self.inflight = 0
        self.built = 0

    def build(self, method: str, path: str, body: dict | None) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nConnection: close\r\n"
        if self.clients > 1:
            # One throttle history per client, as with real traffic; from one address, DRF's throttle keeps a
            # single history of every request of the last minute and unpickles it on each request.
            head += f"X-Forwarded-For: 2001:db8::{self.built % self.clients + 1:x}\r\n"
            self.built += 1
        if body is None:
            return (head + "\r\n").encode()
        payload = json.dumps(body).encode()
        return (head + f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload

    async def one(self, loop: asyncio.AbstractEventLoop, due: float, request: bytes, out: list[Outcome]) -> None:
        self.inflight += 1
        sent = loop.time()
        writer = None
        data = b""
        status = "?"
        try:
            async with asyncio.timeout(self.timeout - (sent - due) if sent - due < self.timeout else 0.001):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(request)
                data = await reader.read()
            status = data[9:12].decode() if data.startswith(b"HTTP/1.") else "bad_response"
        except TimeoutError:
            status = "timeout"
        except OSError as exc:
            status = f"connection:{type(exc).__name__}"
        finally:
            self.inflight -= 1
            if writer is not None:
                writer.transport.abort()
        done = loop.time()
        ok = status.startswith("2")
        outcome = Outcome(due=due, lag=sent - due, latency=done - due if status[0].isdigit() else math.inf,
                          status=status)
        if ok:
            body = data[:4096]
            if m := SOURCE_RE.search(body):
                outcome.source = m.group(1).decode()
            if m := CACHED_RE.search(body):
                outcome.cached = m.group(1).decode()
        out.append(outcome)

    async def run(self, rate: float, duration: float, make) -> tuple[list[Outcome], int, float]:
        """Send ``rate × duration`` requests at due times t0 + i/rate; return (outcomes, not sent, seconds)."""
        loop = asyncio.get_running_loop()
        n = max(1, int(rate * duration))
        out: list[Outcome] = []
        tasks = set()
        not_sent = 0
        t0 = loop.time() + 0.05
        i = 0
        while i < n:
            now = loop.time()
            due = t0 + i / rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while i < n and t0 + i / rate <= now:
                if len(tasks) >= self.max_inflight:
                    not_sent += 1
                else:
                    task = loop.create_task(self.one(loop, t0 + i / rate, make(i), out))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                i += 1
        if tasks:
            await asyncio.wait(tasks)
        return out, not_sent, loop.time() - t0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summarise(scenario: str, rate: float, outcomes: list[Outcome], not_sent: int, seconds: float,
              cpu: dict[str, float], load: tuple[float, float, float], timeout: float) -> dict[str, Any]:
    ok = [o for o in outcomes if o.status.startswith("2")]
    latencies = [o.latency for o in outcomes]
    errors = Counter(o.status for o in outcomes if not o.status.startswith("2"))
    if not_sent:
        errors["not_sent"] = not_sent
    sources = Counter(f"{o.source}{'/cached' if o.cached == 'true' else ''}" for o in ok)
    last = max((o.due + o.latency for o in ok), default=0.0)
    first = min((o.due for o in outcomes), default=0.0)

    def ms(q: float) -> float | None:
        value = percentile(latencies, q)
        return None if math.isnan(value) else (math.inf if math.isinf(value) else round(value * 1000, 2))

    # Where in the step the tail happened: the p99 of each second (a stall shows as one bad second, a server that
    # is too slow as every second getting worse).
    by_second: dict[int, list[float]] = {}
    for o in outcomes:
        by_second.setdefault(int(o.due - first), []).append(o.latency)
    p99_by_second = [round(percentile(v, 99) * 1000, 1) if not math.isinf(percentile(v, 99)) else None
                     for _, v in sorted(by_second.items())]

    return {
        "scenario": scenario, "target_rps": rate, "requests": len(outcomes) + not_sent, "sent": len(outcomes),
        "ok": len(ok), "achieved_rps": round(len(ok) / (last - first), 1) if ok and last > first else 0.0,
        "errors": sum(errors.values()), "errors_by_status": dict(sorted(errors.items())),
        "p50_ms": ms(50), "p95_ms": ms(95), "p99_ms": ms(99), "max_ms": ms(100),
        "ok_p99_ms": round(percentile([o.latency for o in ok], 99) * 1000, 2) if ok else None,
        "send_lag_p99_ms": round(percentile([o.lag for o in outcomes], 99) * 1000, 2) if outcomes else None,
        "seconds": round(seconds, 2), "sources": dict(sources.most_common()),
        "cpu_cores": {k: round(v / seconds, 2) for k, v in cpu.items()},
        "load_avg_before": [round(x, 2) for x in load], "timeout_s": timeout, "p99_ms_by_second": p99_by_second,
    }


# --- scenarios ---------------------------------------------------------------------------------------------------
def request_maker(scenario: str, gen: Generator, material: dict[str, Any], counter: dict[str, int]):
    if scenario in (CACHED, PEER):
        users = material["cached"]
        return lambda i: gen.build("GET", f"/api/v1/users/{users[i % len(users)]}/playlists/recommended?k=10", None)
    if scenario == FLY:
        users = material["fly"]

        def fly(i: int) -> bytes:
            # every (user, k) once per run, across steps: the cache cannot answer, the live model computes
            j = counter[FLY] = counter.get(FLY, -1) + 1
            k = 10 + (j // len(users)) % 90
            return gen.build("GET", f"/api/v1/users/{users[j % len(users)]}/playlists/recommended?k={k}", None)

        return fly
    k = 500 if scenario == CONT500 else 50
    bodies = material["bodies"]
    return lambda i: gen.build("POST", "/api/v1/recommendations/continuation", {**bodies[i % len(bodies)], "k": k})


def warm(gen: Generator, make, count: int, concurrency: int = 4) -> dict[str, Any]:
    """Closed-loop warm-up: ``count`` requests, ``concurrency`` at a time; returns statuses and sources."""

    async def go() -> list[Outcome]:
        loop = asyncio.get_running_loop()
        out: list[Outcome] = []
        queue = iter(range(count))

        async def lane() -> None:
            for i in queue:
                await gen.one(loop, loop.time(), make(i), out)

        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return out

    started = time.perf_counter()
    out = asyncio.run(go())
    seconds = time.perf_counter() - started
    ok = [o for o in out if o.status.startswith("2")]
    return {"requests": count, "seconds": round(seconds, 1), "statuses": dict(Counter(o.status for o in out)),
            "sources": dict(Counter(f"{o.source}{'/cached' if o.cached == 'true' else ''}" for o in ok)),
            "median_ms": round(statistics.median([o.latency for o in ok]) * 1000, 1) if ok else None}


def run_steps(world: World, web: Web, scenario: str, rates: list[float], args: argparse.Namespace,
              material: dict[str, Any], counter: dict[str, int]) -> list[dict[str, Any]]:
    gen = Generator(web.port, args.timeout, args.max_inflight, args.clients)
    make = request_maker(scenario, gen, material, counter)
    rows = []
    for rate in rates:
        drained, quiet = wait_quiet(world, web)
        if not quiet:
            say(f"gunicorn still busy after {drained:.0f} s (requests of the last step queued): restarting it")
            web.stop()
            web.start()
            warm(gen, request_maker(CACHED, gen, material, counter), 20)
            if scenario == FLY:
                warm(gen, make, 16)
        pids = server_pids(world, web)
        load = os.getloadavg()
        say(f"{scenario} at {rate:g} requests/s for {args.duration:g} s (load {load[0]:.2f}"
            + (f", waited {drained:.0f} s for the servers to go idle" if drained > 3 else "") + ") ...")
        tag = f"{web.name}-{SLUG[scenario]}-{rate:g}"
        profiles = start_profiles(world, web, args.duration, tag) if (scenario, rate) in args.profile else []
        before = cpu_snapshot(pids)
        outcomes, not_sent, seconds = asyncio.run(gen.run(rate, args.duration, make))
        after = cpu_snapshot(pids)
        cpu = {k: after[k] - before[k] for k in after}
        cpu["others"] = max(0.0, cpu.pop("machine") - sum(cpu.values()))  # processes this run did not start
        row = summarise(scenario, rate, outcomes, not_sent, seconds, cpu, load, args.timeout)
        row["config"] = web.name
        if profiles:
            row["profile"] = finish_profiles(profiles)
            print_profiles(tag, row["profile"])
        say(f"  achieved {row['achieved_rps']:g}/s, errors {row['errors']} {row['errors_by_status'] or ''}, "
            f"p50 {fmt_ms(row['p50_ms'])} p99 {fmt_ms(row['p99_ms'])} ms, sources {row['sources']}, "
            f"cpu {row['cpu_cores']}")
        say(f"  p99 ms by second: {row['p99_ms_by_second']}")
        rows.append(row)
    return rows


def worker_kind(threads: int) -> str:
    return f"gthread ({threads} threads each)" if threads > 1 else "sync"


# --- report ------------------------------------------------------------------------------------------------------
def fmt_ms(value: float | None, timeout: float | None = None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return f">{timeout * 1000:,.0f}" if timeout else "timeout"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("scenario", "target rps", "achieved rps", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms",
            "server CPU", "gen CPU", "others CPU")
    body = []
    for r in rows:
        cores = r["cpu_cores"]
        server = sum(v for k, v in cores.items() if k not in ("load generator", "others"))
        body.append((r["scenario"], f"{r['target_rps']:g}", f"{r['achieved_rps']:,.1f}", f"{r['requests']:,}",
                     f"{r['errors']:,}", *(fmt_ms(r[f"{p}_ms"], r["timeout_s"]) for p in ("p50", "p95", "p99", "max")),
                     f"{server:.2f}", f"{cores['load generator']:.2f}", f"{cores.get('others', 0):.2f}"))
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def fmt(line: tuple[str, ...]) -> str:
        cells = enumerate(zip(line, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in cells)

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *(fmt(line) for line in body)])


def details(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        errors = ", ".join(f"{k}: {v:,}" for k, v in r["errors_by_status"].items()) or "none"
        sources = ", ".join(f"{k}: {v:,}" for k, v in r["sources"].items()) or "-"
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_cores"].items())
        lines.append(f"{r['scenario']} @ {r['target_rps']:g}/s: errors {errors}; sources {sources}; "
                     f"p99 of 2xx {fmt_ms(r['ok_p99_ms'])} ms; send lag p99 {fmt_ms(r['send_lag_p99_ms'])} ms; "
                     f"cores: {cpu}; load before {r['load_avg_before'][0]:.2f}")
    return "\n".join(lines)


def acceptance(rows: list[dict[str, Any]]) -> list[str]:
    out = []

    def find(scenario: str, rate: float) -> dict[str, Any] | None:
        return next((r for r in rows if r["scenario"] == scenario and r["target_rps"] == rate), None)

    for scenario, rate, limit, zero in ((CACHED, 300, 50, True), (CONT500, 50, 200, False)):
        row = find(scenario, rate)
        if row is None:
            out.append(f"{scenario} at {rate}/s: not run")
            continue
        p99 = row["p99_ms"]
        ok = p99 is not None and p99 < limit and (row["errors"] == 0 or not zero)
        out.append(f"{scenario} at {rate}/s: p99 {fmt_ms(p99, row['timeout_s'])} ms (limit {limit}), "
                   f"errors {row['errors']} -> {'PASS' if ok else 'FAIL'}")
    return out


def wait_for_load(limit: float, wait: float) -> tuple[float, float, float]:
    deadline = time.monotonic() + wait
    load = os.getloadavg()
    while load[0] > limit and time.monotonic() < deadline:
        say(f"load average {load[0]:.2f} > {limit:g}: waiting (up to {deadline - time.monotonic():.0f} s more)")
        time.sleep(30)
        load = os.getloadavg()
    return load


def main() -> int:
    args = parse_args()
    data = args.data.expanduser().resolve()
    if not data.exists():
        sys.exit(f"bench/api.py: no MPD data at {data}\n  the real sample lives in ../shared/data/mpd-real beside "
                 "the repository; pass --data PATH")
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    world = start_world(args)
    try:
        prepared = prepare(world, data)
        if args.threads is None:
            from django.conf import settings

            args.threads = settings.WEB_THREADS
        if args.prepare_only:
            return 0
        material = request_material(args.quick)
        say(f"{material['users']:,} users, {material['control_users']:,} in the control arm; cached pool "
            f"{len(material['cached']):,}, on-the-fly pool {len(material['fly']):,}, "
            f"{len(material['bodies']):,} continuation bodies")
        load_start = wait_for_load(args.max_load, args.load_wait)
        say(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)}; DRF throttle raised to "
            f"{THROTTLE} (API_THROTTLE_ANON/USER) so the throttle is not what is measured")
        started_at = datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        warmups: dict[str, Any] = {}
        counter: dict[str, int] = {}
        cont_rates = sorted({*args.rates, *([args.continuation_extra_rate] if args.continuation_extra_rate else [])})
        product = [s for s in args.scenarios if s != PEER]
        if product:
            web = Web(world, "product", args.port_base + 10, args.workers, args.threads, args.web_env)
            world.webs.append(web)
            web.start()
            gen = Generator(web.port, 30, 1000, args.clients)
            if CACHED in product:
                say(f"warm-up: one request per cached-pool user ({len(material['cached']):,}), 4 at a time, fills "
                    "the picks cache ...")
                warmups[CACHED] = warm(gen, request_maker(CACHED, gen, material, counter), len(material["cached"]))
                say(f"  {warmups[CACHED]}")
            if {CONT500, CONT50} & set(product):
                warmups["continuation"] = warm(gen, request_maker(CONT500, gen, material, counter), 20)
                say(f"  continuation warm-up: {warmups['continuation']}")
            if FLY in product:
                # The first computed pick in a worker builds the model's playlist space (FAISS index, seconds):
                # pay that before measuring, as a worker that has served for a while has.
                warmups[FLY] = warm(gen, request_maker(FLY, gen, material, counter), 16)
                say(f"  on-the-fly warm-up: {warmups[FLY]}")
            for scenario in product:
                rates = cont_rates if scenario in (CONT500, CONT50) else args.rates
                rows += run_steps(world, web, scenario, rates, args, material, counter)
            web.stop()
            world.webs.remove(web)
        if PEER in args.scenarios:
            web = Web(world, "no-cache", args.port_base + 11, args.workers, args.threads,
                      {**args.web_env, "PICKS_CACHE_URL": "", "PICKS_CACHE_LOCAL_SECONDS": "0"})
            world.webs.append(web)
            web.start()
            gen = Generator(web.port, 30, 1000, args.clients)
            warmups[PEER] = warm(gen, request_maker(PEER, gen, material, counter), 200)
            say(f"  no-cache warm-up: {warmups[PEER]}")
            rows += run_steps(world, web, PEER, args.rates, args, material, counter)
            web.stop()
            world.webs.remove(web)
        load_end = os.getloadavg()
        facts = {**_common.machine_facts("gunicorn", "django", "djangorestframework", "pymongo", "secantusdb",
                                         "redis"),
                 "server": "embedded SecantusDB + Redis" if world.embedded else "MONGO_URI"}
        out = {
            "benchmark": "bench/api.py",
            "at": started_at.isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": facts,
            "load_avg": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end]},
            "settings": {"duration_s": args.duration, "rates": args.rates, "continuation_rates": cont_rates,
                         "timeout_s": args.timeout, "max_inflight": args.max_inflight,
                         "workers": args.workers, "threads": args.threads,
                         "web_env": args.web_env, "clients": args.clients,
                         "retry_writes": args.retry_writes or not world.embedded,
                         "django_settings": SETTINGS, "throttle": THROTTLE, "seed_counts": SEED_COUNTS,
                         "pools": {"cached": len(material["cached"]), "fly": len(material["fly"]),
                                   "continuation_bodies": len(material["bodies"])}},
            "world": prepared,
            "warmups": warmups,
            "results": rows,
            "acceptance": acceptance(rows),
        }
        _common.write_json(args.json, out)
        print()
        print(f"machine: {facts['cores']} cores ({facts['cpu']}), Python {facts['python']}, gunicorn "
              f"{facts.get('gunicorn')} with {args.workers} {worker_kind(args.threads)} workers, {SETTINGS}, "
              f"SecantusDB {facts.get('secantusdb')}, load generator in the same machine (asyncio, open model)")
        print(f"load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in load_start)} at start, "
              f"{' '.join(f'{x:.2f}' for x in load_end)} at end; DRF throttle raised to {THROTTLE}; "
              f"{args.clients:,} clients (X-Forwarded-For); pymongo retryable writes "
              f"{'on' if args.retry_writes or not world.embedded else 'off'}"
              + (f"; gunicorn env {args.web_env}" if args.web_env else ""))
        print(f"{args.duration:g} s per step; latency from each request's due time; errors = non-2xx, timeouts "
              f"(> {args.timeout:g} s), connection errors, not sent (> {args.max_inflight} outstanding); CPU in "
              "cores: server = gunicorn + SecantusDB + Redis, gen = this load generator, others = the rest of the "
              "machine\n")
        print(table(rows))
        print()
        print(details(rows))
        print()
        for line in acceptance(rows):
            print(f"acceptance: {line}")
        print(f"\nJSON: {args.json}")
        return 0
    finally:
        world.stop()
        say("stopped gunicorn, SecantusDB and Redis")


if __name__ == "__main__":
    sys.exit(main())
