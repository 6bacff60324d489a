"""Training the learned playlist ranker from the store's feedback, and swapping it in (``docs/adr/0014``).

What it learns from, read through the owners' selectors:
* **positives**: playlists a user follows now (follow events, minus later unfollows), and playlists *played
  through*: a playlist of a served playlist list whose tracks the user then played ``PLAY_POSITIVE_MS`` or longer
  (or liked), at least ``PLAYLIST_RANKER_PLAYED_THROUGH`` of them, under that list's ``rec_id`` (from that playlist,
  when the events name the ``playlist`` they were played from);
* **opened**: the playlists of a served list with a track event from them (``_Feedback.examined``), what the
  feature weights learn from;
* **hard negatives** (the BPR's): playlists a user was shown in a served playlist list and did not engage with;
* **impressions**: how often each playlist was shown (the exploration posteriors).

The served lists with an outcome (a playlist opened, by a track event from it, or followed) are split by their place
in time order: the oldest half trains a first playlist BPR, whose scores on the next 30 % fit the feature weights
(logistic regression of "followed" over the playlists opened; within-list pairs for lists known by their follows
alone), out of time so the BPR's in-sample fit does not inflate its own weight; the newest 20 % are held out and
score the learned ranking against the hand-set one (within-list pairwise AUC, hit@1). The BPR served is then
retrained on all the feedback and the weights refit on the newest half.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import gridfs
import numpy as np
from django.conf import settings

from ingestion.feedback.rules import track_signal
from ingestion.feedback.selectors import event_iter
from ingestion.selectors import users_playlist_tracks
from pairing.selectors import buddies_for_users
from ranker import collections as c
from ranker.experiments.selectors import served_lists_iter
from ranker.recommenders.device import resolve_device
from ranker.recommenders.explore import FollowPosteriors, follow_posteriors_fit
from ranker.recommenders.playlist_ranker import (
    DEFAULT_PARAMS,
    FEATURES,
    LearnedWeights,
    PlaylistBPR,
    PlaylistRanker,
    follow_rate,
    logistic_fit,
    pairwise_auc,
    playlist_bpr_fit,
)
from ranker.recommenders.playlists import PlaylistWeights
from ranker.training.artifacts import RankerModel, new_version
from ranker.training.selectors import live_model
from recsys_site.mongo import get_db

from .selectors import KIND, playlist_ranker_live_clear, playlist_ranker_live_version

log = logging.getLogger(__name__)

FIT_FROM, HOLD_OUT_FROM = 0.5, 0.8  # time quantiles of the informative lists: BPR | weights | held out


def _now() -> datetime:
    return datetime.now(UTC)


class _Feedback:
    """What the store says about playlists and users, in the live track model's indices."""

    def __init__(self, model: RankerModel) -> None:
        self.model = model
        self.lists: list[dict[str, Any]] = []  # user, pids, rows, ts of each served playlist list
        self.positive: dict[tuple[str, int], datetime] = {}  # (user, pid) → when it became a positive
        self.follows: dict[int, int] = {}  # pid → users following it now
        self.follow_ts: dict[tuple[str, int], datetime] = {}  # (user, pid) followed now → since when
        self.impressions: dict[int, int] = {}
        self.history: dict[str, list[tuple[datetime, int]]] = defaultdict(list)  # user → (ts, track) liked
        # rec_id → the playlists of that served list the user opened: those with a track event (a play, skip or like)
        # from them under its rec_id. Lists with no track event are absent: nothing says what was looked at.
        self.examined: dict[str, set[int]] = {}
        self.follow_events = 0
        self.played_through = 0


