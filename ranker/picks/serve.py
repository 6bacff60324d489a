"""Track picks from the live model: for a user, or for a playlist being made (seed tracks and/or a title).

The order of resort, each step used only when the one before has nothing to say:
1. the model, for a user it was trained on or for seeds it knows (folded in: unknown users and new playlists
   are scored from their known tracks);
2. the tracks of playlists with the same or similar titles (the text model, ``ranker.recommenders.text``; the
   title index in versions made before it);
3. the most popular tracks.
A title with only a few seeds (``title_heavy``) gets the model's ranking fused with the text model's.

A version with a second stage (``ranker.recommenders.rerank``) replaces steps 1–2 for a playlist's continuation:
its candidates from every part and from the title, ordered by the booster (source ``reranked``); popularity still
tops a short list up. A user's own picks keep the blend's order, as the weekly precompute serves them (the second
stage is measured on continuation, and what it costs a request is in ADR 0018). Seeds are
never returned. Unknown seed URIs are reported, not fatal.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import threading
import uuid
from dataclasses import dataclass, field

import numpy as np
from cachetools import TTLCache
from django.conf import settings

from ingestion.feedback.selectors import users_followed_playlists
from ingestion.selectors import (
    UnknownUser,
    playlist_most_followed,
    playlist_summaries,
    track_top,
    user_exists,
    user_liked_tracks,
)
from pairing.selectors import buddies_for_users
from ranker.experiments.assign import active_for, changes_digest, served_record
from ranker.picks import cache
from ranker.picks.selectors import picks_for_user
from ranker.playlist_ranking.selectors import playlist_ranker_live
from ranker.recommenders import Blend, topk
from ranker.recommenders.explore import explore_info, thompson_pick
from ranker.recommenders.playlist_ranker import PlaylistRanker
from ranker.recommenders.playlists import PlaylistWeights
from ranker.recommenders.text import fuse_ranked, title_heavy
from ranker.training.artifacts import RankerModel
from ranker.training.data import rows_matrix
from ranker.training.selectors import live_model
from recsys_site.metrics import MODEL_INFO, PICKS_SERVED

log = logging.getLogger(__name__)

MAX_K = 500


@dataclass
class TrackPicks:
    tracks: list[str]
    scores: list[float]
    source: str  # reranked | model | model+title | title | popularity
    model_version: str | None
    unknown_seeds: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tracks)


def _check_k(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer from 1 to {MAX_K}, not {k!r}")
    return k


def recommend_tracks(*, user: str | None = None, seed_tracks: list[str] | None = None, title: str | None = None,
                     k: int = MAX_K, model: RankerModel | None = None,
                     user_tracks: list[str] | None = None) -> TrackPicks:
    """Up to ``k`` track URIs with scores, best first, never a seed.

    ``user`` is a user id. The model's trained row is used unless ``user_tracks`` (their liked tracks now, read
    by the caller from the store) is given: then the user is folded in from those, which is how a user the
    model never saw, or one with new likes since training, gets current picks. ``seed_tracks``/``title``
    describe a playlist being made.
    Raises ``ValueError`` for a bad ``k`` or when neither a user nor seeds nor a title is given.
    """
    _check_k(k)
    if user is None and not seed_tracks and not (title or "").strip():
        raise ValueError("give a user, seed tracks or a title")
    model = model or live_model()
    seeds = list(dict.fromkeys(seed_tracks or []))
    if model is None:
        return _popular_from_store(k, exclude=set(seeds) | set(user_tracks or []), unknown=seeds)
    items = model.item_index
    known = [items[s] for s in seeds if s in items]
    unknown = [s for s in seeds if s not in items]
    exclude = list(known)
    if user is None and model.second_stage is not None and isinstance(model.recommender, Blend):
        picks = _reranked(model, known=known, title=title, k=k, unknown=unknown)
        if picks is not None:
            return picks
    scores = None
    source = "model"
    if user is not None and user in model.user_index and not seeds and user_tracks is None:
        row = model.user_index[user]
        liked = model.user_items[[row]]
        scores = model.recommender.score(np.asarray([row]), liked)[0]
        exclude += liked.indices.tolist()
    else:
        rows = known + [items[t] for t in (user_tracks or []) if t in items]
        exclude += rows
        if rows:
            scores = model.recommender.score(None, rows_matrix([np.asarray(rows)], len(model.item_ids)))[0]
    if scores is not None and not np.isfinite(scores).any():
        scores = None
    if scores is not None and model.text is not None and title_heavy(title, len(known)):
        return _title_heavy(model, scores, title, exclude, k, unknown, n_seeds=len(known))
    if scores is None and (title or "").strip():
        # The text model where the version has one (names, n-grams, track titles and artists), else the title index.
        title_scores = (model.text or model.titles).scores([title], len(model.item_ids))[0]
        if title_scores.max() > 0:
            scores, source = title_scores, "title"
    if scores is None:
        scores, source = np.log1p(model.popularity).astype(np.float32), "popularity"
    return _top(model, scores, exclude, k, source, unknown)


def _reranked(model: RankerModel, *, known: list[int], title: str | None, k: int, unknown: list[str]
              ) -> TrackPicks | None:
    """A playlist's continuation by the second stage (None when neither its seeds nor its title give a candidate)."""
    seeds = rows_matrix([np.asarray(known, dtype=np.int64)], len(model.item_ids))
    ids, _ = model.second_stage.rank(model.recommender, seeds, k, titles=[title], text=model.text,
                                     order=[np.asarray(known, dtype=np.int64)])
    ids = ids[0][ids[0] >= 0]
    if not len(ids):
        return None
    if len(ids) < k:  # fewer candidates than asked (a title alone): popularity tops the list up
        scores = np.full(len(model.item_ids), -np.inf, dtype=np.float32)
        scores[ids] = 1.0 - np.arange(len(ids), dtype=np.float32) / max(k, 1)
        return _top(model, scores, known, k, "reranked", unknown)
    n = len(ids)
    return TrackPicks(tracks=model.item_ids[ids].tolist(), scores=np.round(1.0 - np.arange(n) / n, 6).tolist(),
                      source="reranked", model_version=model.version, unknown_seeds=unknown)


