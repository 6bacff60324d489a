"""bench/api.py's servers: the world the benchmark measures and the processes it watches.

The embedded SecantusDB and Redis (or ``MONGO_URI``), the data the scenarios need (ingest, train + promote, buddies,
precomputed picks, the on-the-fly pool without them), the gunicorns started as ``make run`` starts them, the CPU
seconds of each process, waiting for the servers and the machine to go idle, and py-spy on the workers.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import _common  # bench/ is on sys.path when a script runs

REPO = _common.REPO
BIN = Path(sys.executable).parent
THROTTLE = "1000000/min"
SETTINGS = "recsys_site.settings.production"  # DEBUG off, as deployed


def say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the world: servers, data, model, picks ---------------------------------------------------------------------------
@dataclass
class World:
    store: Path
    env: dict[str, str]
    servers: list = field(default_factory=list)
    webs: list = field(default_factory=list)
    embedded: bool = True
    retry_writes: bool = False
    token: str | None = None  # an app token that reads every user's picks (prepare makes it)

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
        # The load generator sends X-Forwarded-Proto: https as nginx does in front of the deployed web service.
        "TRUST_X_FORWARDED_PROTO": "true",
        "API_THROTTLE_ANON": THROTTLE,
        "API_THROTTLE_USER": THROTTLE,
        "API_THROTTLE_APP": THROTTLE,
        "API_TRUSTED_PROXIES": "1",  # the generator stands in for nginx: X-Forwarded-For names each client
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


# What a version of today's served recipe holds beyond the blend: the text model (search, titles) and the second
# stage (continuations). A live model made before them is not what the product serves now, so it is retrained.
CURRENT_ARTIFACTS = ("text.npz", "second_stage.npz")


def _stage_current(version_dir: Path) -> bool:
    """Whether the version's second stage was trained on the features this code computes (else it is not served)."""
    import numpy as np

    from ranker.recommenders.rerank import FEATURES

    with np.load(version_dir / "second_stage.npz", allow_pickle=False) as state:
        return json.loads(str(state["meta"])).get("features") == list(FEATURES)


def prepare(world: World, data: Path) -> dict[str, Any]:
    """Ingest, train + promote, buddies, picks: each skipped when the store already has it for the live model.

    A live model without one of ``CURRENT_ARTIFACTS`` (made before them: search would answer with no results,
    continuations would skip the second stage) is replaced by a newly trained one."""
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
    from ranker.picks.selectors import picks_state
    from ranker.training.artifacts import model_root
    from ranker.training.selectors import live_version

    live = live_version()
    missing = [f for f in CURRENT_ARTIFACTS if live is not None and (model_root() / live).exists()
               and not (model_root() / live / f).exists()]
    if missing:
        say(f"live model {live} has no {', '.join(missing)} (made before them): training a new one")
        live = None
    elif live is not None and (model_root() / live).exists() and not _stage_current(model_root() / live):
        say(f"live model {live} has a second stage trained on other features than this code's: training a new one")
        live = None
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
        manage(world, "shell", "-c", "from ranker.picks.precompute import picks_precompute; "
               "print(picks_precompute(show_progress=True))")
    else:
        say("precomputed picks of the live model are there")
    from recsys_site.mongo import get_db

    # The picks are read as a first-party app reads them (recsys_site/auth.py): a token with picks:read for every user.
    world.token = manage(world, "create_credential", "--app", "bench", "--scopes", "picks:read", "--any-user",
                         capture=True).strip().splitlines()[-1]
    db = get_db()
    users = [u["_id"] for u in db["users"].find({}, {"_id": 1})]
    fly = [u for u in users if fly_user(u)]
    removed = 0
    for start in range(0, len(fly), 500):
        removed += db["picks"].delete_many({"_id": {"$in": fly[start:start + 500]}}).deleted_count
    # ... and without cached ones: the cache keeps answers for an hour across runs (Redis persists), and a pool
    # answered from it would measure the cache, not the on-the-fly path.
    from django.conf import settings

    from ranker.picks.cache import forget_users

    settings.PICKS_CACHE_URL = world.env["PICKS_CACHE_URL"]
    for start in range(0, len(fly), 200):
        forget_users(fly[start:start + 200])
    say(f"on-the-fly pool: {len(fly):,} users without precomputed picks ({removed:,} removed now), cache cleared")
    # Every picks read logs its served list: earlier runs' lists are this bench's own output, so a run starts without
    # them and runs stay alike. Left in place they also cost: the embedded store's TTL sweep decodes every document
    # of a TTL collection each minute (4 s of a core at 128,000 served lists), which queued the API behind it.
    served = db["served"].delete_many({}).deleted_count
    say(f"served lists of earlier runs removed: {served:,}")
    return {"live_model": live, "store_status": json.loads(manage(world, "store_status", capture=True))}


# --- gunicorn ---------------------------------------------------------------------------------------------------------
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


def wait_for_load(limit: float, wait: float) -> tuple[float, float, float]:
    deadline = time.monotonic() + wait
    load = os.getloadavg()
    while load[0] > limit and time.monotonic() < deadline:
        say(f"load average {load[0]:.2f} > {limit:g}: waiting (up to {deadline - time.monotonic():.0f} s more)")
        time.sleep(30)
        load = os.getloadavg()
    return load


# --- profiles ---------------------------------------------------------------------------------------------------------
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
