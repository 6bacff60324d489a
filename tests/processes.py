"""Helpers for tests that start real processes (workers, gunicorn) and wait on what they do."""

from __future__ import annotations

import subprocess
import time


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
