"""The evaluation harness: RecSys Challenge 2018 seed categories on playlists from the store.

A seeded split picks test playlists per category among those long enough to hide at least ``MIN_HIDDEN``
tracks, keeps their seeds (and title, where the category has one) and hides the rest. Every method is then
trained here on the training part only (all other playlists plus the test seeds: hidden tracks never leak)
and asked for ``K`` tracks per test playlist; the live model, which has seen everything, is never scored.

Title-only playlists have no seeds to fold in, so every personalised method answers them with the same
text model (``ranker.recommenders.text``) that serving uses, fitted on the training playlists' names only;
playlists with a title and a few seeds (title-heavy) get the method's picks fused with the text model's, as
serving does. The popularity baseline stays pure popularity.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from pairing.knn import exact_topk
from ranker.evaluation import metrics
from ranker.evaluation.compare import paired_bootstrap
from ranker.recommenders import Recommender, topk
from ranker.recommenders.base import Callback
from ranker.recommenders.playlists import PlaylistSpace, PlaylistWeights, user_vector
from ranker.recommenders.rerank import Reranked
from ranker.recommenders.text import TextModel, fuse_ranked, title_heavy
from ranker.recommenders.title import TitleIndex
from ranker.training.data import Playlists, rows_matrix
from ranker.training.second_stage import (
    CATEGORIES,
    CATEGORY_NAMES,
    second_stage_train,
    unique_in_order,
)
from ranker.training.served import make_served, served_params

log = logging.getLogger(__name__)

K = 500
MIN_HIDDEN = 10
TRACK_METRICS = ("r_precision", "r_precision_artist", "ndcg_g", "ndcg", "clicks")




@dataclass
class Case:
    row: int  # the playlist's row in ``Playlists``
    category: str
    title: str | None
    seeds: np.ndarray  # item indices shown to the recommender
    hidden: np.ndarray  # item indices to find


@dataclass
class Split:
    playlists: Playlists
    cases: list[Case]
    train: sp.csr_matrix  # playlists × items: test rows hold only their seeds
    titles: TitleIndex = field(repr=False)
    popularity: np.ndarray = field(repr=False)
    text: TextModel | None = field(default=None, repr=False)  # fitted on the training names; None: titles only

    def test_rows(self) -> np.ndarray:
        return np.asarray([c.row for c in self.cases], dtype=np.int64)


def split(playlists: Playlists, *, test_size: int = 1000, categories: Iterable[str] | None = None,
          random_state: int = 0) -> Split:
    """Choose ``test_size`` test playlists spread evenly over the categories; deterministic for a seed.

    The most demanding categories (most seeds) choose first, so short playlists are not wasted on them
    and long ones are not used up by the easy categories.
    """
    chosen = [c for c in CATEGORIES if categories is None or c.name in set(categories)]
    unknown = set(categories or ()) - set(CATEGORY_NAMES)
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}; choose from {', '.join(CATEGORY_NAMES)}")
    if not chosen or test_size < len(chosen):
        raise ValueError(f"test_size {test_size} is too small for {len(chosen)} categories")
    rng = np.random.default_rng(random_state)
    unique = [unique_in_order(playlists.tracks_of(i)) for i in range(len(playlists))]
    sizes = np.asarray([len(u) for u in unique])
    order = rng.permutation(len(playlists))
    taken = np.zeros(len(playlists), dtype=bool)
    quota = {c.name: test_size // len(chosen) + (1 if n < test_size % len(chosen) else 0)
             for n, c in enumerate(chosen)}
    cases: list[Case] = []
    for cat in sorted(chosen, key=lambda c: -c.seeds):
        need = cat.seeds + MIN_HIDDEN
        rows = [r for r in order if not taken[r] and sizes[r] >= need and (not cat.title or playlists.names[r])]
        if len(rows) < quota[cat.name]:
            log.warning("category %s: only %d playlists have ≥ %d tracks (wanted %d)", cat.name, len(rows),
                        need, quota[cat.name])
        for r in rows[:quota[cat.name]]:
            taken[r] = True
            tracks = unique[r]
            if cat.random:
                pick = np.sort(rng.choice(len(tracks), size=cat.seeds, replace=False))
                mask = np.zeros(len(tracks), dtype=bool)
                mask[pick] = True
                seeds, hidden = tracks[mask], tracks[~mask]
            else:
                seeds, hidden = tracks[:cat.seeds], tracks[cat.seeds:]
            cases.append(Case(row=int(r), category=cat.name, title=playlists.names[r] if cat.title else None,
                              seeds=seeds, hidden=hidden))
    cases.sort(key=lambda c: (CATEGORY_NAMES.index(c.category), c.row))
    rows = [playlists.tracks_of(i) for i in range(len(playlists))]
    for case in cases:
        rows[case.row] = case.seeds
    train = rows_matrix(rows, playlists.n_items)
    # Titles come from training playlists only: a test playlist's own name would point at its hidden tracks.
    names = list(playlists.names)
    for case in cases:
        names[case.row] = ""
    titles = TitleIndex().fit(names, train)
    text = TextModel().fit(names, train, item_names=playlists.item_name, item_artists=playlists.item_artist_name)
    popularity = np.asarray(train.sum(axis=0)).ravel().astype(np.float32)
    return Split(playlists=playlists, cases=cases, train=train, titles=titles, popularity=popularity, text=text)


def complete(top: np.ndarray, fallback: np.ndarray, k: int = K) -> np.ndarray:
    """``top`` (ids, -1 = none) topped up to ``k`` from ``fallback`` (a ranking), without repeats."""
    have = top[top >= 0]
    if len(have) >= k:
        return have[:k]
    extra = fallback[~np.isin(fallback, have)]
    return np.concatenate([have, extra])[:k]


def recommend_cases(model: Recommender | Reranked | None, split: Split, *, k: int = K, batch_size: int = 256,
                    show_progress: bool = False) -> list[np.ndarray]:
    """``k`` item indices per case. ``model=None`` is pure popularity (the baseline)."""
    out: list[np.ndarray] = []
    seeds_of = [c.seeds for c in split.cases]
    by_popularity = np.argsort(-split.popularity, kind="stable")
    bar = tqdm(total=len(split.cases), disable=not show_progress, unit="playlist", leave=False)
    for start in range(0, len(split.cases), batch_size):
        batch = split.cases[start:start + batch_size]
        seeds = rows_matrix(seeds_of[start:start + batch_size], split.playlists.n_items)
        rows = np.asarray([c.row for c in batch], dtype=np.int64)
        if model is None:
            ranked = [complete(np.zeros(0, np.int64), by_popularity[~np.isin(by_popularity, s)], k)
                      for s in seeds_of[start:start + batch_size]]
            out.extend(ranked)
            bar.update(len(batch))
            continue
        if isinstance(model, Reranked):  # titles are among its features: no separate title fusion
            top, _ = model.recommend(None, seeds, k, titles=[c.title for c in batch], order=[c.seeds for c in batch])
            for n, case in enumerate(batch):
                out.append(complete(top[n], by_popularity[~np.isin(by_popularity, case.seeds)], k))
            bar.update(len(batch))
            continue
        top, _ = model.recommend(rows, seeds, k)
        cold = [n for n, c in enumerate(batch) if len(c.seeds) == 0]
        text_model = split.text if split.text is not None else split.titles
        if cold:
            title_scores = text_model.scores([batch[n].title for n in cold], split.playlists.n_items)
            t_top, t_scores = _topk_positive(title_scores, k)
            for m, n in enumerate(cold):
                top[n] = -1
                top[n, :len(t_top[m])] = t_top[m]
        heavy = [n for n, c in enumerate(batch) if split.text is not None and title_heavy(c.title, len(c.seeds))]
        if heavy:
            title_scores = split.text.scores([batch[n].title for n in heavy], split.playlists.n_items)
            for m, n in enumerate(heavy):
                title_scores[m, batch[n].seeds] = 0.0
            t_top, _ = _topk_positive(title_scores, k)
            for m, n in enumerate(heavy):
                fused = fuse_ranked(top[n][top[n] >= 0], t_top[m], n_seeds=len(batch[n].seeds), k=k)
                top[n] = -1
                top[n, :len(fused)] = fused
        for n, case in enumerate(batch):
            fallback = by_popularity[~np.isin(by_popularity, case.seeds)]
            out.append(complete(top[n], fallback, k))
        bar.update(len(batch))
    bar.close()
    return out


def _topk_positive(scores: np.ndarray, k: int) -> tuple[list[np.ndarray], None]:
    ids, top = topk(scores, k)
    return [row[s > 0] for row, s in zip(ids, top, strict=True)], None


@dataclass
class MethodResult:
    overall: dict[str, float]
    per_category: dict[str, dict[str, float]]
    train_seconds: float
    recommend_seconds: float
    per_case: list[dict[str, float]] = field(default_factory=list, repr=False)  # in the split's case order
    model: Any = field(default=None, repr=False, compare=False)  # the fitted recommender, where kept (not in JSON)
    # A second stage's result keeps its first stage's (the blend alone, on the same cases): not in JSON either.
    first_stage: MethodResult | None = field(default=None, repr=False, compare=False)

    def values(self, metric: str) -> list[float]:
        """One metric per case, in the split's case order: what ``compare.paired_bootstrap`` pairs."""
        return [row[metric] for row in self.per_case]

    def to_json(self) -> dict[str, Any]:
        return {"overall": self.overall, "per_category": self.per_category,
                "train_seconds": round(self.train_seconds, 3), "recommend_seconds": round(self.recommend_seconds, 3)}


