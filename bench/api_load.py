"""bench/api.py's load: the scenarios, the requests they send, and the generators that send them.

The open-model generator sends request i at t0 + i/rate whatever happened to the earlier ones (asyncio, one new
connection per request) and times it from that due time; the closed-loop warm-up sends a fixed number of requests a
few at a time. The user pools and continuation bodies come from the store the servers module prepared.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import statistics
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from typing import Any

from api_servers import fly_user

CACHED, PEER, FLY, CONT500, CONT50 = ("picks cached", "picks no cache (peer)", "picks on the fly",
                                      "continuation k=500", "continuation k=50")
OVERLOAD = "picks on the fly, overload"  # FLY's requests stamped with X-Request-Start as nginx does (deadline shed)
SEARCH = "search"
SCENARIOS = [CACHED, PEER, FLY, CONT500, CONT50, SEARCH, OVERLOAD]
SHORT = {"cached": CACHED, "peer": PEER, "fly": FLY, "cont500": CONT500, "cont50": CONT50, "search": SEARCH,
         "overload": OVERLOAD}
SLUG = {v: k for k, v in SHORT.items()}
SEED_COUNTS = (5, 10, 25, 100)
SEARCH_TYPES = ("tracks", "playlists")  # alternating, request by request
SEARCH_NAMES = 300  # distinct stored playlist names (name_norm), a seeded choice ...
SEARCH_PREFIXES = 100  # ... and the first 3-6 characters of this many of them, as type-ahead sends
SEARCH_SEED = 0
SOURCE_RE = re.compile(rb'"source": ?"([a-z_]+)"')
FALLBACK_RE = re.compile(rb'"fallback": ?"overload"')
CACHED_RE = re.compile(rb'"cached":(true|false)')


# --- what the requests are made of ------------------------------------------------------------------------------------
def request_material(quick: bool) -> dict[str, Any]:
    """User pools, continuation bodies and search queries, from the store."""
    from ranker.experiments.assign import active_for
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
    # the names as stored (ingestion.mpd.normalize_name), within the API's SEARCH_MAX_QUERY_CHARS (200)
    names = [name for doc in db["playlists"].find({}, {"name_norm": 1})
             if 0 < len(name := (doc.get("name_norm") or "").strip()) <= 200]
    return {"cached": cached, "fly": fly, "bodies": bodies, "queries": search_queries(names),
            "control_users": len(control), "users": len(users)}


def search_queries(names: list[str], count: int = SEARCH_NAMES, prefixes: int = SEARCH_PREFIXES,
                   seed: int = SEARCH_SEED) -> list[str]:
    """``count`` distinct normalised playlist names (a seeded choice among ``names``, the store's ``name_norm``)
    and the first 3-6 characters of ``prefixes`` of them (type-ahead), in one seeded order; the same list for the
    same names on every run."""
    rng = random.Random(seed)
    chosen = rng.sample(sorted(set(names)), min(count, len(set(names))))
    queries = list(chosen)
    for name in chosen[:prefixes]:
        prefix = name[:rng.randint(3, 6)].strip()
        if prefix:
            queries.append(prefix)
    rng.shuffle(queries)
    return queries


# --- the load generator -----------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    due: float
    lag: float  # send time - due time
    latency: float  # completion - due time; inf for a timeout or a connection error
    status: str
    source: str | None = None
    cached: str | None = None


class Generator:
    def __init__(self, port: int, timeout: float, max_inflight: int, clients: int = 1, token: str | None = None,
                 stamp: bool = False) -> None:
        self.port, self.timeout, self.max_inflight, self.clients = port, timeout, max_inflight, clients
        self.token, self.stamp = token, stamp
        self.inflight = 0
        self.built = 0

    def build(self, method: str, path: str, body: dict | None) -> bytes:
        # As nginx passes it (deploy/nginx.conf): the production settings redirect plain HTTP to HTTPS.
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nConnection: close\r\n"
                "X-Forwarded-Proto: https\r\n")
        if self.token:
            head += f"Authorization: Bearer {self.token}\r\n"
        if self.stamp:  # when nginx received it: the deadline counts the wait from here (recsys_site/deadline.py)
            head += f"X-Request-Start: t={time.time():.3f}\r\n"
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
                outcome.source = m.group(1).decode() + ("/shed" if FALLBACK_RE.search(body) else "")
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


# --- scenarios --------------------------------------------------------------------------------------------------------
def request_maker(scenario: str, gen: Generator, material: dict[str, Any], counter: dict[str, int]):
    if scenario in (CACHED, PEER):
        users = material["cached"]
        return lambda i: gen.build("GET", f"/api/v1/users/{users[i % len(users)]}/playlists/recommended?k=10", None)
    if scenario in (FLY, OVERLOAD):
        users = material["fly"]

        def fly(i: int) -> bytes:
            # every (user, k) once per run, across steps: the cache cannot answer, the live model computes
            j = counter[FLY] = counter.get(FLY, -1) + 1
            k = 10 + (j // len(users)) % 90
            return gen.build("GET", f"/api/v1/users/{users[j % len(users)]}/playlists/recommended?k={k}", None)

        return fly
    if scenario == SEARCH:
        queries = material["queries"]

        def search(i: int) -> bytes:
            # each query twice in a row, once per type, so that both types see every query
            q = urllib.parse.quote(queries[(i // 2) % len(queries)], safe="")
            return gen.build("GET", f"/api/v1/search?q={q}&type={SEARCH_TYPES[i % 2]}&k=10", None)

        return search
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
