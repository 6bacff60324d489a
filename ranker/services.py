"""Writes of the ranker package: train a candidate, register it, promote it to live.

The live model is named by one document (``model_live``), swapped with a compare-and-set update, and every
version's files are immutable once renamed into place (``ranker.artifacts``). A reader therefore always
loads a complete version, and a training that dies at any point changes nothing that is served.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from django.conf import settings
from pymongo.errors import DuplicateKeyError

from recsys_site.mongo import get_db

from . import collections as c
from .artifacts import KIND, RankerModel, model_root, new_version
from .data import Interactions, Playlists
from .recommenders.base import Callback
from .served import SERVED_NAME, make_served, served_params
from .title import TitleIndex

log = logging.getLogger(__name__)

PROMOTION_METRIC = "val_hit_rate_50"


class PromotionRefused(Exception):
    """The candidate validates worse than the live model (``force`` overrides)."""


def _now() -> datetime:
    return datetime.now(UTC)


def ranker_train(*, params: dict[str, Any] | None = None, show_progress: bool = False,
                 callback: Callback | None = None, random_state: int = 0) -> RankerModel:
    """Train the served recommender on everything in the store, save it as a new version, register it.

    The new version is a candidate: nothing serves it until ``model_promote``.
    """
    from .device import resolve_device

    playlists = Playlists.from_store()
    if len(playlists) == 0:
        raise ValueError("the store holds no playlists: ingest some first (manage.py ingest_mpd PATH)")
    from ingestion.selectors import event_iter

    interactions = Interactions.build(playlists=playlists, events=event_iter(kinds=("play", "skip", "like")))
    device = str(resolve_device())
    full_params = served_params(params)
    recommender = make_served(full_params, device=device, threads=settings.RANKER_THREADS,
                              random_state=random_state)
    log.info("training %s on %s (device %s)", SERVED_NAME, interactions.snapshot(), device)
    history: list[dict[str, float]] = []
    recommender.fit(interactions.positives, negatives=interactions.negatives, show_progress=show_progress,
                    callback=_recording(history, callback))
    playlist_items = playlists.matrix()
    titles = TitleIndex().fit(playlists.names, playlist_items)
    popularity = np.asarray(interactions.positives.sum(axis=0)).ravel().astype(np.float32)
    metrics = _flat_metrics(recommender)
    began = time.perf_counter()
    histogram = score_histogram(recommender=recommender, user_ids=interactions.user_ids,
                                user_items=interactions.positives)
    log.info("score histogram of %d users in %.1f s", histogram["users"], time.perf_counter() - began)
    model = RankerModel(
        version=new_version(), user_ids=interactions.user_ids, item_ids=interactions.item_ids,
        user_items=interactions.positives, item_artist=playlists.item_artist,
        item_artist_name=playlists.item_artist_name, recommender=recommender, titles=titles,
        popularity=popularity, playlist_ids=playlists.pids, playlist_items=playlist_items,
        playlist_owners=np.asarray(playlists.owners, dtype=str),
        meta={"kind": KIND, "recommender": SERVED_NAME, "params": full_params, "data": interactions.snapshot(),
              "metrics": metrics, "device": device, "random_state": random_state,
              "trained_at": _now().isoformat(), "history": history, "score_histogram": histogram},
    )
    path = model.save()
    model_register(model=model, path=str(path))
    return model


def _recording(history: list[dict[str, float]], callback: Callback | None) -> Callback:
    """A callback that keeps BPR's per-epoch metrics in ``history`` (the dashboard's training curves) and passes
    every call on to ``callback``.

    The blend hands one callback to all its parts; only BPR reports a loss per epoch (item-kNN and ALS report
    progress with no metrics), so the entries with a loss are BPR's epochs.
    """

    def record(epoch: int, elapsed: float, metrics: dict[str, float]) -> None:
        if "loss" in metrics:
            history.append({"epoch": int(epoch), "seconds": round(float(elapsed), 3),
                            **{key: round(float(value), 6) for key, value in metrics.items()}})
        if callback is not None:
            callback(epoch, elapsed, metrics)

    return record


# The score histogram recorded with each version, so that the dashboard can show how the served scores drift
# from one version to the next (KL divergence). The sample is the users whose salted SHA-1 is smallest: the same
# users in every version that knows them, unlike a random draw over a user list that changes between versions.
HISTOGRAM_USERS = 500
HISTOGRAM_K = 50  # the track picks precomputed per user (``PICKS_TRACKS``): the scores that are served
HISTOGRAM_BINS = 20
HISTOGRAM_SEED = "score-histogram-v1"


def histogram_sample(user_ids: np.ndarray, *, size: int = HISTOGRAM_USERS, seed: str = HISTOGRAM_SEED) -> np.ndarray:
    """Row indices of the (at most) ``size`` users in the fixed, seeded sample, in ascending order."""
    import hashlib

    keys = np.fromiter((int.from_bytes(hashlib.sha1(f"{seed}:{user}".encode()).digest()[:8], "big")
                        for user in user_ids.tolist()), dtype=np.uint64, count=len(user_ids))
    return np.sort(np.argsort(keys, kind="stable")[:size]).astype(np.int64)


def score_histogram(*, recommender: Any, user_ids: np.ndarray, user_items: Any, size: int = HISTOGRAM_USERS,
                    k: int = HISTOGRAM_K, bins: int = HISTOGRAM_BINS, batch_size: int = 64) -> dict[str, Any]:
    """Counts of the top-``k`` scores the recommender gives the sampled users, in ``bins`` equal bins over [0, 1].

    The blend's score is a weighted sum of per-row min-max scaled parts, so divided by the sum of the weights it
    lies in [0, 1] whatever the weights; another recommender's scores are min-max scaled per row instead. Fixed
    bins make two versions' histograms comparable bin by bin.
    """
    from .recommenders import Blend, topk
    from .recommenders.blend import minmax_rows

    rows = histogram_sample(user_ids, size=size)
    total = sum(w for _, w in recommender.components if w) if isinstance(recommender, Blend) else 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        liked = user_items[batch]
        scores = recommender.score(batch, liked).astype(np.float32)
        scores = scores / total if total > 0 else minmax_rows(scores)
        liked_rows, liked_cols = liked.nonzero()
        scores[liked_rows, liked_cols] = -np.inf  # what is served: never a track the user already has
        _, top = topk(scores, k)
        values = np.clip(top[np.isfinite(top)], 0.0, 1.0)
        counts += np.histogram(values, bins=edges)[0]
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist(), "users": int(len(rows)), "k": k,
            "scale": "blend score / sum of weights" if total > 0 else "per-user min-max"}


def _flat_metrics(recommender: Any) -> dict[str, Any]:
    """The BPR component's validation metrics at the top level: promotion compares ``val_hit_rate_50``."""
    raw = getattr(recommender, "metrics_", {}) or {}
    bpr = raw.get("bpr", raw)
    return {**{k: v for k, v in bpr.items() if not isinstance(v, dict)}, "components": raw}


