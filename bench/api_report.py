"""bench/api.py's report: each step's percentiles and summary, the tables, the py-spy profiles, the acceptance
lines and the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import _common  # bench/ is on sys.path when a script runs
from api_load import CACHED, CONT500, OVERLOAD, SEARCH, SEARCH_NAMES, SEARCH_PREFIXES, SEARCH_SEED, SEED_COUNTS, Outcome
from api_servers import REPO, SETTINGS, THROTTLE, World


# --- each step --------------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summarise(scenario: str, rate: float, outcomes: list[Outcome], not_sent: int, seconds: float,
              cpu: dict[str, float], load: tuple[float, float, float], timeout: float) -> dict[str, Any]:
    ok = [o for o in outcomes if o.status.startswith("2")]
    latencies = [o.latency for o in outcomes]
    errors = Counter(o.status for o in outcomes if not o.status.startswith("2"))
    if not_sent:
        errors["not_sent"] = not_sent
    sources = Counter(f"{o.source}{'/cached' if o.cached == 'true' else ''}" for o in ok)
    last = max((o.due + o.latency for o in ok), default=0.0)
    first = min((o.due for o in outcomes), default=0.0)

    def ms(q: float) -> float | None:
        value = percentile(latencies, q)
        return None if math.isnan(value) else (math.inf if math.isinf(value) else round(value * 1000, 2))

    # Where in the step the tail happened: the p99 of each second (a stall shows as one bad second, a server that
    # is too slow as every second getting worse).
    by_second: dict[int, list[float]] = {}
    for o in outcomes:
        by_second.setdefault(int(o.due - first), []).append(o.latency)
    p99_by_second = [round(percentile(v, 99) * 1000, 1) if not math.isinf(percentile(v, 99)) else None
                     for _, v in sorted(by_second.items())]

    return {
        "scenario": scenario, "target_rps": rate, "requests": len(outcomes) + not_sent, "sent": len(outcomes),
        "ok": len(ok), "achieved_rps": round(len(ok) / (last - first), 1) if ok and last > first else 0.0,
        "errors": sum(errors.values()), "errors_by_status": dict(sorted(errors.items())),
        "p50_ms": ms(50), "p95_ms": ms(95), "p99_ms": ms(99), "max_ms": ms(100),
        "ok_p99_ms": round(percentile([o.latency for o in ok], 99) * 1000, 2) if ok else None,
        "send_lag_p99_ms": round(percentile([o.lag for o in outcomes], 99) * 1000, 2) if outcomes else None,
        "seconds": round(seconds, 2), "sources": dict(sources.most_common()),
        "cpu_cores": {k: round(v / seconds, 2) for k, v in cpu.items()},
        "load_avg_before": [round(x, 2) for x in load], "timeout_s": timeout, "p99_ms_by_second": p99_by_second,
    }


# --- the tables and the JSON ------------------------------------------------------------------------------------------
def fmt_ms(value: float | None, timeout: float | None = None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return f">{timeout * 1000:,.0f}" if timeout else "timeout"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("scenario", "target rps", "achieved rps", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms",
            "server CPU", "gen CPU", "others CPU")
    body = []
    for r in rows:
        cores = r["cpu_cores"]
        server = sum(v for k, v in cores.items() if k not in ("load generator", "others"))
        body.append((r["scenario"], f"{r['target_rps']:g}", f"{r['achieved_rps']:,.1f}", f"{r['requests']:,}",
                     f"{r['errors']:,}", *(fmt_ms(r[f"{p}_ms"], r["timeout_s"]) for p in ("p50", "p95", "p99", "max")),
                     f"{server:.2f}", f"{cores['load generator']:.2f}", f"{cores.get('others', 0):.2f}"))
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def fmt(line: tuple[str, ...]) -> str:
        cells = enumerate(zip(line, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in cells)

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *(fmt(line) for line in body)])


def details(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        errors = ", ".join(f"{k}: {v:,}" for k, v in r["errors_by_status"].items()) or "none"
        sources = ", ".join(f"{k}: {v:,}" for k, v in r["sources"].items()) or "-"
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_cores"].items())
        lines.append(f"{r['scenario']} @ {r['target_rps']:g}/s: errors {errors}; sources {sources}; "
                     f"p99 of 2xx {fmt_ms(r['ok_p99_ms'])} ms; send lag p99 {fmt_ms(r['send_lag_p99_ms'])} ms; "
                     f"cores: {cpu}; load before {r['load_avg_before'][0]:.2f}")
    return "\n".join(lines)


def acceptance(rows: list[dict[str, Any]]) -> list[str]:
    out = []

    def find(scenario: str, rate: float) -> dict[str, Any] | None:
        return next((r for r in rows if r["scenario"] == scenario and r["target_rps"] == rate), None)

    for scenario, rate, limit, zero in ((CACHED, 300, 50, True), (CONT500, 50, 200, False), (SEARCH, 50, 100, False)):
        row = find(scenario, rate)
        if row is None:
            out.append(f"{scenario} at {rate}/s: not run")
            continue
        p99 = row["p99_ms"]
        ok = p99 is not None and p99 < limit and (row["errors"] == 0 or not zero)
        out.append(f"{scenario} at {rate}/s: p99 {fmt_ms(p99, row['timeout_s'])} ms (limit {limit}), "
                   f"errors {row['errors']} -> {'PASS' if ok else 'FAIL'}")
    for row in (r for r in rows if r["scenario"] == OVERLOAD):
        # Every request ends with a 200 (served, or the flagged fallback) or a 503; none times out, p99 under 1 s.
        others = {s: n for s, n in row["errors_by_status"].items() if s != "503"}
        p99 = row["p99_ms"]
        ok = not others and p99 is not None and p99 < 1000
        out.append(f"{OVERLOAD} at {row['target_rps']:g}/s: p99 {fmt_ms(p99, row['timeout_s'])} ms (limit 1000), "
                   f"answers {row['sources']} + 503 x{row['errors_by_status'].get('503', 0)}, other errors "
                   f"{others or 0} -> {'PASS' if ok else 'FAIL'}")
    return out


def worker_kind(threads: int) -> str:
    return f"gthread ({threads} threads each)" if threads > 1 else "sync"


def report(args: argparse.Namespace, world: World, prepared: dict[str, Any], material: dict[str, Any],
           warmups: dict[str, Any], rows: list[dict[str, Any]], cont_rates: list[float], search_rates: list[float],
           started_at: datetime, load_start: tuple[float, float, float], load_end: tuple[float, float, float]) -> None:
    """The same figures twice: JSON to ``--json``, and the machine, settings, table, details and acceptance lines on
    stdout."""
    facts = {**_common.machine_facts("gunicorn", "django", "djangorestframework", "pymongo", "secantusdb",
                                     "redis"),
             "server": "embedded SecantusDB + Redis" if world.embedded else "MONGO_URI"}
    out = {
        "benchmark": "bench/api.py",
        "at": started_at.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": facts,
        "load_avg": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end]},
        "settings": {"duration_s": args.duration, "rates": args.rates, "continuation_rates": cont_rates,
                     "search_rates": search_rates,
                     "timeout_s": args.timeout, "max_inflight": args.max_inflight,
                     "workers": args.workers, "threads": args.threads,
                     "web_env": args.web_env, "clients": args.clients,
                     "retry_writes": args.retry_writes or not world.embedded,
                     "django_settings": SETTINGS, "throttle": THROTTLE, "seed_counts": SEED_COUNTS,
                     "pools": {"cached": len(material["cached"]), "fly": len(material["fly"]),
                               "continuation_bodies": len(material["bodies"]),
                               "search_queries": len(material["queries"])},
                     "search_queries": {"names": SEARCH_NAMES, "prefixes": SEARCH_PREFIXES, "seed": SEARCH_SEED,
                                        "types": "tracks/playlists alternating", "k": 10}},
        "world": prepared,
        "warmups": warmups,
        "results": rows,
        "acceptance": acceptance(rows),
    }
    _common.write_json(args.json, out)
    print()
    print(f"machine: {facts['cores']} cores ({facts['cpu']}), Python {facts['python']}, gunicorn "
          f"{facts.get('gunicorn')} with {args.workers} {worker_kind(args.threads)} workers, {SETTINGS}, "
          f"SecantusDB {facts.get('secantusdb')}, load generator in the same machine (asyncio, open model)")
    print(f"load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in load_start)} at start, "
          f"{' '.join(f'{x:.2f}' for x in load_end)} at end; DRF throttle raised to {THROTTLE}; "
          f"{args.clients:,} clients (X-Forwarded-For); pymongo retryable writes "
          f"{'on' if args.retry_writes or not world.embedded else 'off'}"
          + (f"; gunicorn env {args.web_env}" if args.web_env else ""))
    print(f"{args.duration:g} s per step; latency from each request's due time; errors = non-2xx, timeouts "
          f"(> {args.timeout:g} s), connection errors, not sent (> {args.max_inflight} outstanding); CPU in "
          "cores: server = gunicorn + SecantusDB + Redis, gen = this load generator, others = the rest of the "
          "machine\n")
    print(table(rows))
    print()
    print(details(rows))
    print()
    for line in acceptance(rows):
        print(f"acceptance: {line}")
    print(f"\nJSON: {args.json}")


# --- profiles ---------------------------------------------------------------------------------------------------------
def finish_profiles(profiles: list[tuple[str, Path, subprocess.Popen]], top: int = 12) -> dict[str, Any]:
    """Per process: samples, the functions with the most samples on top of the stack (self) and the project's
    functions with the most samples anywhere on the stack (inclusive)."""
    summary: dict[str, Any] = {}
    for name, path, proc in profiles:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        own: Counter = Counter()
        inclusive: Counter = Counter()
        parts: Counter = Counter()
        total = 0
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if not count.isdigit() or not stack:
                    continue
                n = int(count)
                total += n
                frames = stack.split(";")
                own[frames[-1]] += n
                part = next((label for label, marks in BREAKDOWN if any(m in stack for m in marks)), "other")
                parts[part] += n
                for frame in set(frames):
                    if _project_frame(frame):
                        inclusive[frame] += n
        summary[name] = {"samples": total, "self_pct": _shares(own, total, top),
                         "breakdown_pct": _shares(parts, total, len(BREAKDOWN) + 1) if "worker" in name else [],
                         "project_inclusive_pct": _shares(inclusive, total, top), "raw": str(path)}
    return summary


# Where a gunicorn worker's samples are, by the first rule whose marker is on the stack (py-spy samples a worker
# whether it is on a core or waiting, so these are shares of its wall time).
BREAKDOWN = (
    ("idle (waiting for a connection)", ("SyncWorker.wait",)),
    ("close_graceful (waiting for the client to close)", ("close_graceful",)),
    ("MongoDB: known_user (user lookup)", ("known_user",)),
    ("MongoDB: served_record (A/B log insert)", ("served_record",)),
    ("MongoDB: other", ("pymongo/",)),
    ("Redis (picks cache)", ("redis/",)),
    ("model scoring and re-ranking", ("ranker/recommenders/", "ranker/recommenders/playlists.py", "numpy/", "scipy/")),
    ("DRF throttle", ("throttling",)),
    ("serializers and JSON rendering", ("Serializer", "JSONRenderer", "render")),
    ("writing the response", ("write (gunicorn",)),
)
PACKAGES = ("recsys_site/", "ingestion/", "ranker/", "pairing/", "dashboard/", "celery_app/")


def _project_frame(frame: str) -> bool:
    """py-spy writes ``function (path)``, the path shortened to the package: is it one of ours?"""
    path = frame.rpartition(" (")[2].rstrip(")")
    return path.startswith(PACKAGES) or (path.startswith(f"{REPO}/") and "/.venv/" not in path)


def _shares(counts: Counter, total: int, top: int) -> list[list[Any]]:
    return [[frame, round(100 * n / total, 1)] for frame, n in counts.most_common(top)] if total else []


def print_profiles(tag: str, summary: dict[str, Any]) -> None:
    for name, prof in summary.items():
        print(f"\nprofile {tag}, {name}: {prof['samples']:,} samples (raw stacks: {prof['raw']})")
        for title, key in (("where the wall time goes", "breakdown_pct"), ("self", "self_pct"),
                           ("project, inclusive", "project_inclusive_pct")):
            if not prof[key]:
                continue
            print(f"  {title}:")
            for frame, pct in prof[key]:
                print(f"    {pct:5.1f}%  {frame[:150]}")