def score_cases(split: Split, ranked: list[np.ndarray]) -> MethodResult:
    """Per-category and overall means of the track metrics (overall = mean over all test playlists)."""
    artist = split.playlists.item_artist
    rows: dict[str, list[dict[str, float]]] = {}
    per_case = []
    for case, picks in zip(split.cases, ranked, strict=True):
        top = picks.tolist()
        hidden = case.hidden.tolist()
        artist_of = {t: artist[t] for t in (*hidden, *top[:len(hidden)]) if artist[t]}
        per_case.append(metrics.track_metrics(top, hidden, artist_of))
        rows.setdefault(case.category, []).append(per_case[-1])
    per_category = {name: metrics.mean_metrics(rows[name]) for name in CATEGORY_NAMES if name in rows}
    overall = metrics.mean_metrics(r for name in per_category for r in rows[name])
    return MethodResult(overall=overall, per_category=per_category, train_seconds=0.0, recommend_seconds=0.0,
                        per_case=per_case)


def score_model(model: Recommender | Reranked | None, split: Split, *, show_progress: bool = False,
                batch_size: int = 256) -> MethodResult:
    """Recommend for every case with an already fitted ``model`` (None = popularity) and score."""
    started = time.perf_counter()
    result = score_cases(split, recommend_cases(model, split, show_progress=show_progress, batch_size=batch_size))
    result.recommend_seconds = time.perf_counter() - started
    return result