def _read_feedback(model: RankerModel) -> _Feedback:
    fb = _Feedback(model)
    by_rec: dict[str, dict[str, Any]] = {}
    for doc in served_lists_iter(kind="playlists"):
        pids = [int(p) for p in doc.get("items") or [] if isinstance(p, int) and not isinstance(p, bool)]
        if not pids or not doc.get("user") or doc.get("ts") is None:
            continue
        entry = {"rec_id": doc["_id"], "user": doc["user"], "pids": pids, "ts": _aware(doc["ts"])}
        fb.lists.append(entry)
        by_rec[doc["_id"]] = entry
        for pid in pids:
            fb.impressions[pid] = fb.impressions.get(pid, 0) + 1
    fb.lists.sort(key=lambda e: e["ts"])
    # Feedback is dated by the list it answers where it names one (the server's clock, as the lists are): a client
    # may stamp its events with its own clock, and a play must never count as known before the list it came from.
    shown_at = {rec: entry["ts"] for rec, entry in by_rec.items()}
    for doc in served_lists_iter(kind="tracks"):
        if doc.get("ts") is not None:
            shown_at[doc["_id"]] = _aware(doc["ts"])

    follow_events = sorted(event_iter(kinds=("follow", "unfollow")), key=lambda e: _aware(e["ts"]))
    following: dict[tuple[str, int], datetime] = {}
    for event in follow_events:
        key = (event["user"], event.get("playlist"))
        if key[1] is None:
            continue
        if event["kind"] == "follow":
            fb.follow_events += 1
            # A follow answering a served list dates from that list: what the user was shown then made it.
            shown = by_rec.get(event.get("rec_id"))
            following.setdefault(key, shown["ts"] if shown is not None else _aware(event["ts"]))
        else:
            following.pop(key, None)
    fb.follow_ts = following
    for (user, pid), ts in following.items():
        fb.follows[pid] = fb.follows.get(pid, 0) + 1
        fb.positive[(user, pid)] = ts

    items = model.item_index
    # Per served list, its track events: (track, good play, the playlist it was played from when the client says).
    answered: dict[str, list[tuple[int, bool, int | None]]] = defaultdict(list)
    for event in event_iter(kinds=("play", "skip", "like")):
        track = items.get(event.get("track"))
        if track is None:
            continue
        good = track_signal(event["kind"], event.get("ms_played")) > 0
        rec = event.get("rec_id")
        ts = shown_at.get(rec) or _aware(event["ts"])
        if good:
            fb.history[event["user"]].append((ts, track))
        if rec in by_rec and by_rec[rec]["user"] == event["user"]:
            context = event.get("playlist")
            answered[rec].append((track, good, context if isinstance(context, int) else None))
    need = int(settings.PLAYLIST_RANKER_PLAYED_THROUGH)
    rows = model.playlist_row
    for rec, heard in answered.items():
        entry = by_rec[rec]
        fb.examined[rec] = set()
        for pid in entry["pids"]:
            row = rows.get(pid)
            if row is None:
                continue
            holds = set(model.playlist_items.indices[model.playlist_items.indptr[row]:
                                                     model.playlist_items.indptr[row + 1]].tolist())
            # A track event names the playlist it came from, or else is credited to every shown one holding it.
            mine = [(t, good) for t, good, context in heard if context == pid or (context is None and t in holds)]
            if mine:
                fb.examined[rec].add(pid)
            if len({t for t, good in mine if good}) >= need and (entry["user"], pid) not in fb.positive:
                fb.positive[(entry["user"], pid)] = entry["ts"]
                fb.played_through += 1
    for history in fb.history.values():
        history.sort()
    return fb


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


class _Users:
    """Each user's liked tracks as of a time (own playlists, then liked and played tracks by their time), taste
    vectors and buddies' playlists: the features are computed as they were when a list was served."""

    def __init__(self, fb: _Feedback, users: list[str]) -> None:
        self.fb, self.model = fb, fb.model
        self.space = self.model.playlist_space()
        self.base: dict[str, np.ndarray] = {}
        later = {u: {t for _, t in fb.history.get(u, [])} for u in users}
        # A user the track model does not hold starts from their own playlists' tracks. What they liked or played
        # since (feedback events) is in ``fb.history``, dated, and ``tracks`` adds it back as of a list's time.
        owned = users_playlist_tracks(users=[u for u in users if u not in self.model.user_index])
        items = self.model.item_index
        for user in users:
            if user in self.model.user_index:
                base = self.model.user_items[self.model.user_index[user]].indices.astype(np.int64)
            else:
                base = np.asarray([items[t] for t in owned[user] if t in items], dtype=np.int64)
                base = base[~np.isin(base, list(later[user]))] if later[user] else base
            self.base[user] = base
        buddies = buddies_for_users(users=users, k=PlaylistWeights().buddies)
        self.buddy_of: dict[str, dict[int, tuple[str, float]]] = {}
        for user in users:
            mine: dict[int, tuple[str, float]] = {}
            for buddy in buddies.get(user) or []:
                for r in self.model.owner_rows(buddy["user"]):
                    mine.setdefault(r, (buddy["user"], buddy["similarity"]))
            self.buddy_of[user] = mine

    def tracks(self, user: str, before: datetime | None = None) -> np.ndarray:
        extra = [t for ts, t in self.fb.history.get(user, []) if before is None or ts < before]
        return np.unique(np.concatenate([self.base[user], np.asarray(extra, dtype=np.int64)]))

    def taste(self, user: str, before: datetime | None = None) -> np.ndarray:
        return self.space.user_vectors([self.tracks(user, before)])[0]


