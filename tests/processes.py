"""Helpers for tests that start real processes (workers, gunicorn) and wait on what they do."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    """``predicate()``'s first truthy value within ``timeout`` seconds; AssertionError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen) -> None:
    """Terminate ``proc`` and wait for it; kill it if it has not exited within 30 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def celery_worker(settings, model_dir, name: str) -> subprocess.Popen:
    """A real Celery worker (solo pool, every queue) on the test's store, broker and ``MODEL_DIR``, named
    ``{name}-{pid of the test process}@host``; its pid is the process that runs the tasks."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "recsys_site.settings.test", "MONGO_URI": settings.MONGO_URI,
           "MONGO_DB": settings.MONGO_DB, "MODEL_DIR": str(model_dir), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
           "JOB_LOCK_TTL_SECONDS": str(settings.JOB_LOCK_TTL_SECONDS)}
    celery = str(Path(sys.executable).parent / "celery")
    return subprocess.Popen([celery, "-A", "celery_app", "worker", "--pool", "solo", "--queues", "default,gpu,refresh",
                             "--loglevel", "INFO", "--hostname", f"{name}-{os.getpid()}@%h"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def web_server(env: dict[str, str], port: int, log_path: Path, *, ready_path: str = "/healthz",
               timeout: float = 90) -> subprocess.Popen:
    """A real gunicorn (2 sync workers) on ``port`` with ``env``, its output in ``log_path``; returns once
    ``ready_path`` answers (any HTTP status counts: a 503 health is still an answer)."""
    log = log_path.open("w")
    web = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "recsys_site.wsgi:application",
                            "--bind", f"127.0.0.1:{port}", "--workers", "2", "--no-control-socket", "--timeout", "120"],
                           cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def up() -> bool:
        assert web.poll() is None, log_path.read_text()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=5)
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    try:
        wait_until(up, timeout, "gunicorn to answer: " + str(log_path))
    except BaseException:
        stop(web)
        raise
    return web