def _title_heavy(model: RankerModel, scores: np.ndarray, title: str, exclude: list[int], k: int,
                 unknown: list[str], *, n_seeds: int) -> TrackPicks:
    """A title and a few seeds: the model's ranking fused with the text model's (``fuse_ranked``), as evaluated."""
    ranked = _top(model, scores, exclude, k, "model", [])
    text_scores = model.text.scores([title], len(model.item_ids))[0]
    text_scores[np.asarray(exclude, dtype=np.int64)] = 0.0
    ids, top = topk(text_scores[None, :], k)
    text_ids = ids[0][(ids[0] >= 0) & (top[0] > 0)]
    if not len(text_ids):  # the title says nothing the text model knows: the model's picks alone
        return dataclasses.replace(ranked, unknown_seeds=unknown)
    items = model.item_index
    fused = fuse_ranked(np.asarray([items[t] for t in ranked.tracks], dtype=np.int64), text_ids,
                        n_seeds=n_seeds, k=k)
    n = len(fused)
    return TrackPicks(tracks=model.item_ids[fused].tolist(), scores=[round(1.0 - i / max(n, 1), 6) for i in range(n)],
                      source="model+title", model_version=model.version, unknown_seeds=unknown)


def _top(model: RankerModel, scores: np.ndarray, exclude: list[int], k: int, source: str,
         unknown: list[str]) -> TrackPicks:
    scores = np.array(scores, dtype=np.float32)
    scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
    ids, top = topk(scores[None, :], k)
    keep = ids[0] >= 0
    ids, top = ids[0][keep], top[0][keep]
    if len(ids) < k and source != "popularity":  # top up from popularity, never repeating
        pop = np.log1p(model.popularity).astype(np.float32)
        pop[np.concatenate([np.asarray(exclude, dtype=np.int64), ids])] = -np.inf
        extra, extra_scores = topk(pop[None, :], k - len(ids))
        mask = extra[0] >= 0
        ids = np.concatenate([ids, extra[0][mask]])
        top = np.concatenate([top, np.full(mask.sum(), -1.0, dtype=np.float32)])
    return TrackPicks(tracks=model.item_ids[ids].tolist(), scores=[round(float(s), 6) for s in top], source=source,
                      model_version=model.version, unknown_seeds=unknown)