def evaluate_method(factory: Callable[[], Recommender] | None, split: Split, *, show_progress: bool = False
                    ) -> tuple[MethodResult, Recommender | None]:
    """Train a fresh model on the split's training part, recommend for every case, score."""
    model = None
    started = time.perf_counter()
    if factory is not None:
        model = factory().fit(split.train, show_progress=show_progress)
    trained = time.perf_counter()
    result = score_model(model, split, show_progress=show_progress)
    result.train_seconds = trained - started
    return result, model


def training_rows(split: Split) -> tuple[list[np.ndarray], list[str]]:
    """The split's training part as ordered track lists and names: every playlist, the test playlists cut to
    their seeds and their titles blanked (what ``split`` trains on)."""
    rows = [split.playlists.tracks_of(i) for i in range(len(split.playlists))]
    names = list(split.playlists.names)
    for case in split.cases:
        rows[case.row] = case.seeds
        names[case.row] = ""
    return rows, names


def evaluate_second_stage(first: Recommender, factory: Callable[[], Recommender], split: Split, *,
                          cases: int | None = None, folds: int = 1, random_state: int = 0,
                          show_progress: bool = False) -> tuple[MethodResult, Reranked]:
    """The served blend ``first`` (already fitted on the split's training part) with a second stage trained on
    cases cut from that training part only (``second_stage_train``: never a test playlist), scored on the split.

    ``factory`` makes the first stage that the second stage's own training cases are scored by.
    """
    started = time.perf_counter()
    rows, names = training_rows(split)
    stage = second_stage_train(split.playlists, factory, train_rows=rows, names=names,
                               exclude_rows=split.test_rows(), folds=folds, random_state=random_state,
                               show_progress=show_progress, **({"cases": cases} if cases else {}))
    model = Reranked(first, stage, split.text)
    trained = time.perf_counter()
    result = score_model(model, split, show_progress=show_progress, batch_size=128)
    result.train_seconds = trained - started
    return result, model


