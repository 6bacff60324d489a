"""The embedded servers: start, stop exactly what was started, stale PID files, busy ports."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from recsys_site.embedded import EmbeddedRedis, EmbeddedServerError, free_port, mongo_server, pid_alive, redis_server


def test_start_and_stop_only_what_was_started(tmp_path):
    server = redis_server(tmp_path, free_port())
    url = server.start()
    pid = server.process.pid
    assert url.startswith("redis://127.0.0.1:") and server.ping()
    assert json.loads(server.pid_file.read_text())["pid"] == pid
    server.stop()
    assert not pid_alive(pid) and not server.pid_file.exists() and not server.ping()


def test_busy_port_names_the_port_and_the_variable(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(EmbeddedServerError, match=rf"port {port} .* set MONGO_URI .* or MONGO_PORT"):
            mongo_server(tmp_path, port).start()


def test_stale_pid_file_of_a_dead_process_is_recovered(tmp_path):
    server = redis_server(tmp_path, free_port())
    server.run_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    server.pid_file.write_text(json.dumps({"pid": dead.pid, "owner": dead.pid, "port": server.port}))
    server.start()
    try:
        assert json.loads(server.pid_file.read_text())["pid"] == server.process.pid
    finally:
        server.stop()


def test_orphan_of_a_crashed_owner_is_stopped_and_replaced(tmp_path):
    port = free_port()
    orphan = redis_server(tmp_path, port)
    orphan.start()
    orphan_pid = orphan.process.pid
    # Pretend the owner crashed: the PID file names an owner that no longer exists.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan.pid_file.write_text(json.dumps({"pid": orphan_pid, "owner": dead.pid, "port": port}))
    fresh = redis_server(tmp_path, port)
    fresh.start()
    try:
        assert fresh.process.pid != orphan_pid and fresh.ping()
        orphan.process.wait(timeout=10)  # reaped: it was stopped by the fresh start
        assert not pid_alive(orphan_pid)
    finally:
        fresh.stop()


def test_unusable_data_folder_is_named(tmp_path):
    server = mongo_server(tmp_path, free_port())
    server.data_dir = tmp_path / "not-a-dir"
    server.data_dir.write_text("a file where the storage folder should be")
    with pytest.raises(EmbeddedServerError, match=f"cannot create {server.data_dir} for the embedded mongodb"):
        server.start(timeout=30)


class _BrokenRedis(EmbeddedRedis):
    def command(self) -> list[str]:
        return [*super().command(), "--no-such-option", "x"]


def test_server_that_dies_at_start_shows_its_log(tmp_path):
    server = _BrokenRedis(name="redis", port=free_port(), run_dir=tmp_path, url_var="CELERY_BROKER_URL",
                          port_var="REDIS_PORT")
    with pytest.raises(EmbeddedServerError, match=r"(?s)exited with status 1.*no-such-option"):
        server.start(timeout=30)
    assert not server.pid_file.exists()


def _redis_list(url: str, key: str, value: bytes | None = None) -> list[bytes]:
    """The list at ``key`` (after pushing ``value`` onto it, if given)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        if value is not None:
            client.lpush(key, value)
        return client.lrange(key, 0, -1)
    finally:
        client.close()


def test_queued_messages_survive_a_restart_of_the_embedded_redis(tmp_path, monkeypatch):
    """A job step queued for Celery is still queued after the stack restarts (the supervisor stops Redis with
    SIGTERM) and after the Redis process is killed outright."""
    from celery import Celery

    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # it would win over the app's broker argument
    port = free_port()
    server = redis_server(tmp_path, port)
    url = server.start()
    try:
        # Not the current app: every shared task of the session would follow it to this short-lived broker.
        sender = Celery("persistence-probe", broker=url, set_as_current=False)
        sender.send_task("recsys_site.start_job", args=["weekly_refresh"], queue="default")
        sender.close()
        assert len(_redis_list(url, "default")) == 1  # the message is in the queue's list
        server.stop()  # as `make run`'s supervisor stops it on Ctrl-C

        server = redis_server(tmp_path, port)
        url = server.start()
        queued = _redis_list(url, "default")
        assert len(queued) == 1 and b"recsys_site.start_job" in queued[0], queued
        assert (tmp_path / "run" / "redis.aof").stat().st_size > 0, "the append-only file is in var/run"

        # A crash: SIGKILL a second after the write (appendfsync everysec), nothing lost.
        _redis_list(url, "probe", b"written before the crash")
        time.sleep(1.5)
        server.process.kill()
        server.process.wait(timeout=10)
        server = redis_server(tmp_path, port)
        url = server.start()
        assert _redis_list(url, "probe") == [b"written before the crash"]
        assert len(_redis_list(url, "default")) == 1
    finally:
        server.stop()