def model_register(*, model: RankerModel, path: str) -> None:
    get_db()[c.MODELS].insert_one({
        "_id": model.version, "kind": KIND, "status": "candidate", "path": path, "created_at": _now(),
        "recommender": model.meta.get("recommender"), "params": model.meta.get("params"),
        "data": model.meta.get("data"), "metrics": model.meta.get("metrics"), "device": model.meta.get("device"),
        "history": model.meta.get("history") or [], "score_histogram": model.meta.get("score_histogram"),
    })


@dataclass(frozen=True)
class Promotion:
    version: str
    previous: str | None
    forced: bool


def model_promote(*, version: str, force: bool = False) -> Promotion:
    """Make ``version`` the live model, atomically.

    Refused (``PromotionRefused``) when its validation hit rate is below the live model's by more than
    ``RANKER_PROMOTION_TOLERANCE`` (relative), unless ``force``. The version must load completely first.
    """
    from .selectors import live_version, model_get

    db = get_db()
    candidate = model_get(version=version)
    if candidate is None:
        raise ValueError(f"unknown model version {version!r}")
    RankerModel.load(version)  # a version that does not load whole must never go live
    previous = live_version()
    if previous == version:
        return Promotion(version=version, previous=previous, forced=force)
    if previous is not None and not force:
        live = model_get(version=previous) or {}
        new_score = (candidate.get("metrics") or {}).get(PROMOTION_METRIC)
        old_score = (live.get("metrics") or {}).get(PROMOTION_METRIC)
        floor = None if old_score is None else old_score * (1.0 - settings.RANKER_PROMOTION_TOLERANCE)
        if floor is not None and (new_score is None or new_score < floor):
            reason = (f"{PROMOTION_METRIC} {new_score} is below the live model {previous}'s {old_score} "
                      f"(floor {floor:.4f} with tolerance {settings.RANKER_PROMOTION_TOLERANCE})")
            db[c.MODELS].update_one({"_id": version}, {"$set": {"status": "rejected", "reason": reason}})
            raise PromotionRefused(f"model {version} not promoted: {reason}; use force to override")
    now = _now()
    # Compare-and-set on the pointer: two promotions racing cannot both win, nor lose the other's update.
    try:
        swapped = db[c.MODEL_LIVE].find_one_and_update(
            {"_id": KIND, "version": previous}, {"$set": {"version": version, "since": now, "previous": previous}},
            upsert=previous is None)
    except DuplicateKeyError:
        swapped = None
    if swapped is None and previous is not None:
        raise RuntimeError(f"the live model changed while promoting {version}; try again")
    db[c.MODELS].update_one({"_id": version}, {"$set": {"status": "live", "promoted_at": now, "forced": force},
                                               "$unset": {"reason": ""}})
    if previous is not None:
        db[c.MODELS].update_one({"_id": previous}, {"$set": {"status": "retired", "retired_at": now}})
    log.info("model %s is live (was %s)%s", version, previous, " [forced]" if force else "")
    return Promotion(version=version, previous=previous, forced=force)