def _popular_from_store(k: int, *, exclude: set[str], unknown: list[str]) -> TrackPicks:
    """Before any model is live: the catalogue's most-held tracks."""

    rows = [t for t in track_top(limit=k + len(exclude)) if t["_id"] not in exclude][:k]
    return TrackPicks(tracks=[t["_id"] for t in rows], scores=[float(t.get("num_playlists", 0)) for t in rows],
                      source="popularity", model_version=None, unknown_seeds=unknown)


@dataclass
class PlaylistPicks:
    playlists: list[dict]  # pid, name, owner, score, why {buddy, buddy_similarity, shared_artists, new_share}
    source: str  # model | most_followed
    model_version: str | None
    ranker: str = "hand"  # how they were ranked: ``playlist_ranker_tag``


def playlist_ranking(changes: dict | None = None) -> tuple[str, int, PlaylistRanker | None]:
    """(ranker, explore slots, the live learned ranker or None) for a variant's ``changes`` (``{}``: users outside
    any experiment, who get ``PLAYLIST_RANKER_DEFAULT`` and ``PLAYLIST_EXPLORE_SLOTS``). The learned ranker is
    loaded when the ranking or the exploration needs it."""
    changes = changes or {}
    mode = changes.get("playlist_ranker") or settings.PLAYLIST_RANKER_DEFAULT
    slots = int(changes.get("explore_slots", settings.PLAYLIST_EXPLORE_SLOTS))
    learned = playlist_ranker_live() if mode == "learned" or slots > 0 else None
    return mode, slots, learned


def playlist_ranker_tag(mode: str, slots: int, learned: PlaylistRanker | None) -> str:
    """What playlist picks were ranked with: ``hand`` or ``learned:<version>``, and ``+explore<n>`` when
    exploration slots were filled. Precomputed picks and cache keys carry it, so a new ranker never serves lists
    ranked by the old one."""
    tag = f"learned:{learned.version}" if mode == "learned" and learned is not None else "hand"
    if slots > 0 and learned is not None and learned.explore is not None:
        tag += f"+explore{slots}"
    return tag


def recommend_playlists(*, user: str, k: int = 10, weights: dict | None = None, model: RankerModel | None = None,
                        user_tracks: list[str] | None = None, changes: dict | None = None) -> PlaylistPicks:
    """Organic playlist picks for ``user``: buddies' playlists and nearest playlists, re-ranked
    (``ranker.recommenders.playlists``), by the hand-set weights or the learned ranker (``changes``: a variant's
    ``playlist_ranker`` and ``explore_slots``; the settings' defaults otherwise).

    ``user_tracks`` (their liked tracks now) overrides the model's trained row, as for ``recommend_tracks``; a
    user with no known tracks at all (cold) gets the most-followed playlists. Never the user's own playlists or
    those they follow.
    """
    model = model or live_model()
    tracks = np.zeros(0, dtype=np.int64)
    if model is not None:
        if user_tracks is not None:
            tracks = np.asarray([model.item_index[t] for t in user_tracks if t in model.item_index], dtype=np.int64)
        elif user in model.user_index:
            tracks = model.user_items[model.user_index[user]].indices.astype(np.int64)
    return recommend_playlists_many(users=[user], tracks=[tracks], k=k, weights=weights, model=model,
                                    changes=changes)[0]


