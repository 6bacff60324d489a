"""Writes of the ranker package: train a candidate, register it, promote it to live.

The live model is named by one document (``model_live``), swapped with a compare-and-set update, and every
version's files are immutable once renamed into place (``ranker.training.artifacts``). A reader therefore always
loads a complete version, and a training that dies at any point changes nothing that is served.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from pymongo.errors import DuplicateKeyError

from ingestion.feedback.selectors import event_iter
from ranker import collections as c
from ranker.recommenders import Blend, topk
from ranker.recommenders.base import Callback
from ranker.recommenders.blend import minmax_rows
from ranker.recommenders.candidates import CandidateScorer, DeviceScorer, Unsupported
from ranker.recommenders.device import resolve_device
from ranker.recommenders.rerank import SecondStage
from ranker.recommenders.text import TextModel
from ranker.recommenders.title import TitleIndex
from recsys_site.mongo import get_db

from .artifacts import (
    KIND,
    RankerModel,
    check_uploaded,
    delete_stored,
    model_root,
    native_dir,
    new_version,
    stored_versions,
    upload,
    verify_stored,
)
from .data import Interactions, Playlists
from .second_stage import second_stage_train
from .selectors import live_version, model_get
from .served import SERVED_NAME, make_served, served_params

log = logging.getLogger(__name__)

PROMOTION_METRIC = "val_hit_rate_50"
# The RecSys 2018 metrics on which a candidate's recipe is compared with the live one's (``model_record_evaluation``)
EVALUATION_METRICS = ("r_precision", "ndcg")


class PromotionRefused(Exception):
    """The candidate validates worse than the live model, or its recipe evaluates worse than the live one's beyond
    the bootstrap interval (``force`` overrides)."""


def _now() -> datetime:
    return datetime.now(UTC)


def ranker_train(*, params: dict[str, Any] | None = None, show_progress: bool = False,
                 callback: Callback | None = None, random_state: int = 0,
                 say: Callable[[str], None] | None = None) -> RankerModel:
    """Train the served recommender on everything in the store, save it as a new version, upload it to the store
    (``model_files``) and register it. ``callback`` hears the blend's epochs, ``say`` the second stage's phases.

    The new version is a candidate: nothing serves it until ``model_promote``.
    """
    playlists = Playlists.from_store()
    if len(playlists) == 0:
        raise ValueError("the store holds no playlists: ingest some first (manage.py ingest_mpd PATH)")
    interactions = Interactions.build(playlists=playlists, events=event_iter(kinds=("play", "skip", "like")))
    device = str(resolve_device())
    full_params = served_params(params)
    recommender = make_served(full_params, device=device, threads=settings.RANKER_THREADS,
                              random_state=random_state)
    log.info("training %s on %s (device %s)", SERVED_NAME, interactions.snapshot(), device)
    history: list[dict[str, float]] = []
    recommender.fit(interactions.positives, negatives=interactions.negatives, show_progress=show_progress,
                    callback=_recording(history, callback))
    second_stage = _second_stage(playlists, full_params, device=device, random_state=random_state,
                                 show_progress=show_progress, say=say)
    playlist_items = playlists.matrix()
    titles = TitleIndex().fit(playlists.names, playlist_items)
    began = time.perf_counter()
    text = TextModel().fit(playlists.names, playlist_items, item_names=playlists.item_name,
                           item_artists=playlists.item_artist_name)
    log.info("text model: %d features in %.1f s", len(text.vocab), time.perf_counter() - began)
    popularity = np.asarray(interactions.positives.sum(axis=0)).ravel().astype(np.float32)
    metrics = _flat_metrics(recommender) | {"second_stage": second_stage.metrics_ if second_stage else None}
    began = time.perf_counter()
    histogram = score_histogram(recommender=recommender, user_ids=interactions.user_ids,
                                user_items=interactions.positives)
    log.info("score histogram of %d users in %.1f s", histogram["users"], time.perf_counter() - began)
    model = RankerModel(
        version=new_version(), user_ids=interactions.user_ids, item_ids=interactions.item_ids,
        user_items=interactions.positives, item_artist=playlists.item_artist,
        item_artist_name=playlists.item_artist_name, recommender=recommender, titles=titles,
        popularity=popularity, playlist_ids=playlists.pids, playlist_items=playlist_items,
        playlist_owners=np.asarray(playlists.owners, dtype=str), playlist_names=playlists.names, text=text,
        second_stage=second_stage,
        meta={"kind": KIND, "recommender": SERVED_NAME, "params": full_params, "data": interactions.snapshot(),
              "metrics": metrics, "device": device, "random_state": random_state,
              "trained_at": _now().isoformat(), "history": history, "score_histogram": histogram},
    )
    path = model.save()
    if second_stage is not None and settings.SECOND_STAGE_COMPILE:
        second_stage.compile(native_dir())  # this machine's cache warmed before any worker loads the version
    upload(model.version)
    model_register(model=model, path=str(path))
    return model


def _second_stage(playlists: Playlists, params: dict[str, Any], *, device: str, random_state: int,
                  show_progress: bool, say: Callable[[str], None] | None) -> SecondStage | None:
    """The second stage for a new version (``ranker.training.second_stage``), or None when the parameters turn it
    off or the store holds too few long playlists to learn one from: that version serves the blend's order."""
    cases = int(params.get("second_stage_cases") or 0)
    if not cases:
        return None
    began = time.perf_counter()
    try:
        stage = second_stage_train(
            playlists, lambda: make_served(params, device=device, threads=settings.RANKER_THREADS,
                                           random_state=random_state),
            cases=cases, folds=int(params.get("second_stage_folds") or 1), random_state=random_state,
            threads=settings.RANKER_THREADS, show_progress=show_progress, say=say)
    except ValueError as exc:
        log.warning("no second stage for this version (the blend's order is served): %s", exc)
        return None
    log.info("second stage in %.0f s: %s", time.perf_counter() - began, stage.metrics_)
    return stage


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
    rows = histogram_sample(user_ids, size=size)
    total = sum(w for _, w in recommender.components if w) if isinstance(recommender, Blend) else 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    # The served top k, found as the precompute finds it: by candidates on a catalogue too large to score whole.
    scorer = picks_scorer(recommender) if total > 0 else None
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