def model_train_and_promote(*, params: dict[str, Any] | None = None, force: bool = False,
                            show_progress: bool = False, callback: Callback | None = None) -> dict[str, Any]:
    """Train a candidate, then promote it if it is not worse: what the weekly job's first step does."""
    model = ranker_train(params=params, show_progress=show_progress, callback=callback)
    try:
        promotion = model_promote(version=model.version, force=force)
    except PromotionRefused as exc:
        return {"version": model.version, "promoted": False, "reason": str(exc), "metrics": model.meta["metrics"]}
    return {"version": model.version, "promoted": True, "previous": promotion.previous,
            "metrics": model.meta["metrics"]}


def model_files_cleanup(*, keep: int = 5) -> list[str]:
    """Remove leftover ``.tmp-*`` directories of killed trainings and all but the newest ``keep`` retired versions.

    A ``.tmp-*`` younger than a day may belong to a training still running, so it stays.
    """
    import shutil
    import time

    from .selectors import live_version

    root = model_root()
    removed = []
    if not root.exists():
        return removed
    for tmp in root.glob(".tmp-*"):
        if time.time() - tmp.stat().st_mtime < 86_400:
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp.name)
    live = live_version()
    versions = sorted((p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True)
    for old in [v for v in versions if v != live][keep:]:
        shutil.rmtree(root / old, ignore_errors=True)
        get_db()[c.MODELS].update_one({"_id": old}, {"$set": {"status": "deleted"}})
        removed.append(old)
    return removed


def evaluation_record(*, report: dict[str, Any], model_version: str | None = None) -> Any:
    """Keep an evaluation report (``manage.py evaluate --json``'s content) for the dashboard.

    The harness retrains the served recipe on a split of the store as it is now, so a report belongs to the data
    and parameters of its time rather than to one version's files: it is filed under ``model_version`` (default:
    the report's own ``model_version``, else the version live when it is recorded), which the dashboard shows it
    with.
    """
    from .selectors import live_version

    doc = json.loads(json.dumps(report, default=float))  # plain types only: numpy floats would not encode
    version = model_version or doc.get("model_version") or live_version()
    return get_db()[c.EVALUATIONS].insert_one({**doc, "model_version": version, "created_at": _now()}).inserted_id


# -- precomputed picks ------------------------------------------------------------------------------------------

PICKS_TRACKS = 50
PICKS_PLAYLISTS = 10


def _picks_doc(user: str, model: RankerModel, tracks: Any, playlists: Any, now: datetime) -> dict[str, Any]:
    return {"_id": user, "model_version": model.version, "computed_at": now,
            "tracks": [{"uri": u, "score": s} for u, s in zip(tracks.tracks, tracks.scores, strict=True)],
            "tracks_source": tracks.source, "playlists": playlists.playlists, "playlists_source": playlists.source}


def picks_precompute(*, model: RankerModel | None = None, track_k: int = PICKS_TRACKS,
                     playlist_k: int = PICKS_PLAYLISTS, show_progress: bool = False,
                     callback: Callback | None = None) -> dict[str, Any]:
    """Every user's track and playlist picks from ``model`` (default: the live one), swapped in whole.

    Written into a side collection and renamed over ``picks``: readers see the previous set until the new one is
    complete, and a run that dies leaves the previous picks serving.
    """
    import time
    import uuid

    from tqdm.auto import tqdm

    from .picks import TrackPicks, recommend_playlists
    from .selectors import live_model

    model = model or live_model()
    if model is None:
        raise RuntimeError("no live ranker model: train and promote one first (manage.py train_ranker --promote)")
    db = get_db()
    side = f"{c.PICKS}_new_{uuid.uuid4().hex[:8]}"
    started, now = time.perf_counter(), _now()
    users = model.user_ids.tolist()
    sources: dict[str, int] = {}
    bar = tqdm(total=len(users), disable=not show_progress, unit="user", desc="picks")
    try:
        for start in range(0, len(users), 256):
            rows = np.arange(start, min(start + 256, len(users)))
            # Track picks for the whole batch at once; playlist picks one user at a time.
            ids, scores = model.recommender.recommend(rows, model.user_items[rows], track_k)
            docs = []
            for n, row in enumerate(rows):
                keep = ids[n] >= 0
                tracks = TrackPicks(tracks=model.item_ids[ids[n][keep]].tolist(),
                                    scores=[round(float(x), 6) for x in scores[n][keep]], source="model",
                                    model_version=model.version)
                playlists = recommend_playlists(user=users[row], k=playlist_k, model=model)
                sources[playlists.source] = sources.get(playlists.source, 0) + 1
                docs.append(_picks_doc(users[row], model, tracks, playlists, now))
            db[side].insert_many(docs, ordered=False)
            bar.update(len(rows))
            if callback:
                callback(int(rows[-1]) + 1, time.perf_counter() - started,
                         {"users": int(rows[-1]) + 1, "share": (int(rows[-1]) + 1) / len(users)})
        bar.close()
        if users:
            db[side].rename(c.PICKS, dropTarget=True)
    except BaseException:
        db[side].drop()
        raise
    summary = {"users": len(users), "model_version": model.version, "track_k": track_k, "playlist_k": playlist_k,
               "playlist_sources": sources, "seconds": round(time.perf_counter() - started, 3)}
    db[c.PICKS_STATE].replace_one({"_id": "picks"}, {"_id": "picks", **summary, "computed_at": now}, upsert=True)
    return summary


def picks_refresh_user(*, user: str) -> dict[str, Any] | None:
    """Recompute one user's picks now, folding them in from what they like now (no retraining).

    Called when the user's feedback arrives; returns the new picks document, or None before any model is live.
    """
    from ingestion.selectors import user_liked_tracks

    from .picks import recommend_playlists, recommend_tracks
    from .selectors import live_model

    model = live_model()
    if model is None:
        return None
    liked = user_liked_tracks(user=user)
    tracks = recommend_tracks(user=user, k=PICKS_TRACKS, model=model, user_tracks=liked)
    playlists = recommend_playlists(user=user, k=PICKS_PLAYLISTS, model=model, user_tracks=liked)
    doc = _picks_doc(user, model, tracks, playlists, _now()) | {"refreshed": True, "liked_tracks": len(liked)}
    get_db()[c.PICKS].replace_one({"_id": user}, doc, upsert=True)
    from recsys_site import cache

    cache.forget_user(user)
    return doc
