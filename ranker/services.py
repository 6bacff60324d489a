"""Writes of the ranker package: train a candidate, register it, promote it to live.

The live model is named by one document (``model_live``), swapped with a compare-and-set update, and every
version's files are immutable once renamed into place (``ranker.artifacts``). A reader therefore always
loads a complete version, and a training that dies at any point changes nothing that is served.
"""

from __future__ import annotations

import functools
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
    """Train the served recommender on everything in the store, save it as a new version, upload it to the store
    (``model_files``) and register it.

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
        playlist_owners=np.asarray(playlists.owners, dtype=str), playlist_names=playlists.names,
        meta={"kind": KIND, "recommender": SERVED_NAME, "params": full_params, "data": interactions.snapshot(),
              "metrics": metrics, "device": device, "random_state": random_state,
              "trained_at": _now().isoformat(), "history": history, "score_histogram": histogram},
    )
    from .artifacts import upload

    path = model.save()
    upload(model.version)
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
    # The served top k, found as the precompute finds it: by candidates on a catalogue too large to score whole.
    scorer = _candidate_scorer_for(recommender) if total > 0 else None
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        liked = user_items[batch]
        if scorer is not None:
            _, top = scorer.recommend(batch, liked, k)
            values = np.clip(top[np.isfinite(top)] / total, 0.0, 1.0)
            counts += np.histogram(values, bins=edges)[0]
            continue
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
    """Record a saved version as a candidate; refused (``ModelUnavailable``) unless it is in the store whole, so that
    every registered version loads on every machine."""
    from .artifacts import check_uploaded

    manifest = check_uploaded(model.version)
    get_db()[c.MODELS].insert_one({
        "_id": model.version, "kind": KIND, "status": "candidate", "path": path, "created_at": _now(),
        "files": {"store": f"gridfs:{c.MODEL_FILES}", "count": len(manifest["files"]),
                  "bytes": sum(int(f["size"]) for f in manifest["files"])},
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
    ``RANKER_PROMOTION_TOLERANCE`` (relative), unless ``force``. Whatever ``force`` says, the version must be whole
    in the store (every byte checked against its manifest: the other machines load it from there) and load
    completely here, else ``ModelUnavailable``.
    """
    from .artifacts import verify_stored
    from .selectors import live_version, model_get

    db = get_db()
    candidate = model_get(version=version)
    if candidate is None:
        raise ValueError(f"unknown model version {version!r}")
    verify_stored(version)  # a version that is not whole in the store must never go live
    RankerModel.load(version)  # nor one that does not load whole
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
    """Remove what killed runs left and all but the newest ``keep`` versions besides the live one, here and in the
    store.

    Left by killed runs: ``.tmp-*`` directories under ``MODEL_DIR`` and stored files of versions whose upload never
    finished (no manifest), each once it is a day old (younger, it may belong to a run still going). An old version
    is removed from the store and from this machine's cache and marked ``deleted``; other machines' caches keep
    their copy until they are cleaned (it is a cache: any version directory there may be deleted at any time).
    """
    import shutil
    import time
    from datetime import timedelta

    from .artifacts import delete_stored, stored_versions
    from .selectors import live_version

    db = get_db()
    root = model_root()
    removed = []
    if root.exists():
        for tmp in root.glob(".tmp-*"):
            if time.time() - tmp.stat().st_mtime < 86_400:
                continue
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp.name)
    files = db[f"{c.MODEL_FILES}.files"]
    whole = {doc["metadata"]["version"] for doc in files.find({"metadata.manifest": True}, {"metadata.version": 1})}
    day_ago = _now() - timedelta(days=1)
    for version in sorted(stored_versions() - whole):
        if files.find_one({"metadata.version": version, "uploadDate": {"$gt": day_ago}}) is None:
            delete_stored(version)
            removed.append(f"{version} (partial upload)")
    live = live_version()
    local = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} if root.exists() else set()
    registered = {doc["_id"] for doc in db[c.MODELS].find({"kind": KIND, "status": {"$ne": "deleted"}}, {"_id": 1})}
    versions = sorted(local | whole | registered, reverse=True)
    for old in [v for v in versions if v != live][keep:]:
        shutil.rmtree(root / old, ignore_errors=True)
        delete_stored(old)
        db[c.MODELS].update_one({"_id": old}, {"$set": {"status": "deleted"}})
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
#
# The weekly precompute is planned once, done in shards (ranges of the model's user rows) that any number of
# workers take from the queue, and swapped in whole once every shard is written: a side collection renamed over
# ``picks``, so readers see the previous picks until the new set is complete and a run that dies changes nothing
# served. A shard upserts by user id, so a shard redelivered after its worker died writes the same documents again.