def _explorer(learned: PlaylistRanker, model: RankerModel, space, user: str):
    """The exploration slots' chooser for one user: Thompson sampling over the candidates' follow-rate posteriors,
    with a generator seeded by (ranker version, user), so a user's page is stable until the next ranker."""
    seed = int.from_bytes(hashlib.sha1(f"{learned.version}:{user}".encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)

    def explore(rows: np.ndarray, slots: int) -> list[tuple[int, dict]]:
        alpha, beta, cluster = learned.explore.posterior(pids=model.playlist_ids[rows], vectors=space.vectors[rows])
        return [(i, {"explore": explore_info(alpha[i], beta[i], sample, cluster[i])})
                for i, sample in thompson_pick(alpha=alpha, beta=beta, slots=slots, rng=rng)]

    return explore


def _learned_scorer(learned: PlaylistRanker, model: RankerModel, space, user: str, taste: np.ndarray, bpr_out: dict):
    def scorer(rows: np.ndarray, feats: np.ndarray) -> np.ndarray:
        combined, bpr = learned.score(user=user, taste=taste, pids=model.playlist_ids[rows],
                                      vectors=space.vectors[rows], features=feats, track_version=model.version)
        bpr_out.update(zip(rows.tolist(), bpr.tolist(), strict=True))
        return combined

    return scorer


def recommend_playlists_many(*, users: list[str], tracks: list[np.ndarray], k: int = 10, weights: dict | None = None,
                             model: RankerModel | None, changes: dict | None = None) -> list[PlaylistPicks]:
    """``recommend_playlists`` for a batch of users, ``tracks[i]`` being user i's liked track indices in ``model``.

    The store is read once per batch (follows, buddies, playlist summaries) and the nearest playlist vectors come
    from one batched search, so the weekly precompute costs the re-ranking alone per user.
    """

    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100:
        raise ValueError(f"k must be an integer from 1 to 100, not {k!r}")
    w = PlaylistWeights.from_dict(weights)
    mode, slots, learned = playlist_ranking(changes)
    tag = playlist_ranker_tag(mode, slots, learned)
    followed = users_followed_playlists(users=users)
    version = model.version if model is not None else None
    vectors_known = model is not None and model.bpr is not None
    warm = [i for i, t in enumerate(tracks) if vectors_known and len(t) > 0]
    out: list[PlaylistPicks | None] = [None] * len(users)
    ranked: dict[int, list] = {}
    bpr_scores: dict[int, dict[int, float]] = {}
    if warm:
        space = model.playlist_space()
        vectors = space.user_vectors([tracks[i] for i in warm])
        nearest = space.nearest_many(vectors, w.neighbours)
        buddies = buddies_for_users(users=[users[i] for i in warm], k=w.buddies)
        row_of = model.playlist_row
        for j, i in enumerate(warm):
            buddy_of: dict[int, tuple[str, float]] = {}
            for buddy in buddies.get(users[i]) or []:
                for r in model.owner_rows(buddy["user"]):
                    buddy_of.setdefault(r, (buddy["user"], buddy["similarity"]))
            candidates = np.concatenate([np.asarray(list(buddy_of), dtype=np.int64), nearest[j]])
            exclude = set(model.owner_rows(users[i]))
            exclude |= {row_of[p] for p in followed[users[i]] if p in row_of}
            bpr_scores[i] = {}
            scorer = (_learned_scorer(learned, model, space, users[i], vectors[j], bpr_scores[i])
                      if mode == "learned" and learned is not None else None)
            explore = (_explorer(learned, model, space, users[i])
                       if slots > 0 and learned is not None and learned.explore is not None else None)
            ranked[i] = space.rank(user_vector=vectors[j], user_tracks=tracks[i], candidates=candidates,
                                   exclude=exclude, buddy_of=buddy_of, weights=w, k=k, scorer=scorer,
                                   explore=explore, explore_slots=slots)
        info = playlist_summaries(pids=sorted({int(model.playlist_ids[p.row]) for picks in ranked.values()
                                               for p in picks}))
        for i, picks in ranked.items():
            rows = []
            for p in picks:
                pid = int(model.playlist_ids[p.row])
                doc = info.get(pid, {})
                why = {"buddy": p.buddy, "buddy_similarity": p.buddy_similarity,
                       "shared_artists": p.shared_artists, "new_share": p.new_share,
                       "known_artist_share": p.known_artist_share, "affinity": p.affinity}
                if p.row in bpr_scores[i]:
                    why["playlist_bpr"] = round(bpr_scores[i][p.row], 6)
                if p.explore:
                    why |= p.explore
                rows.append({"pid": pid, "name": doc.get("name"), "owner": doc.get("owner"), "score": p.score,
                             "why": why})
            out[i] = PlaylistPicks(playlists=rows, source="model", model_version=version, ranker=tag)
    cold = [i for i in range(len(users)) if out[i] is None]
    if cold:
        own = {i: {int(model.playlist_ids[r]) for r in model.owner_rows(users[i])} if model is not None else set()
               for i in cold}
        most = playlist_most_followed(limit=k + max(len(followed[users[i]]) + len(own[i]) for i in cold))
        for i in cold:
            skip = followed[users[i]] | own[i]
            docs = [d for d in most if d["_id"] not in skip][:k]
            out[i] = PlaylistPicks(playlists=[{"pid": d["_id"], "name": d.get("name"), "owner": d.get("owner"),
                                               "score": float(d.get("num_followers") or 0),
                                               "why": {"most_followed": True, "followers": d.get("num_followers")}}
                                              for d in docs], source="most_followed", model_version=version,
                                   ranker=tag)
    return out


# -- serving: precomputed when fresh, on the fly otherwise -------------------------------------------------------

def _rec(payload: dict, source: str, model_version: str | None, variant: str = "control",
         experiment: str | None = None) -> dict:

    # rec_id joins later feedback (events carry it) to this list, for the A/B results.
    return {"rec_id": uuid.uuid4().hex, "model_version": model_version, "variant": variant,
            "experiment": experiment, "source": source, **payload}


@functools.lru_cache(maxsize=2)
def _pinned_model(version: str) -> RankerModel:
    """A registered, not necessarily live, version that an A/B variant serves (kept loaded: few are pinned)."""
    return RankerModel.load(version)


def _model_for(changes: dict) -> RankerModel | None:
    """The live model, or the version a variant pins (``model_version``); the live one if that version is gone."""
    live = live_model()
    version = changes.get("model_version")
    if not version or (live is not None and version == live.version):
        return live
    try:
        return _pinned_model(version)
    except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
        log.warning("variant model %s cannot be loaded (%s); serving the live model", version, exc)
        return live


def _cached(kind: str, user: str, k: int, compute, record: bool = True) -> dict:
    """Process LRU → Redis → ``compute(model, changes)`` (precomputed picks, or computed now), keyed by model version
    and A/B variant; every list served is logged for the experiment results.

    ``UnknownUser`` when the store does not know ``user``. Only a cache miss asks: a cached list is proof enough, as
    lists are cached for known users only and users are never deleted (a cached pick costs no store round trip)."""

    experiment, variant, changes = active_for(kind=kind, user=user)
    model = _model_for(changes)
    version = model.version if model is not None else None
    ranking = f":{playlist_ranker_tag(*playlist_ranking(changes))}" if kind == "playlists" else ""
    name = cache.key(kind=kind, version=f"{version}:{variant}:{changes_digest(changes)}{ranking}", user=user, k=k)
    hit = cache.get(name)
    if hit is not None:
        out = _rec(hit["payload"], hit["source"], hit["model_version"], variant, experiment) | {"cached": True}
    else:
        if not user_exists(user=user):
            raise UnknownUser(user)
        payload, source, model_version = compute(model, changes)
        cache.put(name, {"payload": payload, "source": source, "model_version": model_version}, user=user)
        out = _rec(payload, source, model_version, variant, experiment) | {"cached": False}

    PICKS_SERVED.labels(kind, "cache" if out["cached"] else out["source"], variant).inc()
    if version:
        MODEL_INFO.labels(version).set(1)
    if not record:  # looked at (the dashboard's explorer), not shown to the user: not an A/B exposure
        return out
    items = [p.get("uri") or p.get("pid") for p in out.get(kind, [])]
    served_record(rec_id=out["rec_id"], user=user, kind=kind, experiment=experiment, variant=variant,
                  model_version=out["model_version"], source=out["source"], items=items)
    return out


_overload: TTLCache = TTLCache(maxsize=2, ttl=60)
_overload_lock = threading.Lock()


def overload_picks(*, kind: str, k: int) -> dict:
    """What a picks read shed for overload gets (``recsys_site.deadline``): the most popular tracks or the
    most-followed playlists, as a user with no history gets them, from a list kept in memory a minute; flagged
    ``"fallback": "overload"`` and never logged as an A/B exposure."""
    with _overload_lock:
        items = _overload.get(kind)
    if items is None:
        if kind == "tracks":
            items = [{"uri": t["_id"], "score": float(t.get("num_playlists") or 0)} for t in track_top(limit=100)]
        else:
            items = [{"pid": p["_id"], "name": p.get("name"), "owner": p.get("owner"),
                      "score": float(p.get("num_followers") or 0), "why": {"most_followed": True}}
                     for p in playlist_most_followed(limit=100)]
        with _overload_lock:
            _overload[kind] = items
    return {"rec_id": None, "model_version": None, "variant": "control", "experiment": None,
            "source": "popularity" if kind == "tracks" else "most_followed", "fallback": "overload",
            kind: items[:k]}


def warm_up() -> str | None:
    """Load what the first requests of a web worker would otherwise wait for: the live model (its files, the
    compiled second stage, the derived candidate data, the playlists' vectors), the live playlist ranker and the
    overload fallback lists. The live version, or None when none is live. Called as a worker starts
    (``recsys_site.wsgi``): under load the first seconds of a cold worker queued requests behind the model's
    loading (docs/BENCHMARKS.md, overload)."""
    model = live_model()
    if model is not None and model.bpr is not None:
        model.playlist_space()  # the playlists' vectors, built by the first playlist pick otherwise
    playlist_ranker_live()
    for kind in ("tracks", "playlists"):
        overload_picks(kind=kind, k=1)
    return model.version if model is not None else None


def serve_track_picks(*, user: str, k: int, record: bool = True) -> dict:
    """A user's track picks: cached, else precomputed when they come from the live model, else computed now.
    ``record=False`` leaves the list out of the served log (and so out of the A/B results)."""

    _check_k(k)

    def compute(model, changes):
        stored = picks_for_user(user=user)
        if stored and model is not None and stored["model_version"] == model.version and len(stored["tracks"]) >= k:
            return {"tracks": stored["tracks"][:k]}, "precomputed", stored["model_version"]
        known = model is not None and user in model.user_index
        picks = recommend_tracks(user=user, k=k, model=model,
                                 user_tracks=None if known else user_liked_tracks(user=user))
        tracks = [{"uri": u, "score": s} for u, s in zip(picks.tracks, picks.scores, strict=True)]
        return {"tracks": tracks}, picks.source, picks.model_version

    return _cached("tracks", user, k, compute, record)


def serve_playlist_picks(*, user: str, k: int, record: bool = True) -> dict:
    def compute(model, changes):
        weights = changes.get("playlist_weights")
        stored = picks_for_user(user=user)
        # Precomputed picks are ranked the default way (PLAYLIST_RANKER_DEFAULT, PLAYLIST_EXPLORE_SLOTS, the live
        # learned ranker when they were computed): a variant that ranks otherwise is computed now, and so are picks
        # ranked by a learned ranker that is no longer live.
        ranking = {k: v for k, v in changes.items() if k in ("playlist_ranker", "explore_slots")}
        if stored and not weights and model is not None and stored["model_version"] == model.version \
                and len(stored["playlists"]) >= k \
                and stored.get("playlists_ranker", "hand") == playlist_ranker_tag(*playlist_ranking(ranking)) \
                and playlist_ranking(ranking)[:2] == playlist_ranking()[:2]:
            # Stored picks may predate a follow whose refresh has not run yet (the refresh is a worker's task):
            # a playlist the user follows now is never served, even from them.
            followed = users_followed_playlists(users=[user])[user]
            fresh = [p for p in stored["playlists"] if p.get("pid") not in followed]
            if len(fresh) >= k:
                return {"playlists": fresh[:k]}, "precomputed", stored["model_version"]
        known = model is not None and user in model.user_index
        picks = recommend_playlists(user=user, k=k, model=model, weights=weights, changes=ranking,
                                    user_tracks=None if known else user_liked_tracks(user=user))
        return {"playlists": picks.playlists}, picks.source, picks.model_version

    return _cached("playlists", user, k, compute, record)


def serve_continuation(*, name: str | None, seed_tracks: list[str], k: int) -> dict:
    picks = recommend_tracks(seed_tracks=seed_tracks, title=name, k=k)
    tracks = [{"uri": u, "score": s} for u, s in zip(picks.tracks, picks.scores, strict=True)]
    return _rec({"tracks": tracks, "unknown_seeds": picks.unknown_seeds}, picks.source, picks.model_version)