def _hand_scores(feats: np.ndarray, weights: PlaylistWeights) -> np.ndarray:
    """The hand-set score of ``PlaylistSpace.rank`` over one list (affinity z-scored within it)."""
    aff = feats[:, FEATURES.index("affinity")]
    z = (aff - aff.mean()) / aff.std() if aff.std() > 0 else np.zeros_like(aff)
    return (weights.affinity * z + weights.familiarity * feats[:, FEATURES.index("familiarity")]
            + weights.discovery * feats[:, FEATURES.index("novelty")])


def _fit_bpr(fb: _Feedback, users: _Users, until: datetime | None, params: dict[str, Any], device: Any,
             callback: Callable[[int, float, dict[str, float]], None] | None = None) -> PlaylistBPR:
    """The playlist BPR on the positives (and the lists' hard negatives) before ``until`` (None: all)."""
    rows = fb.model.playlist_row
    pos = [(u, p) for (u, p), ts in fb.positive.items() if p in rows and (until is None or ts < until)
           and u in users.base]
    shown: dict[str, set[int]] = defaultdict(set)
    for entry in fb.lists:
        if (until is None or entry["ts"] < until) and entry["user"] in users.base:
            shown[entry["user"]].update(p for p in entry["pids"] if p in rows)
    user_ids = sorted({u for u, _ in pos} | set(shown))
    pid_ids = sorted({p for _, p in pos} | {p for s in shown.values() for p in s})
    u_at = {u: i for i, u in enumerate(user_ids)}
    p_at = {p: i for i, p in enumerate(pid_ids)}
    positive_set = {(u, p) for u, p in pos}
    hard = [np.asarray([p_at[p] for p in sorted(shown.get(u, ())) if (u, p) not in positive_set], dtype=np.int64)
            for u in user_ids]
    taste = (np.vstack([users.taste(u) for u in user_ids]) if user_ids
             else np.zeros((0, users.space.vectors.shape[1]), np.float32))
    positives = np.asarray([(u_at[u], p_at[p]) for u, p in pos], dtype=np.int64).reshape(-1, 2)
    return playlist_bpr_fit(users=np.asarray(user_ids, dtype=str), pids=np.asarray(pid_ids, dtype=np.int64),
                            taste=taste, vectors=users.space.vectors,
                            pid_rows=np.asarray([rows[p] for p in pid_ids], dtype=np.int64), positives=positives,
                            hard=hard, track_version=fb.model.version, params=params, device=device,
                            callback=callback)


def _posteriors(fb: _Feedback, until: datetime | None, seed: int) -> FollowPosteriors:
    """The follow-rate posteriors (``explore.FollowPosteriors``) from the lists served and the follows made before
    ``until`` (None: all): the ``follow_rate`` feature of a list never counts its own or later feedback."""
    if until is None:
        follows, impressions = fb.follows, fb.impressions
    else:
        follows, impressions = {}, {}
        for (_, pid), ts in fb.follow_ts.items():
            if ts < until:
                follows[pid] = follows.get(pid, 0) + 1
        for entry in fb.lists:
            if entry["ts"] < until:
                for pid in entry["pids"]:
                    impressions[pid] = impressions.get(pid, 0) + 1
    model = fb.model
    return follow_posteriors_fit(vectors=model.playlist_space().vectors, row_pids=model.playlist_ids,
                                 follows=follows, impressions=impressions, clusters=settings.PLAYLIST_EXPLORE_CLUSTERS,
                                 strength=settings.PLAYLIST_EXPLORE_PRIOR_STRENGTH, seed=seed)


