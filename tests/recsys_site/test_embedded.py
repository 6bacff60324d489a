"""The embedded servers: start, stop exactly what was started, stale PID files, busy ports."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

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