def evaluate_served(params: dict[str, Any] | None, split: Split, *, random_state: int = 0, device: str = "cpu",
                    threads: int | None = None, show_progress: bool = False, callback: Callback | None = None
                    ) -> MethodResult:
    """The served recipe (``ranker.training.served``) with ``params``, trained on the split's training part only
    and scored on its cases; the fitted recommender is kept in ``result.model`` (its parts are rows of their own in
    ``manage.py evaluate``).

    When the recipe has a second stage (``second_stage_cases``), the result is the blend re-ranked by it
    (``evaluate_second_stage``), and the blend's own result is kept in ``result.first_stage``.

    The one place that says what "the served method" is offline: ``manage.py evaluate``'s served row and the
    weekly evaluation of every new version (``services.version_evaluate``) both come from here.
    """
    started = time.perf_counter()
    model = make_served(params, device=device, threads=threads, random_state=random_state)
    model.fit(split.train, show_progress=show_progress, callback=callback)
    trained = time.perf_counter()
    result = score_model(model, split, show_progress=show_progress)
    result.train_seconds = trained - started
    result.model = model
    recipe = served_params(params)
    if not recipe["second_stage_cases"]:
        return result
    try:
        reranked, both = evaluate_second_stage(
            model, lambda: make_served(params, device=device, threads=threads, random_state=random_state), split,
            cases=recipe["second_stage_cases"], folds=recipe["second_stage_folds"], random_state=random_state,
            show_progress=show_progress)
    except ValueError as exc:  # too few long playlists to learn from: the version would serve the blend alone
        log.warning("no second stage on this split (the blend is scored alone): %s", exc)
        return result
    reranked.train_seconds += result.train_seconds
    reranked.model, reranked.first_stage = both, result
    return reranked