def picks_scorer(recommender: Any) -> Any:
    """Above ``PICKS_DENSE_MAX_ITEMS`` tracks, a ``DeviceScorer`` (exact, in batched matrix products) where
    ``resolve_device`` picks a GPU, else a ``CandidateScorer`` (FAISS candidates, then exact scores); None (dense
    scoring in numpy) below it, or for a recommender neither can score. The precompute and the score histogram
    both use it, so a version's histogram shows the scores that are served."""
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


def _flat_metrics(recommender: Any) -> dict[str, Any]:
    """The BPR component's validation metrics at the top level: promotion compares ``val_hit_rate_50``."""
    raw = getattr(recommender, "metrics_", {}) or {}
    bpr = raw.get("bpr", raw)
    return {**{k: v for k, v in bpr.items() if not isinstance(v, dict)}, "components": raw}


def model_register(*, model: RankerModel, path: str) -> None:
    """Record a saved version as a candidate; refused (``ModelUnavailable``) unless it is in the store whole, so that
    every registered version loads on every machine."""
    manifest = check_uploaded(model.version)
    get_db()[c.MODELS].insert_one({
        "_id": model.version, "kind": KIND, "status": "candidate", "path": path, "created_at": _now(),
        "files": {"store": f"gridfs:{c.MODEL_FILES}", "count": len(manifest["files"]),
                  "bytes": sum(int(f["size"]) for f in manifest["files"])},
        "recommender": model.meta.get("recommender"), "params": model.meta.get("params"),
        "data": model.meta.get("data"), "metrics": model.meta.get("metrics"), "device": model.meta.get("device"),
        "history": model.meta.get("history") or [], "score_histogram": model.meta.get("score_histogram"),
    })


def model_record_evaluation(*, version: str, evaluation: dict[str, Any]) -> None:
    """Keep a version's verdict from the training jobs' evaluation (ADR 0019) on its registry document
    (``evaluation``), where ``model_promote`` reads it: ``against`` (the version live when it was evaluated, or
    None), the candidate's overall metrics and, against a live version, ``comparison``: per metric of
    ``EVALUATION_METRICS``, the paired bootstrap of candidate − live (``diff``, ``low``, ``high``, ...). The full
    report is in ``evaluations``."""
    result = get_db()[c.MODELS].update_one({"_id": version}, {"$set": {"evaluation": {**evaluation,
                                                                                      "recorded_at": _now()}}})
    if result.matched_count == 0:
        raise ValueError(f"unknown model version {version!r}")


def evaluation_refusal(candidate: dict[str, Any], live: str) -> str | None:
    """Why the candidate's recorded evaluation refuses it, or None: refused when, against ``live`` itself, the
    whole 95 % interval of candidate − live lies below zero on any of ``EVALUATION_METRICS``. An evaluation made
    against another version (the live one changed since), or none, says nothing."""
    evaluation = candidate.get("evaluation") or {}
    if evaluation.get("against") != live:
        return None
    for metric in EVALUATION_METRICS:
        d = (evaluation.get("comparison") or {}).get(metric)
        if d is not None and d["high"] < 0:
            return (f"{metric} {d['b']:.4f} is below the live model {live}'s recipe's {d['a']:.4f}, retrained on the "
                    f"same split ({d['cases']} test playlists): diff {d['diff']:+.4f}, 95 % interval "
                    f"[{d['low']:+.4f}, {d['high']:+.4f}]")
    return None


