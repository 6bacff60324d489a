"""A/B experiments on picks: stable assignment, served-list logging, results with confidence intervals.

An experiment (``settings.EXPERIMENTS``, or an ``Experiment`` row edited in the admin) has variants with weights
and what each changes: the playlist re-ranking weights (``playlist_weights``) or the model version
(``model_version``, a registered version served instead of the live one). A user's variant is a pure function of
(user, experiment) — a SHA-1 hash mapped to [0, 1) — so it never flips between requests or processes.

Every served pick list is logged with its ``rec_id``, variant and items (``served``); feedback events that carry
the ``rec_id`` are joined to it for the results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from cachetools import TTLCache
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from ranker.models import Experiment
from recsys_site.mongo import get_db

from .served_log import SERVED_LOG
from .spec import spec_errors
from .stats import stats_feedback, stats_read

log = logging.getLogger(__name__)
_ADMIN_SECONDS = 5.0  # how stale the admin's experiments may be in a serving process
_admin_cache: TTLCache = TTLCache(maxsize=1, ttl=_ADMIN_SECONDS)
_admin_lock = threading.Lock()


def _admin_experiments() -> dict[str, dict[str, Any]]:
    """The admin's experiments (cached a few seconds: this is on every picks request's path)."""

    with _admin_lock:
        if "all" in _admin_cache:
            return _admin_cache["all"]
    try:
        found = {e.name: e.spec() for e in Experiment.objects.all()}
    except DatabaseError as exc:  # e.g. Django's tables not migrated in this process's database: settings only
        log.warning("admin experiments unavailable (%s); serving the settings' experiments only", exc)
        found = {}
    with _admin_lock:
        _admin_cache["all"] = found
    return found


def experiments_clear() -> None:
    """Forget the cached admin experiments (tests; after an edit that must apply at once)."""
    with _admin_lock:
        _admin_cache.clear()


def experiments() -> dict[str, dict[str, Any]]:
    """Every experiment: the settings' and the admin's (the admin's win on a shared name). A malformed one from
    the settings is a configuration error, named; a malformed admin row (the admin validates on save) is skipped."""
    out = {}
    for name, spec in settings.EXPERIMENTS.items():
        if problems := spec_errors(name, spec):
            raise ImproperlyConfigured("EXPERIMENTS: " + "; ".join(problems))
        out[name] = spec
    for name, spec in _admin_experiments().items():
        if problems := spec_errors(name, spec):
            log.error("skipping admin experiment %s: %s", name, "; ".join(problems))
            continue
        out[name] = spec
    return out


def pinned_versions() -> set[str]:
    """Model versions that some experiment's variant serves (``model_version``): the cleanup must keep them."""
    return {changes["model_version"] for spec in experiments().values()
            for changes in spec["variants"].values() if changes.get("model_version")}


def changes_digest(changes: dict[str, Any]) -> str:
    """A short, stable digest of a variant's changes: cache keys carry it, so editing a variant never serves
    lists cached under its old definition."""
    return hashlib.sha1(json.dumps(changes, sort_keys=True, default=str).encode()).hexdigest()[:8]


def assign(*, user: str, experiment: str) -> str:
    """The user's variant in ``experiment``: stable, and spread by the variants' weights."""
    return _assign(user, experiment, experiments()[experiment])


def _assign(user: str, experiment: str, spec: dict[str, Any]) -> str:
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
            variant = _assign(user, name, spec)
            changes = {k: v for k, v in spec["variants"][variant].items() if k != "weight"}
            return name, variant, changes
    return None, "control", {}


# Who asked for the lists served in this context (``app:NAME``, ``user:ID``, ``staff:NAME``: analysts filter the
# simulator's out) and when they were shown, if not now (a picks read dated by its client, ``?ts=``: the listening
# simulator's past days). Per request (a context variable), so concurrent requests never see another's.
_served_context: ContextVar[dict[str, Any] | None] = ContextVar("served_context", default=None)


@contextmanager
def served_context(*, at: datetime | None = None, credential: str | None = None) -> Iterator[None]:
    """Log the lists served inside this block as asked by ``credential`` and shown at ``at`` (None: now)."""
    token = _served_context.set({"at": at, "credential": credential})
    try:
        yield
    finally:
        _served_context.reset(token)


def served_record(*, rec_id: str, user: str, kind: str, experiment: str | None, variant: str,
                  model_version: str | None, source: str, items: list[Any]) -> None:
    """Log a served list (buffered: ``ranker.experiments.served_log``)."""
    context = _served_context.get() or {}
    doc = {"_id": rec_id, "user": user, "kind": kind, "experiment": experiment, "variant": variant,
           "model_version": model_version, "source": source, "items": items,
           "ts": context.get("at") or datetime.now(UTC)}
    if context.get("credential"):
        doc["credential"] = context["credential"]
    SERVED_LOG.record(doc)


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


def _diff_ci(p1: float, ci1: list[float] | None, p2: float, ci2: list[float] | None) -> list[float] | None:
    """95 % interval of the difference p1 - p2 of two independent proportions, from their Wilson intervals
    (Newcombe's hybrid score method: as well-behaved near 0 and 1 as the intervals it is built from)."""
    if ci1 is None or ci2 is None:
        return None
    d = p1 - p2
    low = d - math.sqrt((p1 - ci1[0]) ** 2 + (ci2[1] - p2) ** 2)
    high = d + math.sqrt((ci1[1] - p1) ** 2 + (p2 - ci2[0]) ** 2)
    return [round(low, 6), round(high, 6)]


def _mean_diff_ci(a: tuple[int, float, float], b: tuple[int, float, float], z: float = 1.96
                  ) -> tuple[float, list[float] | None]:
    """The difference of two means and its 95 % (Welch, normal) interval, from each side's count, sum and sum of
    squares (what ``experiment_stats`` keeps)."""
    (n1, s1, q1), (n2, s2, q2) = a, b
    if n1 == 0 or n2 == 0:
        return 0.0, None
    d = s1 / n1 - s2 / n2
    if n1 < 2 or n2 < 2:
        return d, None
    v1 = max(q1 - s1 * s1 / n1, 0.0) / (n1 - 1)
    v2 = max(q2 - s2 * s2 / n2, 0.0) / (n2 - 1)
    half = z * math.sqrt(v1 / n1 + v2 / n2)
    return d, [round(d - half, 6), round(d + half, 6)]


def _mean_ci_from_sums(n: int, total: float, squares: float, z: float = 1.96
                       ) -> tuple[float, list[float] | None]:
    """``_mean_ci`` from the count, sum and sum of squares of the values (what ``experiment_stats`` keeps)."""
    if n == 0:
        return 0.0, None
    mean = total / n
    if n < 2:
        return mean, None
    sd = math.sqrt(max(squares - n * mean * mean, 0.0) / (n - 1))
    half = z * sd / math.sqrt(n)
    return mean, [round(mean - half, 6), round(mean + half, 6)]


def experiment_results(*, name: str) -> dict[str, Any]:
    """Per variant: users, pick lists served, click-through (a follow or a play after a pick), follow-through
    (playlist pick lists with a follow ÷ playlist pick lists served), skip rate and listening minutes per user, each
    with a 95 % confidence interval; and for each variant but the ``baseline`` ("control", else the first), its
    difference to the baseline in follow-through and in minutes per user with the difference's 95 % interval.
    ``KeyError`` for an unknown experiment.

    Read from the counters kept as lists are logged and feedback is stored (``ranker.experiments.stats``): one
    small document per variant, whatever the number of lists and events behind it."""
    spec = experiments()[name]
    SERVED_LOG.flush()  # this process's buffered lists count too
    kept = stats_read(get_db(), experiment=name)
    out: dict[str, Any] = {}
    sums: dict[str, tuple[int, float, float]] = {}
    for variant in spec["variants"]:
        row = kept.get(variant, {})
        served, users = int(row.get("picks_served", 0)), int(row.get("users", 0))
        clicked, plays, skips = int(row.get("clicked", 0)), int(row.get("plays", 0)), int(row.get("skips", 0))
        out[variant] = {"users": users, "picks_served": served,
                        "click_through": round(clicked / served, 6) if served else 0.0,
                        "click_through_ci": _wilson(clicked, served),
                        "skip_rate": round(skips / (plays + skips), 6) if plays + skips else 0.0,
                        "skip_rate_ci": _wilson(skips, plays + skips)}
        lists, followed = int(row.get("playlists_served", 0)), int(row.get("followed", 0))
        out[variant] |= {"playlists_served": lists,
                         "follow_through": round(followed / lists, 6) if lists else 0.0,
                         "follow_through_ci": _wilson(followed, lists)}
        sums[variant] = (int(row.get("ms_users", 0)), float(row.get("min_sum", 0.0)), float(row.get("min_sq", 0.0)))
        minutes, minutes_ci = _mean_ci_from_sums(*sums[variant])
        out[variant]["listening_minutes_per_user"], out[variant]["listening_minutes_ci"] = round(minutes, 6), minutes_ci
    # Each variant against the baseline ("control", else the first variant): the differences with 95 % intervals.
    baseline = "control" if "control" in out else next(iter(out), None)
    for variant, values in out.items():
        if baseline is None or variant == baseline:
            continue
        base = out[baseline]
        values["follow_through_diff"] = round(values["follow_through"] - base["follow_through"], 6)
        values["follow_through_diff_ci"] = _diff_ci(values["follow_through"], values["follow_through_ci"],
                                                    base["follow_through"], base["follow_through_ci"])
        diff, diff_ci = _mean_diff_ci(sums[variant], sums[baseline])
        values["listening_minutes_diff"], values["listening_minutes_diff_ci"] = round(diff, 6), diff_ci
    return {"experiment": name, "baseline": baseline, "variants": out}


def experiment_feedback(*, events: list[dict[str, Any]]) -> None:
    """Fold stored feedback events (those carrying a ``rec_id``) into the kept results; bounded by the batch."""
    stats_feedback(get_db(), events)
