"""Reads of the evaluation: ``manage.py evaluate``'s reports, and each version's figures for the Models page."""

from __future__ import annotations

from typing import Any

from pymongo import DESCENDING

from ranker import collections as c
from ranker.training.selectors import model_get
from recsys_site.mongo import get_db


def evaluation_latest() -> dict[str, Any] | None:
    return get_db()[c.EVALUATIONS].find_one({}, sort=[("created_at", DESCENDING)])


def evaluation_for_version(*, version: str) -> dict[str, Any] | None:
    """The newest evaluation report filed under ``version`` (``manage.py evaluate`` files it under the version live
    when it ran), or None when that version was never evaluated."""
    return get_db()[c.EVALUATIONS].find_one({"model_version": version}, sort=[("created_at", DESCENDING)])


def evaluation_versions() -> set[str]:
    """Model versions that have at least one evaluation report."""
    return {v for v in get_db()[c.EVALUATIONS].distinct("model_version") if v}


TRACK_METRIC_NAMES = ("r_precision", "r_precision_artist", "ndcg_g", "ndcg", "clicks")
PLAYLIST_METRIC_NAMES = ("hit_rate_10", "coverage_10", "novelty_10", "diversity_10", "precision_10")


def model_metrics(*, version: str) -> dict[str, float | None]:
    """One version's numbers, flat, for comparing versions: its validation and training figures from the registry,
    then (None where it has no evaluation) the served method's overall RecSys 2018 metrics and the served playlist
    picks' metrics from its newest evaluation. Empty for an unknown version."""
    doc = model_get(version=version)
    if doc is None:
        return {}
    metrics = doc.get("metrics") or {}
    data = doc.get("data") or {}
    history = doc.get("history") or []
    out: dict[str, float | None] = {
        "val_hit_rate_50": metrics.get("val_hit_rate_50"),
        "final_loss": history[-1]["loss"] if history else None,
        "bpr_epochs": metrics.get("epochs"),
        "bpr_seconds": metrics.get("seconds"),
        "users": data.get("users"),
        "tracks": data.get("items"),
        "positives": data.get("positives"),
    }
    report = evaluation_for_version(version=version) or {}
    served = ((report.get("methods") or {}).get(report.get("served") or "") or {}).get("overall") or {}
    for name in TRACK_METRIC_NAMES:
        out[name] = served.get(name)
    playlists = (report.get("playlists") or {}).get(report.get("served_playlists") or "buddies") or {}
    for name in PLAYLIST_METRIC_NAMES:
        out[f"playlists_{name}"] = playlists.get(name)
    return out
