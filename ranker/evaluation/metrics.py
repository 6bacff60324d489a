"""Evaluation metrics for playlist continuation, following the RecSys Challenge 2018 protocol.

Notation used in the docstrings:

* ``G`` -- the set of hidden (held-out) tracks of a test playlist.
* ``R`` -- the ranked picks, deduplicated keeping each track's first occurrence, then cut to the
  first ``MAX_PICKS`` (500) as the challenge only scores 500 picks. A duplicate in the input
  therefore counts once and does not push later tracks down the ranking.
* ``rel_i`` -- 1 if ``R[i]`` (1-based) is in ``G``, else 0.

Pure Python: no Django, no database, so the bench scripts and the web app can share it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import combinations

MAX_PICKS = 500
MAX_CLICKS = 51  # the challenge's value for "no relevant track in the 500 picks"
ARTIST_CREDIT = 0.25


def _picks(ranked: Sequence[str]) -> list[str]:
    """R: ``ranked`` without repeats (first occurrence kept), truncated to ``MAX_PICKS``."""
    return list(dict.fromkeys(ranked))[:MAX_PICKS]


def _hidden(hidden: Collection[str]) -> set[str]:
    """G as a set; empty G means the harness hid nothing, which would make |G| a zero divisor."""
    g = set(hidden)
    if not g:
        raise ValueError("hidden is empty: a test playlist must hide at least one track")
    return g


def _discounted_gain(picks: list[str], g: set[str]) -> float:
    """DCG = rel_1 + sum_{i=2..|R|} rel_i / log2(i), the challenge's (and textbook) form."""
    return sum(1.0 if i == 1 else 1.0 / math.log2(i) for i, t in enumerate(picks, start=1) if t in g)


def _ideal_gain(n: int) -> float:
    """IDCG for n relevant tracks at the top: 1 + sum_{i=2..n} 1/log2(i); 0 for n = 0."""
    return sum(1.0 if i == 1 else 1.0 / math.log2(i) for i in range(1, n + 1))


def r_precision(ranked: Sequence[str], hidden: Collection[str]) -> float:
    """R-precision = |G ∩ R[:|G|]| / |G|.

    Raises ValueError when ``hidden`` is empty.
    """
    g = _hidden(hidden)
    return len(g.intersection(_picks(ranked)[: len(g)])) / len(g)


def r_precision_artist(ranked: Sequence[str], hidden: Collection[str], artist_of: Mapping[str, str]) -> float:
    """The challenge's R-precision with partial artist credit.

    (|G ∩ R[:|G|]| + 0.25 * |A|) / |G|, capped at 1.0, where A is the set of distinct artists of
    the tracks of R[:|G|] that are not in G and whose artist is among the artists of G's tracks.
    Tracks missing from ``artist_of`` never earn artist credit (nor make a G artist). Raises
    ValueError when ``hidden`` is empty.
    """
    g = _hidden(hidden)
    top = _picks(ranked)[: len(g)]
    hits = len(g.intersection(top))
    g_artists = {artist_of[t] for t in g if t in artist_of}
    credited = {artist_of[t] for t in top if t not in g and artist_of.get(t) in g_artists}
    return min(1.0, (hits + ARTIST_CREDIT * len(credited)) / len(g))


def ndcg(ranked: Sequence[str], hidden: Collection[str]) -> float:
    """The challenge's NDCG: DCG / IDCG with IDCG = 1 + sum_{i=2..|G ∩ R|} 1/log2(i).

    The ideal ranking only holds the tracks actually found, so finding 2 of 10 hidden tracks at
    ranks 1 and 2 scores 1.0. Returns 0.0 when no pick is a hit (including empty ``hidden``).
    """
    g = set(hidden)
    picks = _picks(ranked)
    found = len(g.intersection(picks))
    return _discounted_gain(picks, g) / _ideal_gain(found) if found else 0.0


def ndcg_g(ranked: Sequence[str], hidden: Collection[str]) -> float:
    """Textbook NDCG: DCG / IDCG with IDCG = 1 + sum_{i=2..min(|G|, |R|)} 1/log2(i).

    Unlike ``ndcg`` it penalises hidden tracks that were never found. 0.0 when R or G is empty.
    """
    g = set(hidden)
    picks = _picks(ranked)
    ideal = _ideal_gain(min(len(g), len(picks)))
    return _discounted_gain(picks, g) / ideal if ideal else 0.0


def clicks(ranked: Sequence[str], hidden: Collection[str], *, max_clicks: int = MAX_CLICKS) -> int:
    """Recommended-songs clicks = floor((rank of the first hit - 1) / 10), ranks 1-based.

    Pages of 10 tracks are shown; a hit on the first page costs 0 clicks. Returns ``max_clicks``
    when no track of R is in G.
    """
    g = set(hidden)
    for rank, track in enumerate(_picks(ranked), start=1):
        if track in g:
            return (rank - 1) // 10
    return max_clicks


def track_metrics(ranked: Sequence[str], hidden: Collection[str], artist_of: Mapping[str, str]) -> dict[str, float]:
    """All track metrics of one test playlist; raises ValueError when ``hidden`` is empty."""
    return {
        "r_precision": r_precision(ranked, hidden),
        "r_precision_artist": r_precision_artist(ranked, hidden, artist_of),
        "ndcg_g": ndcg_g(ranked, hidden),
        "ndcg": ndcg(ranked, hidden),
        "clicks": float(clicks(ranked, hidden)),
    }


def mean_metrics(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per-key mean over rows: mean_k = sum(row[k]) / (number of rows holding k). {} for no rows."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for row in rows:
        for key, value in row.items():
            sums[key] = sums.get(key, 0.0) + float(value)
            counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


def _jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b|; two empty sets are identical, so 1.0."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def playlist_metrics(
    picks: Sequence[Collection[str]], seeds: Collection[str], hidden: Collection[str], *, k: int = 10
) -> dict[str, float]:
    """Metrics of k picked playlists (each its set of track URIs) for one test playlist.

    Only the first k picks count (P = picks[:k]):

    * ``hit_rate_10``  = 1.0 if some p in P has p ∩ G non-empty, else 0.0.
    * ``coverage_10``  = |G ∩ (∪ P)| / |G|.
    * ``novelty_10``   = mean over p in P of |p \\ seeds| / |p| (an empty pick adds 0.0); 0.0 when P is empty.
    * ``diversity_10`` = 1 - mean over pairs {p, q} of P of |p ∩ q| / |p ∪ q|; 0.0 when |P| < 2.
    * ``precision_10`` = mean over p in P of |p ∩ G| / |p| (an empty pick adds 0.0): the share of a picked
      playlist's tracks that are hidden tracks; 0.0 when P is empty.

    The keys keep the ``_10`` suffix whatever k is: it is the name the report uses. Raises
    ValueError when ``hidden`` is empty.
    """
    g = _hidden(hidden)
    seed_set = set(seeds)
    chosen = [set(p) for p in picks[:k]]
    union = set().union(*chosen)
    novelty = [len(p - seed_set) / len(p) if p else 0.0 for p in chosen]
    pairs = [_jaccard(p, q) for p, q in combinations(chosen, 2)]
    precision = [len(p & g) / len(p) if p else 0.0 for p in chosen]
    return {
        "hit_rate_10": 1.0 if union & g else 0.0,
        "coverage_10": len(union & g) / len(g),
        "novelty_10": sum(novelty) / len(novelty) if novelty else 0.0,
        "diversity_10": 1.0 - sum(pairs) / len(pairs) if pairs else 0.0,
        "precision_10": sum(precision) / len(precision) if precision else 0.0,
    }
