"""Counting what a piece of code asks the store (pymongo command monitoring) and Redis (its command statistics):
tests of bounded work count round trips and documents instead of timing anything."""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

from pymongo import monitoring


@dataclass
class Commands:
    seen: list[tuple[str, str, dict]] = field(default_factory=list)  # (command name, collection, command)

    def on(self, collection: str, name: str | None = None) -> list[dict]:
        return [cmd for n, coll, cmd in self.seen if coll == collection and (name is None or n == name)]

    def counts(self) -> Counter:
        return Counter((n, coll) for n, coll, _ in self.seen)


class _Listener(monitoring.CommandListener):
    def __init__(self) -> None:
        self.active: Commands | None = None
        self.thread: int | None = None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.active is None or threading.get_ident() != self.thread:
            return
        value = event.command.get(event.command_name)
        self.active.seen.append((event.command_name, value if isinstance(value, str) else "",
                                 dict(event.command)))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


# Registered when a test module imports this one, at collection: before the session creates any client (a
# listener applies only to clients created after it is registered). Idle, it costs one attribute test per command.
_LISTENER = _Listener()
monitoring.register(_LISTENER)


@contextmanager
def store_commands():
    """The MongoDB commands this thread sends inside the block."""
    commands = Commands()
    _LISTENER.active, _LISTENER.thread = commands, threading.get_ident()
    try:
        yield commands
    finally:
        _LISTENER.active = None


def redis_calls(client, command: str) -> int:
    """How many times the Redis server has run ``command`` since it started."""
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))
