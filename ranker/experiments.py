"""A/B experiments on picks: stable assignment, served-list logging, results with confidence intervals.

An experiment (``settings.EXPERIMENTS``) has variants with weights and what each changes: the playlist re-ranking
weights (``playlist_weights``) or the model version (``model_version``). A user's variant is a pure function of
(user, experiment) — a SHA-1 hash mapped to [0, 1) — so it never flips between requests or processes.

Every served pick list is logged with its ``rec_id``, variant and items (``served``); feedback events that carry
the ``rec_id`` are joined to it for the results.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from recsys_site.mongo import get_db

from . import collections as c


def experiments() -> dict[str, dict[str, Any]]:
    return settings.EXPERIMENTS


def assign(*, user: str, experiment: str) -> str:
    """The user's variant in ``experiment``: stable, and spread by the variants' weights."""
    spec = experiments()[experiment]
    variants = list(spec["variants"].items())
    total = sum(float(v.get("weight", 1.0)) for _, v in variants)
    point = int.from_bytes(hashlib.sha1(f"{experiment}:{user}".encode()).digest()[:8], "big") / 2 ** 64 * total
    for name, variant in variants:
        point -= float(variant.get("weight", 1.0))
        if point < 0:
            return name
    return variants[-1][0]


def active_for(*, kind: str, user: str) -> tuple[str | None, str, dict[str, Any]]:
    """(experiment, variant, the variant's changes) for picks of ``kind``; (None, "control", {}) when none runs."""
    for name, spec in experiments().items():
        if spec.get("active", True) and kind in spec.get("applies_to", ("playlists",)):
            variant = assign(user=user, experiment=name)
            return name, variant, dict(spec["variants"][variant])
    return None, "control", {}


def served_record(*, rec_id: str, user: str, kind: str, experiment: str | None, variant: str,
                  model_version: str | None, source: str, items: list[Any]) -> None:
    get_db()[c.SERVED].insert_one({"_id": rec_id, "user": user, "kind": kind, "experiment": experiment,
                                   "variant": variant, "model_version": model_version, "source": source,
                                   "items": items, "ts": datetime.now(UTC)})


def _wilson(successes: int, n: int, z: float = 1.96) -> list[float] | None:
    """95 % Wilson score interval of a proportion (well-behaved near 0 and 1, unlike the normal one)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)]


def _mean_ci(values: list[float], z: float = 1.96) -> tuple[float, list[float] | None]:
    if not values:
        return 0.0, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = z * sd / math.sqrt(len(values))
    return mean, [round(mean - half, 6), round(mean + half, 6)]


def experiment_results(*, name: str) -> dict[str, Any]:
    """Per variant: users, pick lists served, click-through (a follow or a play after a pick), skip rate and
    listening minutes per user, each with a 95 % confidence interval. ``KeyError`` for an unknown experiment."""
    spec = experiments()[name]
    db = get_db()
    served = list(db[c.SERVED].find({"experiment": name}, {"user": 1, "variant": 1}))
    variant_of = {s["_id"]: s["variant"] for s in served}
    out: dict[str, Any] = {}
    for variant in spec["variants"]:
        lists = [s for s in served if s["variant"] == variant]
        users = {s["user"] for s in lists}
        out[variant] = {"users": len(users), "picks_served": len(lists), "_clicked": set(), "_plays": 0,
                        "_skips": 0, "_ms": dict.fromkeys(users, 0)}
    rec_ids = list(variant_of)
    for start in range(0, len(rec_ids), 100):  # short $in lists: long ones are slow on some servers
        for event in db["events"].find({"rec_id": {"$in": rec_ids[start:start + 100]}},
                                       {"rec_id": 1, "kind": 1, "ms_played": 1, "user": 1}):
            row = out[variant_of[event["rec_id"]]]
            kind = event["kind"]
            if kind in ("follow", "play", "like"):
                row["_clicked"].add(event["rec_id"])
            if kind == "play":
                row["_plays"] += 1
                row["_ms"][event["user"]] = row["_ms"].get(event["user"], 0) + (event.get("ms_played") or 0)
            elif kind == "skip":
                row["_skips"] += 1
    for row in out.values():
        clicked, plays, skips, ms = row.pop("_clicked"), row.pop("_plays"), row.pop("_skips"), row.pop("_ms")
        row["click_through"] = round(len(clicked) / row["picks_served"], 6) if row["picks_served"] else 0.0
        row["click_through_ci"] = _wilson(len(clicked), row["picks_served"])
        row["skip_rate"] = round(skips / (plays + skips), 6) if plays + skips else 0.0
        row["skip_rate_ci"] = _wilson(skips, plays + skips)
        minutes, minutes_ci = _mean_ci([v / 60_000 for v in ms.values()])
        row["listening_minutes_per_user"], row["listening_minutes_ci"] = round(minutes, 6), minutes_ci
    return {"experiment": name, "variants": out}