PICKS_TRACKS = 50
PICKS_PLAYLISTS = 10
# Dense track scores of one batch (users × tracks, float32) are held about four times over by the blend (each part,
# its scaling, the total): batches are sized to keep that under this many bytes.
PICKS_SCORE_BYTES = 512 * 2**20


def _picks_doc(user: str, version: str, tracks: Any, playlists: Any, now: datetime) -> dict[str, Any]:
    return {"_id": user, "model_version": version, "computed_at": now,
            "tracks": [{"uri": u, "score": s} for u, s in zip(tracks.tracks, tracks.scores, strict=True)],
            "tracks_source": tracks.source, "playlists": playlists.playlists, "playlists_source": playlists.source}


def picks_plan(*, model: RankerModel | None = None, shard_users: int | None = None, track_k: int = PICKS_TRACKS,
               playlist_k: int = PICKS_PLAYLISTS) -> dict[str, Any]:
    """What one precompute will do: the model version, the side collection, and the shards (user row ranges).

    JSON-able, because it travels to the workers inside each shard's task.
    """
    import uuid

    from .selectors import live_model

    model = model or live_model()
    if model is None:
        raise RuntimeError("no live ranker model: train and promote one first (manage.py train_ranker --promote)")
    size = int(shard_users or settings.PICKS_SHARD_USERS)
    if size < 1:
        raise ValueError(f"shard_users must be at least 1, not {size}")
    users = len(model.user_ids)
    return {"version": model.version, "side": f"{c.PICKS}_new_{uuid.uuid4().hex[:12]}", "users": users,
            "computed_at": _now().isoformat(), "track_k": track_k, "playlist_k": playlist_k,
            "shards": [{"start": s, "stop": min(s + size, users)} for s in range(0, users, size)]}


def _plan_model(version: str) -> RankerModel:
    """The version a plan names: the live model when it still is, else loaded (and kept for the next shard)."""
    from .selectors import live_model

    live = live_model()
    if live is not None and live.version == version:
        return live
    return _loaded_version(version)


@functools.lru_cache(maxsize=1)
def _loaded_version(version: str) -> RankerModel:
    return RankerModel.load(version)


def picks_shard(*, plan: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Compute and write the picks of the users in rows ``start``–``stop`` of the plan's model (idempotent)."""
    from pymongo import ReplaceOne

    began = time.perf_counter()
    model = _plan_model(plan["version"])
    if not 0 <= start <= stop <= len(model.user_ids):
        raise ValueError(f"shard rows {start}–{stop} are outside model {model.version}'s {len(model.user_ids)} users")
    now = datetime.fromisoformat(plan["computed_at"])
    docs, sources = picks_compute(model=model, rows=np.arange(start, stop), track_k=plan["track_k"],
                                  playlist_k=plan["playlist_k"], now=now)
    if docs:
        get_db()[plan["side"]].bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs],
                                          ordered=False)
    return {"users": len(docs), "playlist_sources": sources, "seconds": round(time.perf_counter() - began, 3)}