def format_table(results: dict[str, MethodResult], *, served: str | None = None) -> str:
    """A markdown table: one row per method, overall metrics, then R-precision per category."""
    head = ["method", *TRACK_METRICS, "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        label = f"**{name}** (served)" if name == served else name
        cells = [label, *(f"{r.overall[m]:.4f}" if m != "clicks" else f"{r.overall[m]:.2f}" for m in TRACK_METRICS),
                 f"{r.train_seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    cats = [c for c in CATEGORY_NAMES if any(c in r.per_category for r in results.values())]
    lines += ["", "R-precision / NDCG per category:", "",
              "| category | " + " | ".join(results) + " |", "|" + "---|" * (len(results) + 1)]
    for cat in cats:
        cells = [f"{r.per_category[cat]['r_precision']:.3f} / {r.per_category[cat]['ndcg']:.3f}"
                 if cat in r.per_category else "—" for r in results.values()]
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- playlist picks ---------------------------------------------------------------------------------------------

PLAYLIST_METRICS = ("hit_rate_10", "coverage_10", "novelty_10", "diversity_10", "precision_10")
CONTENT_BATCH = 64  # test playlists per sparse product in the content peer (bounds its cases × candidates overlap)


def content_peer_picks(split: Split, cases: list[Case], *, candidates: np.ndarray, fallback: np.ndarray,
                       k: int = 10) -> list[np.ndarray]:
    """The content peer: for each case, the ``k`` candidate playlists nearest its seeds by track-set cosine.

    cosine(S, P) = |S ∩ P| / sqrt(|S| · |P|) between the case's seed set S and a candidate's track set P (its
    training row, binary); no buddies, no model, no title. Ties go to the lower row. Candidates sharing no track
    are never picked by similarity: a list shorter than ``k`` is topped up from ``fallback`` (a ranking of
    candidate rows, e.g. most followed first), as the cold start is. Returns each case's playlist rows, best first.
    """
    items = split.train[candidates]
    sizes = np.diff(items.indptr).astype(np.float64)
    out: list[np.ndarray] = []
    for start in range(0, len(cases), CONTENT_BATCH):
        batch = cases[start:start + CONTENT_BATCH]
        seeds = rows_matrix([c.seeds for c in batch], split.playlists.n_items)
        overlap = (seeds @ items.T).tocsr()
        for n, case in enumerate(batch):
            cols = overlap.indices[overlap.indptr[n]:overlap.indptr[n + 1]]
            shared = overlap.data[overlap.indptr[n]:overlap.indptr[n + 1]].astype(np.float64)
            keep = shared > 0
            cols, shared = cols[keep], shared[keep]
            cosine = shared / np.sqrt(len(case.seeds) * sizes[cols])
            order = np.lexsort((candidates[cols], -cosine))[:k]
            rows = candidates[cols[order]]
            if len(rows) < k:
                extra = fallback[~np.isin(fallback, rows) & (fallback != case.row)]
                rows = np.concatenate([rows, extra[:k - len(rows)]])
            out.append(rows.astype(np.int64))
    return out


PLAYLIST_COMPARED = ("hit_rate_10", "precision_10")  # learned against hand-set, paired bootstrap


def evaluate_playlists(split: Split, bpr: Any, *, weights: Any = None, k: int = 10, learned: Any = None,
                       show_progress: bool = False) -> dict[str, dict[str, float]]:
    """HitRate/Coverage/Novelty/Diversity/Precision@10 of buddy playlist picks against two baselines on the same
    test playlists: the content peer (nearest playlists by track-set cosine, ``content_peer_picks``) and the most
    followed.

    Each test playlist's owner is the user; its seeds are all the user has. Candidates are the training
    playlists (test playlists are never picked: their training rows hold only seeds). MPD users own one
    playlist each, so a buddy's playlists are that buddy's one playlist. Only test playlists with seeds are
    scored (every method on the same ones). ``precision_10`` is ``metrics.playlist_metrics``': the mean over the
    picks of the share of each picked playlist's tracks that are hidden tracks of the test playlist.

    ``learned`` (a ``ranker.recommenders.playlist_ranker.PlaylistRanker``, the live one) adds a ``learned`` row:
    the same candidates ranked by its learned weights instead of the hand-set ones, with ``vs_hand``: the
    paired-bootstrap difference to the hand-set row in ``PLAYLIST_COMPARED``. Its BPR was trained beside
    another track model, so its taste term is the plain cosine here, and the test playlists' owners are users it
    never saw: what it brings offline is its weights, follow rates and playlist biases.
    """

    w = weights or PlaylistWeights()
    pl = split.playlists
    candidate = np.ones(len(pl), dtype=bool)
    candidate[split.test_rows()] = False
    space = PlaylistSpace(playlist_items=split.train, item_factors=bpr.item_factors, item_bias=bpr.item_bias,
                          item_artist=pl.item_artist, item_artist_name=pl.item_artist_name,
                          owners=np.asarray(pl.owners, dtype=str), candidate_mask=candidate)
    cand_rows = np.flatnonzero(candidate)
    ranked_by_followers = cand_rows[np.argsort(-pl.followers[cand_rows], kind="stable")]
    by_followers = ranked_by_followers[:k]
    results: dict[str, list[dict[str, float]]] = {"buddies": [], "content": [], "most_followed": []}
    if learned is not None:
        results["learned"] = []
    cases = [c for c in split.cases if len(c.seeds)]
    content = content_peer_picks(split, cases, candidates=cand_rows, fallback=ranked_by_followers[:2 * k], k=k)
    vectors = np.stack([user_vector(bpr.item_factors, c.seeds) for c in cases]) if cases else None
    buddies = exact_topk(space.vectors[cand_rows], w.buddies, queries=vectors) if cases else None
    for n, case in enumerate(tqdm(cases, disable=not show_progress, unit="playlist", leave=False)):
        buddy_rows = cand_rows[buddies.ids[n][buddies.ids[n] >= 0]]
        buddy_of = {int(r): (pl.owners[r], float(s)) for r, s in
                    zip(buddy_rows, buddies.scores[n][buddies.ids[n] >= 0], strict=True)}
        candidates = np.concatenate([buddy_rows, space.nearest(vectors[n], w.neighbours)])
        picks = space.rank(user_vector=vectors[n], user_tracks=case.seeds, candidates=candidates,
                           exclude={case.row}, buddy_of=buddy_of, weights=w, k=k)
        ranked = [("buddies", [p.row for p in picks]), ("content", content[n].tolist()),
                  ("most_followed", by_followers.tolist())]
        if learned is not None:
            def scorer(rows: np.ndarray, feats: np.ndarray, n: int = n, case: Any = case) -> np.ndarray:
                return learned.score(user=str(pl.owners[case.row]), taste=vectors[n], pids=pl.pids[rows],
                                     vectors=space.vectors[rows], features=feats, track_version=None)[0]

            mine = space.rank(user_vector=vectors[n], user_tracks=case.seeds, candidates=candidates,
                              exclude={case.row}, buddy_of=buddy_of, weights=w, k=k, scorer=scorer)
            ranked.append(("learned", [p.row for p in mine]))
        for name, rows in ranked:
            sets = [space.tracks(r).tolist() for r in rows]
            results[name].append(metrics.playlist_metrics(sets, case.seeds.tolist(), case.hidden.tolist(), k=k))
    out = {name: metrics.mean_metrics(rows) for name, rows in results.items()}
    if learned is not None and cases:  # learned against the hand-set ranking, case by case (the same candidates)
        out["learned"]["vs_hand"] = {
            m: paired_bootstrap([r[m] for r in results["buddies"]], [r[m] for r in results["learned"]],
                                metric=m).to_json() for m in PLAYLIST_COMPARED}
    return out


def format_playlist_table(results: dict[str, dict[str, float]], *, served: str = "buddies") -> str:
    lines = ["| method | " + " | ".join(PLAYLIST_METRICS) + " |", "|" + "---|" * (len(PLAYLIST_METRICS) + 1)]
    for name, r in results.items():
        label = f"**{name}** (served)" if name == served else name
        lines.append(f"| {label} | " + " | ".join(f"{r.get(m, float('nan')):.4f}" for m in PLAYLIST_METRICS) + " |")
    return "\n".join(lines)
