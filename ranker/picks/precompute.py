"""The weekly picks precompute: planned once, done in shards by any number of workers, swapped in whole.

Also one user's picks refreshed when their feedback arrives.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
from celery import current_app
from django.conf import settings
from pymongo import ReplaceOne, UpdateOne
from pymongo.errors import PyMongoError
from tqdm.auto import tqdm

from ingestion.selectors import user_liked_tracks
from ranker import collections as c
from ranker.experiments.assign import experiment_feedback
from ranker.picks import cache
from ranker.picks.serve import (
    TrackPicks,
    playlist_ranker_tag,
    playlist_ranking,
    recommend_playlists,
    recommend_playlists_many,
    recommend_tracks,
)
from ranker.playlist_ranking.selectors import playlist_ranker_live_clear
from ranker.recommenders.base import Callback
from ranker.training.artifacts import RankerModel
from ranker.training.selectors import live_model
from ranker.training.services import picks_scorer
from recsys_site.mongo import get_db

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


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
            "tracks_source": tracks.source, "playlists": playlists.playlists, "playlists_source": playlists.source,
            "playlists_ranker": playlists.ranker}


def picks_plan(*, model: RankerModel | None = None, shard_users: int | None = None, track_k: int = PICKS_TRACKS,
               playlist_k: int = PICKS_PLAYLISTS) -> dict[str, Any]:
    """What one precompute will do: the model version, the side collection, and the shards (user row ranges).

    JSON-able, because it travels to the workers inside each shard's task.
    """

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
    live = live_model()
    if live is not None and live.version == version:
        return live
    return _loaded_version(version)


def _shard_model(plan: dict[str, Any], start: int, stop: int) -> RankerModel:
    """The plan's model, checked to hold the shard's user rows ``start``–``stop``."""
    model = _plan_model(plan["version"])
    if not 0 <= start <= stop <= len(model.user_ids):
        raise ValueError(f"shard rows {start}–{stop} are outside model {model.version}'s {len(model.user_ids)} users")
    return model


@functools.lru_cache(maxsize=1)
def _loaded_version(version: str) -> RankerModel:
    return RankerModel.load(version)


def picks_shard(*, plan: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Compute and write the picks of the users in rows ``start``–``stop`` of the plan's model (idempotent)."""

    began = time.perf_counter()
    model = _shard_model(plan, start, stop)
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


def _candidate_scorer(model: RankerModel) -> Any:
    """``picks_scorer`` for the model's recommender, built once per model version (its indexes take seconds)."""
    if model.version not in _SCORERS:
        _SCORERS.clear()
        _SCORERS[model.version] = picks_scorer(model.recommender)
    return _SCORERS[model.version]