def picks_compute(*, model: RankerModel, rows: np.ndarray, track_k: int = PICKS_TRACKS,
                  playlist_k: int = PICKS_PLAYLISTS, now: datetime | None = None
                  ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Picks documents of the model's users at ``rows``, in batches: track scores as one matrix product per batch
    (sized by ``PICKS_SCORE_BYTES``), playlist picks with one store read per batch. Returns the documents and a
    count of users per playlist-picks source."""
    from .picks import TrackPicks, recommend_playlists_many

    now = now or _now()
    users = model.user_ids
    scorer = _candidate_scorer(model)
    dense_batch = int(max(1, min(1024, PICKS_SCORE_BYTES // max(1, 16 * len(model.item_ids)))))
    batch = dense_batch if scorer is None else 256
    docs: list[dict[str, Any]] = []
    sources: dict[str, int] = {}
    for begin in range(0, len(rows), batch):
        part = np.asarray(rows[begin:begin + batch], dtype=np.int64)
        liked = model.user_items[part]
        if scorer is None:
            ids, scores = model.recommender.recommend(part, liked, track_k)
        else:
            ids, scores = scorer.recommend(part, liked, track_k)
        playlists = recommend_playlists_many(
            users=users[part].tolist(), tracks=[liked.indices[liked.indptr[n]:liked.indptr[n + 1]].astype(np.int64)
                                              for n in range(len(part))],
            k=playlist_k, model=model)
        for n, row in enumerate(part):
            keep = ids[n] >= 0
            tracks = TrackPicks(tracks=model.item_ids[ids[n][keep]].tolist(),
                                scores=[round(float(x), 6) for x in scores[n][keep]], source="model",
                                model_version=model.version)
            sources[playlists[n].source] = sources.get(playlists[n].source, 0) + 1
            docs.append(_picks_doc(str(users[row]), model.version, tracks, playlists[n], now))
    return docs, sources


_SCORERS: dict[str, Any] = {}


def _candidate_scorer_for(recommender: Any) -> Any:
    """Above ``PICKS_DENSE_MAX_ITEMS`` tracks, a ``ranker.candidates.DeviceScorer`` (exact, in batched matrix
    products) where ``ranker.device`` picks a GPU, else a ``CandidateScorer`` (FAISS candidates, then exact
    scores); None (dense scoring in numpy) below it, or for a recommender neither can score."""
    from .candidates import CandidateScorer, DeviceScorer, Unsupported
    from .device import resolve_device

    if recommender.n_items <= settings.PICKS_DENSE_MAX_ITEMS:
        return None
    try:
        device = resolve_device()
        if device.type == "cuda":
            return DeviceScorer(recommender, device=device)
        return CandidateScorer(recommender)
    except Unsupported as exc:
        log.warning("scoring densely: %s", exc)
        return None


def _candidate_scorer(model: RankerModel) -> Any:
    """``_candidate_scorer_for`` the model's recommender, built once per model version (its indexes take seconds)."""
    if model.version not in _SCORERS:
        _SCORERS.clear()
        _SCORERS[model.version] = _candidate_scorer_for(model.recommender)
    return _SCORERS[model.version]


def picks_swap(*, plan: dict[str, Any], shard_metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Put a complete precompute in place of ``picks`` in one rename; refused (and nothing changes) if any of the
    plan's users has no document, e.g. a shard that never ran."""
    db = get_db()
    written = db[plan["side"]].count_documents({})
    if written != plan["users"]:
        raise RuntimeError(f"picks precompute {plan['side']} holds {written:,} of {plan['users']:,} users; "
                           "the previous picks keep serving")
    if written:
        db[plan["side"]].rename(c.PICKS, dropTarget=True)
    sources: dict[str, int] = {}
    for metrics in shard_metrics or []:
        for source, count in (metrics.get("playlist_sources") or {}).items():
            sources[source] = sources.get(source, 0) + count
    summary = {"users": written, "model_version": plan["version"], "track_k": plan["track_k"],
               "playlist_k": plan["playlist_k"], "playlist_sources": sources, "shards": len(plan["shards"])}
    db[c.PICKS_STATE].replace_one({"_id": "picks"}, {"_id": "picks", **summary,
                                                     "computed_at": datetime.fromisoformat(plan["computed_at"])},
                                  upsert=True)
    return summary


def picks_discard(*, plan: dict[str, Any]) -> None:
    """Drop an unfinished precompute's side collection (the served picks are untouched)."""
    get_db()[plan["side"]].drop()


def picks_precompute(*, model: RankerModel | None = None, track_k: int = PICKS_TRACKS,
                     playlist_k: int = PICKS_PLAYLISTS, shard_users: int | None = None, show_progress: bool = False,
                     callback: Callback | None = None) -> dict[str, Any]:
    """Every user's track and playlist picks from ``model`` (default: the live one), in this process, swapped in
    whole. The weekly job runs the same plan, shards and swap across workers (``recsys_site.job_definitions``)."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    plan = picks_plan(model=model, shard_users=shard_users, track_k=track_k, playlist_k=playlist_k)
    metrics = []
    done = 0
    bar = tqdm(total=plan["users"], disable=not show_progress, unit="user", desc="picks")
    try:
        for shard in plan["shards"]:
            metrics.append(picks_shard(plan=plan, **shard))
            done += shard["stop"] - shard["start"]
            bar.update(shard["stop"] - shard["start"])
            if callback:
                callback(done, time.perf_counter() - started, {"users": done, "share": done / max(plan["users"], 1)})
        bar.close()
        summary = picks_swap(plan=plan, shard_metrics=metrics)
    except BaseException:
        picks_discard(plan=plan)
        raise
    return {**summary, "seconds": round(time.perf_counter() - started, 3)}


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
    doc = _picks_doc(user, model.version, tracks, playlists, _now()) | {"refreshed": True, "liked_tracks": len(liked)}
    get_db()[c.PICKS].replace_one({"_id": user}, doc, upsert=True)
    from recsys_site import cache

    cache.forget_user(user)
    return doc