def _hit_rate_refusal(candidate: dict[str, Any], live: str) -> str | None:
    new_score = (candidate.get("metrics") or {}).get(PROMOTION_METRIC)
    old_score = ((model_get(version=live) or {}).get("metrics") or {}).get(PROMOTION_METRIC)
    floor = None if old_score is None else old_score * (1.0 - settings.RANKER_PROMOTION_TOLERANCE)
    if floor is not None and (new_score is None or new_score < floor):
        return (f"{PROMOTION_METRIC} {new_score} is below the live model {live}'s {old_score} "
                f"(floor {floor:.4f} with tolerance {settings.RANKER_PROMOTION_TOLERANCE})")
    return None


@dataclass(frozen=True)
class Promotion:
    version: str
    previous: str | None
    forced: bool


def model_promote(*, version: str, force: bool = False) -> Promotion:
    """Make ``version`` the live model, atomically.

    Refused (``PromotionRefused``, the version marked ``rejected`` with the reason) unless ``force``, on either of
    two rules that guard different things:

    - the trained files: its validation hit rate is below the live model's by more than
      ``RANKER_PROMOTION_TOLERANCE`` (relative), e.g. a training that went wrong;
    - the recipe: its recorded evaluation (``model_record_evaluation``: its parameters and the live version's, each
      retrained on one sampled RecSys 2018 split) puts it below the live one beyond the paired-bootstrap interval
      on R-precision or NDCG (``evaluation_refusal``). Without such an evaluation against the live version
      (``EVAL_SAMPLE_PLAYLISTS=0``, the live version's parameters unknown, the live model changed since) only
      the first rule applies, as before the evaluation existed.

    Whatever ``force`` says, the version must be whole in the store (every byte checked against its manifest: the
    other machines load it from there) and load completely here, else ``ModelUnavailable``.
    """
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
        reason = _hit_rate_refusal(candidate, previous) or evaluation_refusal(candidate, previous)
        if reason is not None:
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


def model_files_cleanup(*, keep: Iterable[str] = (), min_age: timedelta = timedelta(days=1)) -> list[str]:
    """Remove what killed runs left and the versions nothing needs any more, here and in the store; what was removed.

    Kept: the live version, the one live before it (``model_live.previous``: the rollback), the versions in
    ``keep`` (those an A/B experiment pins), and every version younger than ``min_age`` (it may be a candidate whose
    run is still going). Left by killed runs: ``.tmp-*`` directories under ``MODEL_DIR`` and stored files of
    versions whose upload never finished (no manifest), each once it is ``min_age`` old. A removed version is deleted
    from the store and from this machine's cache and marked ``deleted``; other machines' caches keep their copy
    until they are cleaned (it is a cache: any version directory there may be deleted at any time).
    """
    db = get_db()
    root = model_root()
    cutoff = _now() - min_age
    removed = []
    if root.exists():
        for tmp in root.glob(".tmp-*"):
            if tmp.stat().st_mtime < cutoff.timestamp():
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp.name)
    files = db[f"{c.MODEL_FILES}.files"]
    whole = {doc["metadata"]["version"] for doc in files.find({"metadata.manifest": True}, {"metadata.version": 1})}
    for version in sorted(stored_versions() - whole):
        if files.find_one({"metadata.version": version, "uploadDate": {"$gt": cutoff}}) is None:
            delete_stored(version)
            removed.append(f"{version} (partial upload)")
    pointer = db[c.MODEL_LIVE].find_one({"_id": KIND}) or {}
    kept = {pointer.get("version"), pointer.get("previous"), *keep}
    local = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} if root.exists() else set()
    created = {doc["_id"]: doc.get("created_at") for doc in db[c.MODELS].find(
        {"kind": KIND, "status": {"$ne": "deleted"}}, {"created_at": 1})}
    for old in sorted(local | whole | set(created)):
        if old in kept or _created_at(old, created.get(old), root / old) > cutoff:
            continue
        shutil.rmtree(root / old, ignore_errors=True)
        delete_stored(old)
        db[c.MODELS].update_one({"_id": old}, {"$set": {"status": "deleted"}})
        removed.append(old)
    return removed


def _created_at(version: str, registered: datetime | None, local: Path) -> datetime:
    """When a version was made: its registry date, else the time its id begins with (``new_version``), else when
    its directory here was last changed (a stray directory is judged by its age too)."""
    if registered is not None:
        return registered if registered.tzinfo else registered.replace(tzinfo=UTC)
    try:
        return datetime.strptime(version[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        mtime = local.stat().st_mtime if local.exists() else 0.0
        return datetime.fromtimestamp(mtime, UTC)