def _looked_at(fb: _Feedback, entry: dict[str, Any]) -> list[int] | None:
    """The playlists of a served list whose outcome says something about them, in the list's order: the ones the
    user opened (a track event from them, ``_Feedback.examined``) and the ones they followed. A list without any
    track event says only what was followed: then, if something was, every playlist it showed (a client that sends
    follows alone), else None. Whether a playlist was followed depends on what it holds only among those the user
    opened: a playlist shown and never opened says how far down the page it was, not whether it fits (ADR 0014)."""
    rows_of = fb.model.playlist_row
    pids = [p for p in dict.fromkeys(entry["pids"]) if p in rows_of]
    followed = {p for p in pids if (entry["user"], p) in fb.follow_ts}
    if entry["rec_id"] in fb.examined:
        opened = fb.examined[entry["rec_id"]] | followed
        return [p for p in pids if p in opened] or None
    return pids if followed else None


def _list_rows(fb: _Feedback, users: _Users, lists: list[dict[str, Any]], bpr: PlaylistBPR,
               posteriors: FollowPosteriors) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """For each list with an outcome (``_looked_at``): the features of those playlists (``FEATURES``, playlist-BPR
    and follow rate filled in), which were followed, and whether the user's opening them is known (track events) or
    assumed (follows alone). The weights learn from follows only: a "played through" playlist (the BPR's other
    positive) needs no decision of the user's beyond opening it."""
    rows_of = fb.model.playlist_row
    out = []
    for entry in lists:
        pids = _looked_at(fb, entry)
        if not pids:
            continue
        label = np.asarray([(entry["user"], p) in fb.follow_ts for p in pids], dtype=bool)
        rows = np.asarray([rows_of[p] for p in pids], dtype=np.int64)
        user = entry["user"]
        tracks = users.tracks(user, entry["ts"])
        taste = users.space.user_vectors([tracks])[0]
        feats = users.space.features(user_vector=taste, user_tracks=tracks, rows=rows, buddy_of=users.buddy_of[user])
        feats[:, FEATURES.index("playlist_bpr")] = bpr.scores(user=user, taste=taste, pids=pids,
                                                              vectors=users.space.vectors[rows], same_space=True)
        feats[:, FEATURES.index("follow_rate")] = follow_rate(posteriors, pids=pids, vectors=users.space.vectors[rows])
        out.append((feats, label, entry["rec_id"] in fb.examined))
    return out


def _fit_weights(lists: list[tuple[np.ndarray, np.ndarray, bool]], l2: float) -> LearnedWeights | None:
    """The feature weights (``logistic_fit``). A list whose opened playlists are known gives labelled rows: each
    playlist opened, followed or not (P(follow | opened), comparable across users and lists). A list known only by
    its follows gives pairs within it: each followed playlist against each other one shown, as the follows say
    only which of the page was preferred. None when there is no pair and the rows are all followed or none is."""
    rows = [(f, lab) for f, lab, opened in lists if opened]
    pairs = [(f[i], f[j]) for f, lab, opened in lists if not opened
             for i in np.flatnonzero(lab) for j in np.flatnonzero(~lab)]
    labels = np.concatenate([lab for _, lab in rows]) if rows else np.zeros(0, dtype=bool)
    if not pairs and (labels.all() or not labels.any()):
        return None
    width = len(FEATURES)
    return logistic_fit(features=np.vstack([f for f, _ in rows]).reshape(-1, width) if rows else None,
                        labels=labels, positives=np.asarray([p for p, _ in pairs]).reshape(-1, width),
                        negatives=np.asarray([n for _, n in pairs]).reshape(-1, width), l2=l2)


