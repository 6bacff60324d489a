"""``make run``: bring up the whole of Buddies on one machine and stop it cleanly.

    python -m recsys_site.stack run [--data PATH] [--demo-playlists N]

1. Start the embedded MongoDB-wire server (SecantusDB) when ``MONGO_URI`` is unset, and the embedded
   Redis when ``CELERY_BROKER_URL`` is unset; export their URLs to every child.
2. Migrate Django's own database and ensure MongoDB indexes.
3. Ingest ``--data`` (an MPD folder, slice or zip) when given; otherwise, when the store is empty,
   generate demo data (about 2,000 playlists) and ingest it.
4. Start gunicorn (Django at ``/``), a Celery worker and Celery beat; print the URLs.
5. On Ctrl-C or SIGTERM, or when any child dies, stop everything it started, in reverse order.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import django
from django.conf import settings

from .embedded import EmbeddedServerError, mongo_server, redis_server

log = logging.getLogger("buddies.stack")

ROOT = Path(__file__).resolve().parents[1]


def gunicorn_command(*, port: int, workers: int, threads: int) -> list[str]:
    """How the web process runs, here and in ``bench/api.py``: sync workers, or threaded ones (``gthread``) when
    ``threads`` > 1. Threads overlap a request's waits (a remote store, a slow client closing) but contend for the
    GIL: on this 2-core machine with local servers, cached picks at 300/s had p99 32 ms on sync workers and 174 ms
    on 4 threads each (docs/BENCHMARKS.md), so sync is the default."""
    cmd = [str(Path(sys.executable).parent / "gunicorn"), "recsys_site.wsgi:application",
           "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--no-control-socket", "--timeout", "60"]
    if threads > 1:
        cmd += ["--worker-class", "gthread", "--threads", str(threads)]
    return cmd


class Stack:
    def __init__(self, *, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.servers: list = []
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False

    # --- helpers -------------------------------------------------------------------------------------------------
    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(ROOT / "manage.py"), *args]
        log.info("$ manage.py %s", " ".join(args))
        result = subprocess.run(cmd, cwd=ROOT, env=os.environ.copy())
        if check and result.returncode != 0:
            raise SystemExit(f"`manage.py {' '.join(args)}` failed with status {result.returncode}")
        return result

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        log_path = self.var_dir / "run" / f"{name}.log"
        handle = log_path.open("ab")
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=handle,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        handle.close()
        self.children.append((name, proc))
        log.info("%s started (PID %d), log: %s", name, proc.pid, log_path)

    # --- phases --------------------------------------------------------------------------------------------------
    def start_servers(self) -> None:
        if not os.environ.get("MONGO_URI"):
            server = mongo_server(self.var_dir, settings.MONGO_PORT)
            self.servers.append(server)
            os.environ["MONGO_URI"] = server.start()
        if not os.environ.get("CELERY_BROKER_URL"):
            server = redis_server(self.var_dir, settings.REDIS_PORT)
            self.servers.append(server)
            os.environ["CELERY_BROKER_URL"] = server.start()

    def prepare_store(self, *, data: str | None, demo_playlists: int) -> None:
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("collectstatic", "--noinput", "-v", "0")
        self.manage("ensure_indexes")
        counts = json.loads(subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "store_status"], cwd=ROOT, env=os.environ.copy(),
            capture_output=True, text=True, check=True).stdout)
        if data:
            # Rejected playlists are reported by ingest_mpd; the good ones are stored and the product runs.
            self.manage("ingest_mpd", data, check=False)
        elif counts["playlists"] == 0:
            demo = self.var_dir / "demo"
            log.info("the store is empty: generating %d demo playlists into %s", demo_playlists, demo)
            self.manage("make_demo_data", str(demo), "--playlists", str(demo_playlists), "--seed", "0")
            self.manage("ingest_mpd", str(demo))
        else:
            log.info("store holds %s", ", ".join(f"{counts[k]:,} {k}" for k in ("playlists", "tracks", "users")))
        if data or not counts.get("live_model"):
            # Without a live model every pick would be the popular fallback: train one before serving.
            log.info("running weekly_refresh once now: train, promote, buddies, picks (beat runs it weekly)")
            self.manage("run_job", "weekly_refresh", "--sync", "--param", "force=true")

    def start_processes(self, *, port: int, workers: int, threads: int) -> None:
        bin_dir = Path(sys.executable).parent
        # The web workers share their Prometheus counters through files, so /metrics sums all of them.
        metrics_dir = self.var_dir / "run" / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        self.spawn("web", gunicorn_command(port=port, workers=workers, threads=threads),
                   env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
        self.spawn("worker", [str(bin_dir / "celery"), "-A", "celery_app", "worker", "--loglevel", "INFO",
                              "--queues", "default,gpu,refresh", "--concurrency", "1", "--hostname", "buddies@%h"])
        self.spawn("beat", [str(bin_dir / "celery"), "-A", "celery_app", "beat", "--loglevel", "INFO",
                            "--schedule", str(self.var_dir / "run" / "celerybeat-schedule")])

    def wait_web(self, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                    log.info("healthz: %s", response.read().decode())
                    return
            except OSError:
                time.sleep(0.5)
        log.warning("the web server did not answer /healthz within %.0f s; see var/run/web.log", timeout)

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                log.info("stopping %s (PID %d)", name, proc.pid)
                proc.terminate()
        for name, proc in reversed(self.children):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in 20 s: killing it", name)
                proc.kill()
        for server in reversed(self.servers):
            log.info("stopping embedded %s", server.name)
            server.stop()

    def supervise(self) -> int:
        while True:
            for name, proc in self.children:
                if proc.poll() is not None:
                    log.error("%s exited with status %s; stopping everything (see var/run/%s.log)",
                              name, proc.returncode, name)
                    return 1
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_site.stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start everything (servers, data, web, worker, beat)")
    run.add_argument("--data", help="an MPD folder, slice file or the official zip to ingest")
    run.add_argument("--demo-playlists", type=int, default=2000, help="demo playlists when the store is empty")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # One machine's development stack (embedded servers, DEBUG on): it names the local settings unless told otherwise
    # (`make run` passes them), and exports them to every process it starts.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsys_site.settings.local")

    django.setup()

    var_dir = Path(settings.VAR_DIR)
    (var_dir / "run").mkdir(parents=True, exist_ok=True)
    stack = Stack(var_dir=var_dir)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    # SIGINT too: a shell starting us in the background (`make run &`, CI scripts) leaves SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler of its own.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    status = 0
    try:
        stack.start_servers()
        stack.prepare_store(data=args.data, demo_playlists=args.demo_playlists)
        stack.start_processes(port=settings.WEB_PORT, workers=settings.WEB_WORKERS, threads=settings.WEB_THREADS)
        stack.wait_web(settings.WEB_PORT)
        print(
            f"\nBuddies is running:\n"
            f"  web        http://127.0.0.1:{settings.WEB_PORT}/\n"
            f"  health     http://127.0.0.1:{settings.WEB_PORT}/healthz\n"
            f"  admin      http://127.0.0.1:{settings.WEB_PORT}/admin/  (login: manage.py createsuperuser)\n"
            f"  MongoDB    {os.environ['MONGO_URI']}\n"
            f"  broker     {os.environ['CELERY_BROKER_URL']}\n"
            f"  logs       {var_dir / 'run'}/*.log\n"
            f"Press Ctrl-C to stop everything.\n",
            flush=True,
        )
        status = stack.supervise()
    except KeyboardInterrupt:
        log.info("stopping (Ctrl-C)")
    except EmbeddedServerError as exc:
        log.error("%s", exc)
        status = 2
    except SystemExit as exc:
        log.error("%s", exc)
        status = 1
    finally:
        stack.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
