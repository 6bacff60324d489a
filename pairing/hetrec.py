"""Buddies against real friendships: do the taste buddies pairing finds overlap declared friends?

The HetRec 2011 Last.fm dataset has both what users listen to (``user_artists.dat``: userID, artistID, weight =
play count) and whom they call friends (``user_friends.dat``). The product's pairing is run on the listening
alone, exactly as it runs on playlists: a binary users × artists "liked" matrix (liked = listened at all) → our
BPR → each user's taste vector is the L2-normalised mean of the BPR vectors of the artists they listened to
(:func:`ranker.recommenders.vectors.taste_vectors`) → exact cosine top-K (:func:`pairing.knn.exact_topk`).
Friendships are never shown to the model; they are only the yardstick.

**Friend recall@K** of a user with friends F and buddies B_K (their K nearest other users) is
``|F ∩ B_K| / min(|F|, K)``, averaged over the users with at least one friend; the denominator ``min(|F|, K)``
makes 1.0 reachable for everyone. The plain ``|F ∩ B_K| / |F|`` variant is reported too (``*_over_friends``).

Baselines, measured the same way: **random** (for each user, K others drawn uniformly without replacement,
seeded; its exact expectation is ``K·|F| / ((n − 1)·min(|F|, K))`` averaged over the users) and **most active**
(the K users with the most total plays other than the user, the same list for everyone). For comparison there is
also **raw cosine**: cosine over the users' binary artist rows, no model at all.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ingestion.triplets import ROLES, Problem, parse_file
from pairing.knn import exact_topk
from ranker.recommenders.bpr import BPR
from ranker.recommenders.vectors import taste_vectors

log = logging.getLogger(__name__)

DEFINITION = ("friend recall@K = mean over users with >= 1 friend of |friends & buddies_K| / min(|friends|, K); "
              "*_over_friends divides by |friends| instead")
METHOD = "mean of liked artists' BPR vectors (binary listened matrix), exact cosine top-K"
# BPR's settings here: at most 100 epochs with early stopping on the held-out hit rate (on the real data it stops
# near epoch 65, about a minute on two CPU cores, friend recall@10 ≈ 0.14); 1,000 epochs without early stopping
# reached ≈ 0.15 in eleven minutes, not worth it for an evaluation.
BPR_DEFAULTS: dict[str, Any] = {"factors": 64, "epochs": 100, "learning_rate": 0.1, "regularization": 0.002,
                                "validation_users": 500}


def _read(path: Path, role: str) -> list[dict[str, Any]]:
    """The documents of a HetRec file, parsed and validated by the ingester's own parser; any bad line is an error
    (an evaluation on a silently trimmed dataset would mislead: ``ingest_triplets`` reports every bad line).
    """
    docs, problems = [], []
    for result in parse_file(path, ROLES[role]):
        if isinstance(result, Problem):
            problems.append(result)
        else:
            docs.append(result[1])
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"{len(problems)} bad line(s) in {path}: {shown}{more}")
    return docs


def load_hetrec(path: str | Path) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix, dict[int, set[int]]]:
    """Read a HetRec Last.fm folder: ``(users, artists, matrix, friends)``.

    ``users`` and ``artists`` are the ids as the ingester writes them (``"lastfm:2"``, ``"lastfm:artist:51"``),
    sorted, one per row / column of ``matrix``, a users × artists CSR of play counts (a repeated pair is summed).
    Only users with at least one listen are rows. ``friends`` maps a row to the set of rows of its declared
    friends, as listed (the file is directed; HetRec's happens to be symmetric); friendships with a user who has
    no listens are dropped. Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a wrong header
    or a bad line.
    """
    folder = Path(path)
    listens = _read(folder / "user_artists.dat", "user_artists")
    friendships = _read(folder / "user_friends.dat", "user_friends")
    users = np.array(sorted({d["user"] for d in listens}), dtype=object)
    artists = np.array(sorted({d["item"] for d in listens}), dtype=object)
    user_row = {u: i for i, u in enumerate(users)}
    artist_col = {a: i for i, a in enumerate(artists)}
    rows = np.fromiter((user_row[d["user"]] for d in listens), dtype=np.int64, count=len(listens))
    cols = np.fromiter((artist_col[d["item"]] for d in listens), dtype=np.int64, count=len(listens))
    plays = np.fromiter((d["weight"] for d in listens), dtype=np.float64, count=len(listens))
    matrix = sp.csr_matrix((plays, (rows, cols)), shape=(len(users), len(artists)))
    matrix.sum_duplicates()
    friends: dict[int, set[int]] = {}
    for d in friendships:
        a, b = user_row.get(d["user"]), user_row.get(d["friend"])
        if a is not None and b is not None:
            friends.setdefault(a, set()).add(b)
    return users, artists, matrix, friends


def friend_recall(neighbour_ids: np.ndarray, friends: dict[int, set[int]], k: int, *,
                  denominator: str = "min") -> float:
    """Mean over users with at least one friend of ``|friends ∩ first k neighbours| / min(|friends|, k)``.

    ``neighbour_ids`` has one row per user (row i: user i's neighbours, best first, -1 for none);
    ``denominator="friends"`` divides by ``|friends|`` instead. NaN when nobody has a friend.
    """
    if denominator not in ("min", "friends"):
        raise ValueError(f"denominator must be 'min' or 'friends', not {denominator!r}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    shares = []
    for user, theirs in friends.items():
        if not theirs:
            continue
        buddies = {int(b) for b in neighbour_ids[user][:k] if b >= 0}
        hits = len(buddies & theirs)
        shares.append(hits / (min(len(theirs), k) if denominator == "min" else len(theirs)))
    return float(np.mean(shares)) if shares else float("nan")


def random_neighbours(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """For each of ``n`` users, ``min(k, n − 1)`` other users drawn uniformly without replacement (-1 padding)."""
    m = min(k, n - 1)
    ids = np.full((n, k), -1, dtype=np.int64)
    for user in range(n):
        drawn = rng.choice(n - 1, size=m, replace=False)
        ids[user, :m] = drawn + (drawn >= user)  # skip the user themself
    return ids


def random_expectation(friends: dict[int, set[int]], n: int, k: int, *, denominator: str = "min") -> float:
    """Exact expected friend recall of :func:`random_neighbours`: ``min(k, n−1)·|F| / (n−1)`` hits per user."""
    m = min(k, n - 1)
    shares = [m * len(f) / (n - 1) / (min(len(f), k) if denominator == "min" else len(f))
              for f in friends.values() if f]
    return float(np.mean(shares)) if shares else float("nan")


def most_active_neighbours(plays: np.ndarray, k: int) -> np.ndarray:
    """For each user, the ``k`` users with the most total ``plays`` other than themself (ties: lower row first)."""
    n = len(plays)
    order = np.argsort(-np.asarray(plays), kind="stable")[: k + 1]
    ids = np.full((n, k), -1, dtype=np.int64)
    for user in range(n):
        others = order[order != user][:k]
        ids[user, : len(others)] = others
    return ids


def _scores(neighbour_ids: np.ndarray, friends: dict[int, set[int]], k: int) -> tuple[float, float]:
    return (friend_recall(neighbour_ids, friends, k), friend_recall(neighbour_ids, friends, k, denominator="friends"))


def evaluate_hetrec(path: str | Path, *, k: int = 10, random_state: int = 0, show_progress: bool = False,
                    bpr_params: dict[str, Any] | None = None, raw_cosine: bool = True) -> dict[str, Any]:
    """Friend recall@``k`` of BPR taste buddies on the HetRec folder ``path``, with the baselines (see the module).

    ``bpr_params`` override :data:`BPR_DEFAULTS`; ``raw_cosine=False`` skips the model-free comparison row.
    Returns ``{"k", "friend_recall", "random", "most_active", "lift_over_random", ...}`` with extras.
    """

    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    started = time.perf_counter()
    users, artists, matrix, friends = load_hetrec(path)
    n = len(users)
    if n < 2:
        raise ValueError(f"{path}: need at least two users with listens, found {n}")
    loaded = time.perf_counter()
    liked = matrix.copy()
    liked.data = np.ones_like(liked.data, dtype=np.float32)
    liked = liked.astype(np.float32)

    params = {**BPR_DEFAULTS, **(bpr_params or {})}
    model = BPR(**params, device="cpu", random_state=random_state).fit(liked, show_progress=show_progress)
    vectors = taste_vectors(model.item_factors, liked)
    buddies = exact_topk(vectors, k, show_progress=show_progress).ids
    trained = time.perf_counter()

    rng = np.random.default_rng(random_state)
    recall, recall_f = _scores(buddies, friends, k)
    rand, rand_f = _scores(random_neighbours(n, k, rng), friends, k)
    active, active_f = _scores(most_active_neighbours(np.asarray(matrix.sum(axis=1)).ravel(), k), friends, k)
    expected = random_expectation(friends, n, k)
    result: dict[str, Any] = {
        "k": k,
        "friend_recall": round(recall, 6),
        "random": round(rand, 6),
        "most_active": round(active, 6),
        "lift_over_random": round(recall / rand, 3) if rand > 0 else None,
        "exact_random_expectation": round(expected, 6),
        "lift_over_exact_random": round(recall / expected, 3) if expected > 0 else None,
        "friend_recall_over_friends": round(recall_f, 6),
        "random_over_friends": round(rand_f, 6),
        "most_active_over_friends": round(active_f, 6),
        "exact_random_expectation_over_friends": round(random_expectation(friends, n, k, denominator="friends"), 6),
    }
    if raw_cosine:
        raw = exact_topk(liked.toarray(), k).ids  # dense: 1,892 × 17,632 float32 is 133 MB for the real data
        raw_recall, raw_recall_f = _scores(raw, friends, k)
        result["raw_cosine"] = round(raw_recall, 6)
        result["raw_cosine_over_friends"] = round(raw_recall_f, 6)
    result.update({
        "definition": DEFINITION,
        "method": METHOD,
        "users": n,
        "users_with_friends": sum(1 for f in friends.values() if f),
        "artists": len(artists),
        "listens": int(matrix.nnz),
        "friendships": sum(len(f) for f in friends.values()),
        "seed": random_state,
        "bpr": {"params": params, "trained": model.metrics_},
        "seconds": {"load": round(loaded - started, 3), "bpr_and_knn": round(trained - loaded, 3),
                    "total": round(time.perf_counter() - started, 3)},
    })
    log.info("hetrec friend recall@%d: %s", k, {key: result[key] for key in ("friend_recall", "random",
                                                                             "most_active", "lift_over_random")})
    return result