def _evaluate(lists: list[tuple[np.ndarray, np.ndarray]], scorers: dict[str, Callable[[np.ndarray], np.ndarray]]
              ) -> dict[str, Any]:
    """Pairwise AUC and hit@1 (the list's best-scored playlist is a positive) of each scorer on held-out lists."""
    out: dict[str, Any] = {"lists": len(lists), "pairs": int(sum(int(lab.sum()) * int((~lab).sum())
                                                                 for _, lab in lists))}
    for name, scorer in scorers.items():
        pos, neg, hits = [], [], 0
        for feats, label in lists:
            s = scorer(feats)
            hits += bool(label[int(np.argmax(s))])
            for i in np.flatnonzero(label):
                pos.extend([s[i]] * int((~label).sum()))
                neg.extend(s[~label].tolist())
        auc = pairwise_auc(np.asarray(pos), np.asarray(neg))
        out[name] = {"auc": round(auc, 4) if auc is not None else None,
                     "hit_at_1": round(hits / len(lists), 4) if lists else None}
    return out


def playlist_ranker_train(*, params: dict[str, Any] | None = None, promote: bool = True,
                          callback: Callable[[int, float, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train a playlist ranker on the feedback stored so far and (``promote``) make it live.

    Returns the run's summary: ``trained`` (False with a ``reason`` when there is no live track model or not enough
    feedback: fewer than ``PLAYLIST_RANKER_MIN_FOLLOWS`` follows or ``PLAYLIST_RANKER_MIN_LISTS`` served lists with
    both a positive and a negative; nothing is written then), and otherwise the ``version``, the held-out figures
    (``evaluation``), the learned ``weights`` and the counts it learned from."""
    began = time.perf_counter()
    if unknown := set(params or {}) - set(DEFAULT_PARAMS):
        raise ValueError(f"unknown playlist ranker params {sorted(unknown)}; known: {sorted(DEFAULT_PARAMS)}")
    p = {**DEFAULT_PARAMS, **(params or {})}
    model = live_model()
    if model is None or model.bpr is None:
        return {"trained": False, "reason": "no live track model with BPR vectors: train and promote one first"}
    fb = _read_feedback(model)
    counts = {"follow_events": fb.follow_events, "follows": sum(fb.follows.values()),
              "played_through": fb.played_through, "positives": len(fb.positive), "lists": len(fb.lists)}
    candidates = sorted({e["user"] for e in fb.lists} | {u for u, _ in fb.positive})
    users = _Users(fb, candidates)
    warm = {u for u in candidates if len(users.tracks(u)) > 0}
    # The lists with an outcome: some of their playlists were opened or followed (``_looked_at``).
    informative = [e for e in fb.lists if e["user"] in warm and _looked_at(fb, e)]
    counts["informative_lists"] = len(informative)
    counts["opened_lists"] = sum(1 for e in informative if e["rec_id"] in fb.examined)
    if counts["follows"] < settings.PLAYLIST_RANKER_MIN_FOLLOWS \
            or len(informative) < settings.PLAYLIST_RANKER_MIN_LISTS:
        reason = (f"not enough feedback: {counts['follows']} follows (PLAYLIST_RANKER_MIN_FOLLOWS="
                  f"{settings.PLAYLIST_RANKER_MIN_FOLLOWS}), {len(informative)} served lists with a playlist opened "
                  f"or followed (PLAYLIST_RANKER_MIN_LISTS={settings.PLAYLIST_RANKER_MIN_LISTS})")
        return {"trained": False, "reason": reason, **counts, "seconds": round(time.perf_counter() - began, 3)}

    device = resolve_device()
    n = len(informative)
    # Split by place in time order, not by time: lists served at one instant (a simulated day's) still split.
    cut, hold = int(n * FIT_FROM), min(int(n * HOLD_OUT_FROM), n - 1)
    fit_from, hold_from = informative[cut]["ts"], informative[hold]["ts"]
    weight_lists = informative[cut:hold] or informative[cut:]
    held_out = informative[hold:]
    early = _fit_bpr(fb, users, fit_from, p, device)
    before = _posteriors(fb, fit_from, int(p["seed"]))
    late = informative[cut:]
    late_rows = _list_rows(fb, users, late, early, before)
    weights = _fit_weights(late_rows, float(p["l2"]))
    if weights is None:
        reason = (f"no outcome to learn from: of the playlists opened or followed in the newest "
                  f"{len(late)} lists, {'all' if any(lab.any() for _, lab, _ in late_rows) else 'none'} were followed")
        return {"trained": False, "reason": reason, **counts, "seconds": round(time.perf_counter() - began, 3)}
    weights_split = _fit_weights(_list_rows(fb, users, weight_lists, early, before), float(p["l2"])) or weights
    hand = PlaylistWeights()
    evaluation = _evaluate([(f, lab) for f, lab, _ in _list_rows(fb, users, held_out, early, before)
                            if lab.any() and not lab.all()], {
        "learned": weights_split.combine, "hand": lambda f: _hand_scores(f, hand),
        "playlist_bpr": lambda f: f[:, FEATURES.index("playlist_bpr")]})
    evaluation["split"] = {"bpr_before": fit_from.isoformat(), "held_out_from": hold_from.isoformat(),
                           "weight_lists": len(weight_lists)}

    final = _fit_bpr(fb, users, None, p, device, callback)
    posteriors = _posteriors(fb, None, int(p["seed"]))
    version = new_version()
    meta = {"params": p, "counts": counts, "evaluation": evaluation, "weights": weights.to_dict(),
            "weights_held_out_split": weights_split.to_dict(), "device": str(device),
            "explore": {"clusters": len(posteriors.centroids), "strength": posteriors.strength,
                        "playlists": len(posteriors.pids)}}
    ranker = PlaylistRanker(version=version, bpr=final, weights=weights, explore=posteriors, meta=meta)
    saved = playlist_ranker_save(ranker=ranker, promote=promote)
    return {"trained": True, "version": version, "live": saved["live"], "evaluation": evaluation,
            "weights": weights.to_dict(), **counts, "users": len(final.user_ids), "playlists": len(final.pids),
            "device": str(device), "seconds": round(time.perf_counter() - began, 3)}


def playlist_ranker_save(*, ranker: PlaylistRanker, promote: bool = True) -> dict[str, Any]:
    """Write a version: its file into the ``playlist_ranker_files`` bucket, then its document; with ``promote``, the
    live pointer is swapped to it (one document update: a reader sees the old version or the new, never half).
    Versions beyond the newest ``PLAYLIST_RANKER_KEEP`` (never the live one) are removed."""
    data = ranker.to_bytes()
    db = get_db()
    bucket = gridfs.GridFSBucket(db, bucket_name=c.PLAYLIST_RANKER_FILES)
    file_id = bucket.upload_from_stream(f"{ranker.version}.npz", data, metadata={"version": ranker.version})
    now = _now()
    db[c.PLAYLIST_RANKERS].insert_one({
        "_id": ranker.version, "created_at": now, "status": "candidate", "file_id": file_id,
        "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "track_version": ranker.bpr.track_version,
        "weights": ranker.weights.to_dict(), "evaluation": ranker.meta.get("evaluation"),
        "counts": ranker.meta.get("counts")})
    previous = None
    if promote:
        previous = playlist_ranker_live_version()
        db[c.MODEL_LIVE].update_one({"_id": KIND}, {"$set": {"version": ranker.version, "since": now}}, upsert=True)
        db[c.PLAYLIST_RANKERS].update_one({"_id": ranker.version}, {"$set": {"status": "live", "live_since": now}})
        if previous:
            db[c.PLAYLIST_RANKERS].update_one({"_id": previous}, {"$set": {"status": "retired"}})
        playlist_ranker_live_clear()
    removed = _cleanup(keep=int(settings.PLAYLIST_RANKER_KEEP))
    return {"version": ranker.version, "live": ranker.version if promote else playlist_ranker_live_version(),
            "previous": previous, "bytes": len(data), "removed": removed}


def _cleanup(*, keep: int) -> list[str]:
    db = get_db()
    live = playlist_ranker_live_version()
    docs = list(db[c.PLAYLIST_RANKERS].find({}, {"file_id": 1, "created_at": 1}).sort("created_at", -1))
    bucket = gridfs.GridFSBucket(db, bucket_name=c.PLAYLIST_RANKER_FILES)
    removed = []
    for doc in docs[max(keep, 1):]:
        if doc["_id"] == live:
            continue
        with contextlib.suppress(gridfs.errors.NoFile):
            bucket.delete(doc["file_id"])
        db[c.PLAYLIST_RANKERS].delete_one({"_id": doc["_id"]})
        removed.append(doc["_id"])
    return removed
