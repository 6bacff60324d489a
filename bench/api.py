#!/usr/bin/env python
"""Load benchmark of the REST API: latency and errors at a constant arrival rate, against gunicorn with 2 workers
started as the product starts them (``recsys_site.stack.gunicorn_command``).

    .venv/bin/python bench/api.py [--quick] [--duration S] [--rates 100,300,1000] [--scenarios ...] [--json PATH]

Scenarios (each at every rate in ``--rates``; continuation also at ``--continuation-extra-rate`` and search also at
``--search-extra-rate``, both 50 requests/s by default, the rate of the issue's acceptance):

1. ``picks cached``: ``GET /api/v1/users/{id}/playlists/recommended?k=10`` for users whose picks were precomputed,
   after one warm-up request per user that fills the picks cache (process LRU over Redis);
2. ``picks no cache (peer)``: the same requests against a second gunicorn with both cache tiers off
   (``PICKS_CACHE_URL=""``, ``PICKS_CACHE_LOCAL_SECONDS=0``): every request reads the precomputed picks from
   MongoDB, which is what a deployment without the cache would do;
3. ``picks on the fly``: the same endpoint for users whose precomputed picks were removed, each request with a
   (user, k) the cache has never seen, so every response is computed from the live model (``source: model``);
4. ``continuation k=500`` and ``k=50``: ``POST /api/v1/recommendations/continuation`` with the name and the first
   5, 10, 25 or 100 tracks of real sample playlists;
5. ``search``: ``GET /api/v1/search?q=<text>&type=<tracks|playlists>&k=10``, the type alternating request by
   request, each query once per type. The queries are 300 distinct playlist names of the sample as stored
   (``name_norm``, a seeded choice) and the first 3-6 characters of 100 of them (type-ahead), in a seeded order.
   The response's ``source`` is ``text`` (the live model's text model) or ``none`` (a model made before text
   models: no results), so a store whose live model has no ``text.npz`` is retrained first when search runs;
6. ``overload`` (not in the default list): the on-the-fly requests at ``--overload-rate`` with ``X-Request-Start``
   as nginx stamps it, so the deadline sheds what waited too long.

The cached and peer scenarios use only users in the ``control`` arm of the default A/B experiment: the
``discovery`` arm changes the re-ranking weights, so its picks are never precomputed and the peer would compute
them instead of reading them. The on-the-fly pool has users of both arms (both compute). The response's
``source`` and ``cached`` fields are counted for every step and printed.

The load generator is an open model in this process (asyncio, one new connection per request, as gunicorn's sync
workers close every connection): request i is due at t0 + i/rate whatever happened to the earlier ones, and its
latency runs from that due time, so a slow server cannot slow the generator down and hide its own queueing
(coordinated omission). A request that has not answered within ``--timeout`` counts as an error (``timeout``);
with ``--max-inflight`` requests outstanding, a due request is not sent and counts as an error (``not_sent``).

World: unless ``MONGO_URI`` is set, an embedded SecantusDB and Redis are started on ports from ``--port-base``
with a persistent store in ``var/bench/api-store`` (git-ignored), so a re-run skips what is already done:
ingest the real MPD sample, train and promote a model, compute buddies, precompute picks. The DRF throttle is
raised to 1,000,000/min for the run (the throttle is not what is measured). Everything started is stopped at
the end, also on error or Ctrl-C. The table goes to stdout, the same figures as JSON to ``var/bench/api.json``.

The code: ``api_servers.py`` starts and stops the servers and prepares the world, ``api_load.py`` holds the
scenarios and the load generator, ``api_report.py`` the percentiles, tables, profiles and JSON; this file parses
the arguments and runs the steps.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import REPO  # bench/ is on sys.path when a script runs
from api_load import (
    CACHED,
    CONT50,
    CONT500,
    FLY,
    OVERLOAD,
    PEER,
    SEARCH,
    SHORT,
    SLUG,
    Generator,
    request_maker,
    request_material,
    warm,
)
from api_report import finish_profiles, fmt_ms, print_profiles, report, summarise
from api_servers import (
    THROTTLE,
    Web,
    World,
    cpu_snapshot,
    prepare,
    say,
    server_pids,
    start_profiles,
    start_world,
    wait_for_load,
    wait_quiet,
)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "mpd-real"
DEFAULT_STORE = REPO / "var" / "bench" / "api-store"
DEFAULT_JSON = REPO / "var" / "bench" / "api.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s steps at 20 and 50 requests/s")
    parser.add_argument("--duration", type=float, help="seconds per step (default 25; 3 with --quick)")
    parser.add_argument("--rates", help="comma-separated requests/s (default 100,300,1000; 20,50 with --quick)")
    parser.add_argument("--continuation-extra-rate", type=float, default=50,
                        help="continuation also runs at this rate (default 50; 0 for none)")
    parser.add_argument("--search-extra-rate", type=float, default=50,
                        help="search also runs at this rate (default 50; 0 for none)")
    parser.add_argument("--scenarios", default="cached,fly,cont500,cont50,search,peer",
                        help="any of cached, peer, fly, cont500, cont50, search, overload (default: all but overload)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds before a request counts as an error")
    parser.add_argument("--max-inflight", type=int, default=1000, help="outstanding requests at most (default 1000)")
    parser.add_argument("--clients", type=int, default=1000,
                        help="distinct clients the requests come from, as X-Forwarded-For (documentation addresses "
                        "2001:db8::/32), which DRF's throttle keys on (default 1000; 1 = all from 127.0.0.1)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per gunicorn worker (default: the product's WEB_THREADS; 1 = sync workers)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"MPD sample (default {DEFAULT_DATA})")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"persistent world (default {DEFAULT_STORE})")
    parser.add_argument("--port-base", type=int, default=28470,
                        help="MongoDB on this port, Redis +1, gunicorn +10 and +11 (default 28470)")
    parser.add_argument("--max-load", type=float, default=1.0,
                        help="wait (up to --load-wait s) for the 1-minute load average to fall below this first")
    parser.add_argument("--load-wait", type=float, default=600)
    parser.add_argument("--retry-writes", action="store_true",
                        help="keep pymongo's retryable writes on for the gunicorns against the embedded SecantusDB "
                        "(off by default: SecantusDB 0.7 scans its retryable-write records on every write and sorts "
                        "them once it holds 10,000, which becomes the bottleneck after ~10k API requests)")
    parser.add_argument("--web-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for both gunicorns, e.g. OPENBLAS_NUM_THREADS=1 (repeatable)")
    parser.add_argument("--profile", action="append", default=[], metavar="SCENARIO@RATE",
                        help="py-spy the gunicorn workers and SecantusDB during that step, e.g. cached@300 "
                        "(repeatable); prints the top functions, raw stacks go to the store's run/ folder")
    parser.add_argument("--overload-rate", type=float, default=270.0,
                        help="requests/s of the overload scenario: 3x the ~90/s on-the-fly capacity (default 270)")
    parser.add_argument("--prepare-only", action="store_true", help="prepare the world and stop")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write JSON (default {DEFAULT_JSON})")
    args = parser.parse_args()
    args.duration = args.duration or (3.0 if args.quick else 25.0)
    args.rates = [float(r) for r in (args.rates or ("20,50" if args.quick else "100,300,1000")).split(",")]
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in names if s not in SHORT]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SHORT)}")
    args.scenarios = [SHORT[s] for s in names]
    bad = [e for e in args.web_env if "=" not in e]
    if bad:
        parser.error(f"--web-env takes KEY=VALUE, not {bad[0]!r}")
    args.web_env = dict(e.split("=", 1) for e in args.web_env)
    profiles = set()
    for spec in args.profile:
        name, _, rate = spec.partition("@")
        if name not in SHORT or not rate:
            parser.error(f"--profile takes SCENARIO@RATE with a scenario of {', '.join(SHORT)}, not {spec!r}")
        profiles.add((SHORT[name], float(rate)))
    args.profile = profiles
    return args


def run_steps(world: World, web: Web, scenario: str, rates: list[float], args: argparse.Namespace,
              material: dict[str, Any], counter: dict[str, int]) -> list[dict[str, Any]]:
    gen = Generator(web.port, args.timeout, args.max_inflight, args.clients, token=world.token,
                    stamp=scenario == OVERLOAD)
    make = request_maker(scenario, gen, material, counter)
    rows = []
    for rate in rates:
        drained, quiet = wait_quiet(world, web)
        if not quiet:
            say(f"gunicorn still busy after {drained:.0f} s (requests of the last step queued): restarting it")
            web.stop()
            web.start()
            warm(gen, request_maker(CACHED, gen, material, counter), 20)
            if scenario in (FLY, OVERLOAD, SEARCH):  # the first computed pick or search loads the live model
                warm(gen, make, 16)
        pids = server_pids(world, web)
        load = os.getloadavg()
        say(f"{scenario} at {rate:g} requests/s for {args.duration:g} s (load {load[0]:.2f}"
            + (f", waited {drained:.0f} s for the servers to go idle" if drained > 3 else "") + ") ...")
        tag = f"{web.name}-{SLUG[scenario]}-{rate:g}"
        profiles = start_profiles(world, web, args.duration, tag) if (scenario, rate) in args.profile else []
        before = cpu_snapshot(pids)
        outcomes, not_sent, seconds = asyncio.run(gen.run(rate, args.duration, make))
        after = cpu_snapshot(pids)
        cpu = {k: after[k] - before[k] for k in after}
        cpu["others"] = max(0.0, cpu.pop("machine") - sum(cpu.values()))  # processes this run did not start
        row = summarise(scenario, rate, outcomes, not_sent, seconds, cpu, load, args.timeout)
        row["config"] = web.name
        if profiles:
            row["profile"] = finish_profiles(profiles)
            print_profiles(tag, row["profile"])
        say(f"  achieved {row['achieved_rps']:g}/s, errors {row['errors']} {row['errors_by_status'] or ''}, "
            f"p50 {fmt_ms(row['p50_ms'])} p99 {fmt_ms(row['p99_ms'])} ms, sources {row['sources']}, "
            f"cpu {row['cpu_cores']}")
        say(f"  p99 ms by second: {row['p99_ms_by_second']}")
        rows.append(row)
    return rows


def main() -> int:
    args = parse_args()
    data = args.data.expanduser().resolve()
    if not data.exists():
        sys.exit(f"bench/api.py: no MPD data at {data}\n  the real sample lives in ../shared/data/mpd-real beside "
                 "the repository; pass --data PATH")
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    world = start_world(args)
    try:
        prepared = prepare(world, data)
        if args.threads is None:
            from django.conf import settings

            args.threads = settings.WEB_THREADS
        if args.prepare_only:
            return 0
        material = request_material(args.quick)
        say(f"{material['users']:,} users, {material['control_users']:,} in the control arm; cached pool "
            f"{len(material['cached']):,}, on-the-fly pool {len(material['fly']):,}, "
            f"{len(material['bodies']):,} continuation bodies, {len(material['queries']):,} search queries")
        load_start = wait_for_load(args.max_load, args.load_wait)
        say(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)}; DRF throttle raised to "
            f"{THROTTLE} (API_THROTTLE_ANON/USER) so the throttle is not what is measured")
        started_at = datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        warmups: dict[str, Any] = {}
        counter: dict[str, int] = {}
        cont_rates = sorted({*args.rates, *([args.continuation_extra_rate] if args.continuation_extra_rate else [])})
        search_rates = sorted({*args.rates, *([args.search_extra_rate] if args.search_extra_rate else [])})
        product = [s for s in args.scenarios if s != PEER]
        if product:
            web = Web(world, "product", args.port_base + 10, args.workers, args.threads, args.web_env)
            world.webs.append(web)
            web.start()
            gen = Generator(web.port, 30, 1000, args.clients, token=world.token)
            if CACHED in product:
                say(f"warm-up: one request per cached-pool user ({len(material['cached']):,}), 4 at a time, fills "
                    "the picks cache ...")
                warmups[CACHED] = warm(gen, request_maker(CACHED, gen, material, counter), len(material["cached"]))
                say(f"  {warmups[CACHED]}")
            if {CONT500, CONT50} & set(product):
                warmups["continuation"] = warm(gen, request_maker(CONT500, gen, material, counter), 20)
                say(f"  continuation warm-up: {warmups['continuation']}")
            if SEARCH in product:
                warmups[SEARCH] = warm(gen, request_maker(SEARCH, gen, material, counter), 20)
                say(f"  search warm-up: {warmups[SEARCH]}")
            if FLY in product:
                # The first computed pick in a worker builds the model's playlist space (FAISS index, seconds):
                # pay that before measuring, as a worker that has served for a while has.
                warmups[FLY] = warm(gen, request_maker(FLY, gen, material, counter), 16)
                say(f"  on-the-fly warm-up: {warmups[FLY]}")
            for scenario in product:
                rates = (cont_rates if scenario in (CONT500, CONT50) else search_rates if scenario == SEARCH
                         else [args.overload_rate] if scenario == OVERLOAD else args.rates)
                rows += run_steps(world, web, scenario, rates, args, material, counter)
            web.stop()
            world.webs.remove(web)
        if PEER in args.scenarios:
            web = Web(world, "no-cache", args.port_base + 11, args.workers, args.threads,
                      {**args.web_env, "PICKS_CACHE_URL": "", "PICKS_CACHE_LOCAL_SECONDS": "0"})
            world.webs.append(web)
            web.start()
            gen = Generator(web.port, 30, 1000, args.clients, token=world.token)
            warmups[PEER] = warm(gen, request_maker(PEER, gen, material, counter), 200)
            say(f"  no-cache warm-up: {warmups[PEER]}")
            rows += run_steps(world, web, PEER, args.rates, args, material, counter)
            web.stop()
            world.webs.remove(web)
        load_end = os.getloadavg()
        report(args, world, prepared, material, warmups, rows, cont_rates, search_rates, started_at, load_start,
               load_end)
        return 0
    finally:
        world.stop()
        say("stopped gunicorn, SecantusDB and Redis")


if __name__ == "__main__":
    sys.exit(main())