def picks_swap(*, plan: dict[str, Any], shard_metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Put a complete precompute in place of ``picks`` in one rename; refused (and nothing changes) if any of the
    plan's users has no document, e.g. a shard that never ran."""
    db = get_db()
    written = db[plan["side"]].count_documents({})
    if written != plan["users"]:
        raise RuntimeError(f"picks precompute {plan['side']} holds {written:,} of {plan['users']:,} users; "
                           "the previous picks keep serving")
    started = datetime.fromisoformat(plan["computed_at"])
    if written:
        db[plan["side"]].rename(c.PICKS, dropTarget=True)
    replayed = _replay_refreshes(since=started)
    sources: dict[str, int] = {}
    for metrics in shard_metrics or []:
        for source, count in (metrics.get("playlist_sources") or {}).items():
            sources[source] = sources.get(source, 0) + count
    summary = {"users": written, "model_version": plan["version"], "track_k": plan["track_k"],
               "playlist_k": plan["playlist_k"], "playlist_sources": sources, "shards": len(plan["shards"]),
               "refreshes_replayed": replayed}
    db[c.PICKS_STATE].replace_one({"_id": "picks"}, {"_id": "picks", **summary,
                                                     "computed_at": datetime.fromisoformat(plan["computed_at"])},
                                  upsert=True)
    return summary


def _replay_refreshes(*, since: datetime, prune: bool = True) -> int:
    """Refresh again the users whose picks a feedback refresh rewrote while the precompute ran: the swap has just
    replaced their fresh picks with ones computed before that feedback. With ``prune``, older refresh records are
    dropped (only the weekly swap prunes: a run that started later must not drop what an earlier one still needs)."""
    db = get_db()
    users = [d["_id"] for d in db[c.PICKS_REFRESHES].find({"at": {"$gte": since}}, {"_id": 1})]
    if prune:
        db[c.PICKS_REFRESHES].delete_many({"at": {"$lt": since}})
    for user in users:
        picks_refresh_user(user=user)
    if users:
        log.info("picks: %d users refreshed during the precompute were refreshed again after the swap", len(users))
    return len(users)


# -- stored playlist picks re-ranked after a new playlist ranker --------------------------------------------------
#
# Precomputed playlist picks carry the ranker that ranked them (``playlist_ranker_tag``), and picks ranked by a
# ranker that is no longer live are computed on the fly instead (``serve_playlist_picks``). So after the daily
# playlist ranker goes live, the playlist half of every stored picks document is re-ranked in place, in shards as
# above: the track picks, which did not change, are left alone, and there is nothing to swap (each document is
# whole at every moment, ranked by the old ranker or the new).


def playlist_picks_plan(*, model: RankerModel | None = None, shard_users: int | None = None,
                        playlist_k: int = PICKS_PLAYLISTS) -> dict[str, Any] | None:
    """What re-ranking the stored playlist picks with the live playlist ranker will do (JSON-able, as
    ``picks_plan``), or None when there is nothing to do: no live track model, no stored picks, or picks ranked by
    hand (the default ranking does not use the learned ranker)."""
    model = model or live_model()
    playlist_ranker_live_clear()  # the ranker that just went live, not one this process cached before
    tag = playlist_ranker_tag(*playlist_ranking())
    if model is None or tag == "hand" or get_db()[c.PICKS].find_one({"model_version": model.version}, {"_id": 1}) \
            is None:
        return None
    plan = picks_plan(model=model, shard_users=shard_users, playlist_k=playlist_k)
    return {**{k: v for k, v in plan.items() if k not in ("side", "track_k")}, "ranker": tag}


def playlist_picks_shard(*, plan: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Re-rank the stored playlist picks of the users in rows ``start``–``stop`` of the plan's model (idempotent).
    A document of another model version, or one already ranked by the plan's ranker, is left as it is."""
    began = time.perf_counter()
    model = _shard_model(plan, start, stop)
    if playlist_ranker_tag(*playlist_ranking()) != plan["ranker"]:
        playlist_ranker_live_clear()  # this worker's cached ranker may predate the plan: read the live one now
    now = datetime.fromisoformat(plan["computed_at"])
    users = model.user_ids[start:stop].tolist()
    stale = {d["_id"] for d in get_db()[c.PICKS].find(
        {"_id": {"$in": [str(u) for u in users]}, "model_version": model.version,
         "playlists_ranker": {"$ne": plan["ranker"]}}, {"_id": 1})}
    rows = np.asarray([start + n for n, u in enumerate(users) if str(u) in stale], dtype=np.int64)
    updates = []
    for begin in range(0, len(rows), 256):
        part = rows[begin:begin + 256]
        liked = model.user_items[part]
        picks = recommend_playlists_many(
            users=[str(u) for u in model.user_ids[part]], k=plan["playlist_k"], model=model,
            tracks=[liked.indices[liked.indptr[n]:liked.indptr[n + 1]].astype(np.int64) for n in range(len(part))])
        updates += [UpdateOne({"_id": str(model.user_ids[row]), "model_version": model.version},
                              {"$set": {"playlists": p.playlists, "playlists_source": p.source,
                                        "playlists_ranker": p.ranker, "playlists_computed_at": now}})
                    for row, p in zip(part, picks, strict=True)]
    if updates:
        get_db()[c.PICKS].bulk_write(updates, ordered=False)
    return {"users": len(updates), "seconds": round(time.perf_counter() - began, 3)}


def playlist_picks_done(*, plan: dict[str, Any], shard_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """After the last shard: users whose feedback refreshed their picks while the shards ran are refreshed again
    (a shard may have written playlist picks computed before that feedback)."""
    replayed = _replay_refreshes(since=datetime.fromisoformat(plan["computed_at"]), prune=False)
    return {"users": plan["users"], "reranked": sum(m.get("users", 0) for m in shard_metrics),
            "model_version": plan["version"], "ranker": plan["ranker"], "refreshes_replayed": replayed}


def picks_discard(*, plan: dict[str, Any]) -> None:
    """Drop an unfinished precompute's side collection (the served picks are untouched)."""
    get_db()[plan["side"]].drop()


def picks_precompute(*, model: RankerModel | None = None, track_k: int = PICKS_TRACKS,
                     playlist_k: int = PICKS_PLAYLISTS, shard_users: int | None = None, show_progress: bool = False,
                     callback: Callback | None = None) -> dict[str, Any]:
    """Every user's track and playlist picks from ``model`` (default: the live one), in this process, swapped in
    whole. The weekly job runs the same plan, shards and swap across workers (``recsys_site.job_definitions``)."""

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
    model = live_model()
    if model is None:
        return None
    liked = user_liked_tracks(user=user)
    tracks = recommend_tracks(user=user, k=PICKS_TRACKS, model=model, user_tracks=liked)
    playlists = recommend_playlists(user=user, k=PICKS_PLAYLISTS, model=model, user_tracks=liked)
    doc = _picks_doc(user, model.version, tracks, playlists, _now()) | {"refreshed": True, "liked_tracks": len(liked)}
    get_db()[c.PICKS].replace_one({"_id": user}, doc, upsert=True)
    get_db()[c.PICKS_REFRESHES].replace_one({"_id": user}, {"_id": user, "at": doc["computed_at"]}, upsert=True)
    cache.forget_user(user)
    return doc


def picks_after_feedback(*, users: list[str], refresh: bool = True, events: list[dict[str, Any]] | None = None
                         ) -> None:
    """What stored feedback (or a new playlist of their own) changes for ``users``: their cached picks are forgotten,
    so the next read recomputes or reads the refreshed ones and never a stale copy, and with ``refresh`` a worker is
    asked to recompute each one's picks (``ranker.refresh_user``, on the ``refresh`` queue, at most one waiting per
    user). ``events``, the stored documents, are folded into the A/B results. Called after the events are stored: a
    broker that is down loses the refresh, never the events (the weekly run picks them up). Bounded per batch: one
    pass over the cache, one round trip to claim the refreshes, one message per distinct user."""

    if events:
        try:
            experiment_feedback(events=events)
        except PyMongoError as exc:  # the events are stored; only the kept A/B counters miss them
            log.error("could not count %d events in the experiment results: %s", len(events), exc)
    users = list(dict.fromkeys(users))
    cache.forget_users(users)
    if not refresh:
        return
    for user in cache.refresh_claim(users):
        try:
            current_app.send_task("ranker.refresh_user", args=[user], queue=settings.REFRESH_QUEUE,
                                  ignore_result=True)
        except Exception as exc:  # the events are stored; the weekly run will pick them up
            cache.refresh_started(user)
            log.warning("could not queue a picks refresh for %s: %s", user, exc)
