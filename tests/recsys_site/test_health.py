"""/healthz against the real servers, and a real Celery worker + beat delivering the heartbeat."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_healthz_reports_mongodb_and_broker_ok(client, store):
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["mongodb"]["ok"] and body["broker"]["ok"] and body["status"] == "ok"
    assert body["scheduler"] == {"ok": False, "last_heartbeat_age_s": None}


def test_healthz_is_503_when_the_broker_is_down(admin_client, store, settings):
    from recsys_site.embedded import free_port

    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = admin_client.get("/healthz")  # staff see why (recsys_site/views.py)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and not body["broker"]["ok"] and "error" in body["broker"]


def test_worker_and_beat_deliver_the_heartbeat(store, settings, tmp_path):
    from recsys_site.health import heartbeat_age

    env = {**os.environ, "MONGO_DB": settings.MONGO_DB, "HEARTBEAT_SECONDS": "1",
           "DJANGO_SETTINGS_MODULE": "recsys_site.settings.test"}
    celery = str(Path(sys.executable).parent / "celery")
    worker = subprocess.Popen([celery, "-A", "celery_app", "worker", "--pool", "solo", "--loglevel", "WARNING",
                               "--hostname", f"test-{os.getpid()}@%h"], cwd=ROOT, env=env)
    beat = subprocess.Popen([celery, "-A", "celery_app", "beat", "--loglevel", "WARNING",
                             "--schedule", str(tmp_path / "beat-schedule")], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while heartbeat_age(source="beat") is None and time.monotonic() < deadline:
            assert worker.poll() is None and beat.poll() is None
            time.sleep(0.5)
        age = heartbeat_age(source="beat")
        assert age is not None and age < 30
    finally:
        for proc in (beat, worker):
            proc.terminate()
        for proc in (beat, worker):
            proc.wait(timeout=30)


def test_metrics_expose_latency_picks_and_cache(client, store, settings):
    settings.METRICS_TOKEN = "scraper"
    client.get("/healthz")
    body = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scraper").content.decode()
    assert 'buddies_request_seconds_bucket{le="0.05",method="GET",status="200",view="healthz"}' in body
    assert "buddies_picks_served_total" in body and "buddies_picks_cache_total" in body


def test_the_api_answers_503_at_once_when_the_store_is_down(client, store, settings, db):
    from recsys_site.embedded import free_port
    from recsys_site.mongo import close_clients

    settings.MONGO_URI = f"mongodb://127.0.0.1:{free_port()}"
    settings.MONGO_TIMEOUT_MS = 300
    close_clients()
    try:
        response = client.get("/api/v1/playlists/1")  # a public read: no credential to check first
        assert response.status_code == 503 and response.json()["code"] == "unavailable"
        assert response["Retry-After"] == "30"
    finally:
        close_clients()


def test_unrouted_api_urls_answer_json_404(client, store, settings):
    settings.DEBUG = False  # handler404 is what production uses; DEBUG shows Django's technical page instead
    response = client.get("/api/v1/playlists/-5")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert client.get("/no-such-page").status_code == 404
