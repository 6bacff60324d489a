"""The second stage of track picks: a LightGBM LambdaRank model that re-ranks the first stage's candidates.

The first stage (``Blend``: item-kNN + ALS + BPR) scores the catalogue cheaply. Its candidates for one playlist are
the union of the top ``per_part`` tracks of each part, of playlist kNN, of the blend (``blend_depth``), of the
text model when the playlist has a title, and the seeds' artists' most popular tracks (``ARTIST_CANDIDATES``). A
seed is never a candidate, nor a track that no training playlist holds. A playlist with a title and no seeds takes
the text's best tracks as pseudo seeds (``PSEUDO_SEEDS``), so every part speaks for it. Each candidate gets the
features below; a gradient-boosted ranker trained on playlists cut from the training data
(``ranker.training.second_stage``) orders them. Tracks outside the candidates keep the blend's order after them, so
a list is always complete.

Features (``FEATURES``), per (playlist, candidate):

- each part's score, min-max scaled over the row as the blend does, and its rank among that part's top
  ``per_part`` (``per_part`` when it is not there): ``knn``, ``als``, ``bpr``, ``blend``, ``text``;
- ``popularity`` (training playlists holding the track) and its log;
- ``artist_share`` / ``album_share``: the share of the seeds by the candidate's artist / on its album;
- co-occurrence with the seeds (playlists holding both): ``cooc_max``, ``cooc_mean``, ``cooc_max_cosine``
  (max over seeds of co / sqrt(pop_seed · pop_candidate)) and ``cooc_seed_share`` (share of seeds it ever
  co-occurs with);
- similarity to the seeds in each factor model's space (cosine of the track vectors): ``als_seed_max``,
  ``als_seed_mean``, ``bpr_seed_max``, ``bpr_seed_mean``;
- the same against the playlist's last ``LAST`` seeds, where the order is known (a playlist grows at its end):
  ``cooc_last_max``, ``cooc_last_mean``, ``als_last_max``;
- ``pknn`` and its rank: playlist kNN (``_playlist_neighbours``), also a source of candidates;
- ``n_seeds`` and ``has_title``;
- raw evidence the scaled scores hide: ``knn_per_seed`` (item-kNN's score over the number of seeds) and
  ``text_raw`` (the text model's score before scaling);
- the playlist's kind: ``seed_log_popularity`` (mainstream or niche: the seeds' mean log popularity) and
  ``seed_artist_top_share`` (the share of its most frequent artist: one artist's playlist or a mix), and the
  candidate's ``artist_log_popularity``.

``docs/adr/0018-second-stage.md`` gives what each is worth and what the stage costs per request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .base import topk, weighted_rows
from .blend import Blend, minmax_rows
from .compiled import compile_booster

PARTS = ("knn", "als", "bpr", "blend", "text", "pknn")
FEATURES = (
    *(f"{p}{suffix}" for p in PARTS for suffix in ("", "_rank")),
    "popularity", "log_popularity", "artist_share", "album_share",
    "cooc_max", "cooc_mean", "cooc_max_cosine", "cooc_seed_share",
    "als_seed_max", "als_seed_mean", "bpr_seed_max", "bpr_seed_mean",
    "cooc_last_max", "cooc_last_mean", "als_last_max", "n_seeds", "has_title",
    "knn_per_seed", "text_raw", "seed_log_popularity", "seed_artist_top_share", "artist_log_popularity",
)
LAST = 5  # the seeds nearest the end of a playlist: what comes next is most like them
PER_PART = 400  # candidates taken from each part
# The factor parts (ALS, BPR) score the catalogue's head only: tracks in at least this many training playlists. A
# track in one playlist almost never reaches their top 500 (2.5 % of ALS's, 0.5 % of BPR's on the real sample) but
# is 2/3 of the catalogue, and their scores are a memory-bound pass over every track's factors: the head cuts a
# request's cost by 7 ms (ADR 0018). Such tracks stay candidates through item-kNN (their co-occurrence) and the text.
HEAD_MIN_COUNT = 2
FACTOR_PARTS = ("als", "bpr")
# Playlist kNN ("pknn"): the training playlists sharing most seeds (cosine of the track sets), each voting for its
# tracks with its similarity to this power. Item-kNN adds up pairs of tracks; this looks at whole playlists like the
# one being made, the neighbourhood model the RecSys 2018 leaders paired with item-kNN.
PLAYLIST_NEIGHBOURS = 100
PLAYLIST_POWER = 2.0
# A playlist with a title and no seeds: the text model's best tracks stand in for its seeds (pseudo-relevance
# feedback), so that the collaborative parts and their features speak for it too. Its ``n_seeds`` stays 0.
PSEUDO_SEEDS = 10
# Tracks by the seeds' artists (their most popular first) are candidates too: the share of seeds by a track's
# artist is the stage's strongest feature after the blend's rank.
ARTIST_CANDIDATES = 100
BLEND_DEPTH = 500  # ... and from the blend: every track the first stage would serve is a candidate
_COMPONENT = {"itemknn": "knn", "als": "als", "bpr": "bpr"}

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    # Lists are scored over 500 picks (RecSys 2018): the lambdas and the early stopping look that deep. Measured on
    # the real sample against truncation 100 / NDCG@10,100: NDCG +7.1 % against +6.8 % over the blend (ADR 0018).
    "eval_at": [500],
    "first_metric_only": True,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambdarank_truncation_level": 500,
    "verbosity": -1,
}


@dataclass
class Candidates:
    """One batch's candidates and their features: ``ids[i]`` and ``features[offsets[i]:offsets[i+1]]`` are row
    i's; ``fallback`` is each row's blend ranking beyond its candidates (the list's tail)."""

    ids: list[np.ndarray]
    features: np.ndarray  # (all candidates of the batch) × len(FEATURES), float32
    offsets: np.ndarray
    fallback: list[np.ndarray]

    def of(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        return self.ids[row], self.features[self.offsets[row]:self.offsets[row + 1]]


def codes(values: np.ndarray) -> np.ndarray:
    """Integer codes of string keys (artist keys, album URIs); the empty key is -1 (unknown, never shared)."""
    values = np.asarray(values, dtype=str)
    _, inverse = np.unique(values, return_inverse=True)
    out = inverse.astype(np.int32)
    out[values == ""] = -1
    return out


@dataclass
class Derived:
    """What ``SecondStage`` derives once from a first stage: each factor part's track vectors at unit length; the
    head of the catalogue the factor parts score (None: every track); the tracks no training playlist holds (never
    candidates); and, with artists, each artist's popularity (its tracks' training playlists, summed) and its held
    tracks, most popular first (``artist_tracks[artist_indptr[a]:artist_indptr[a + 1]]``)."""

    unit: dict[str, np.ndarray]
    head: np.ndarray | None
    unheld: np.ndarray
    artist_pop: np.ndarray | None = None
    artist_indptr: np.ndarray | None = None
    artist_tracks: np.ndarray | None = None


class SecondStage:
    """Features for the first stage's candidates and the booster that orders them (``booster_`` once fitted)."""

    def __init__(self, *, per_part: int = PER_PART, blend_depth: int = BLEND_DEPTH,
                 params: dict[str, Any] | None = None, item_artist: np.ndarray | None = None,
                 item_album: np.ndarray | None = None) -> None:
        self.per_part = per_part
        self.blend_depth = blend_depth
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        self.item_artist = item_artist  # int codes per item (``codes``), -1 unknown
        self.item_album = item_album
        self.booster_: Any = None
        self.metrics_: dict[str, Any] = {}
        self._derived: tuple[Any, Derived] | None = None  # see _of
        self._compiled: Any = None  # the booster as machine code (``compile``); None: LightGBM predicts

    def _of(self, first: Blend) -> Derived:
        """What the stage derives from a first stage, once (``Derived``)."""
        if self._derived is None or self._derived[0] is not first:
            unit = {}
            for model, _ in first.components:
                if model.name in FACTOR_PARTS:
                    v = np.asarray(model.item_factors, dtype=np.float32)
                    norms = np.linalg.norm(v, axis=1, keepdims=True)
                    unit[model.name] = v / np.maximum(norms, 1e-12)
            counts = next(m for m, _ in first.components if m.name == "itemknn").counts_
            head = np.flatnonzero(counts >= HEAD_MIN_COUNT)
            derived = Derived(unit=unit, head=head if 0 < len(head) < len(counts) else None,
                              unheld=np.flatnonzero(counts == 0))
            artist = self.item_artist
            if artist is not None and len(artist) == len(counts):
                known = artist >= 0
                n_artists = int(artist.max(initial=-1)) + 1
                derived.artist_pop = np.bincount(artist[known], weights=counts[known], minlength=n_artists)
                held = np.flatnonzero(known & (counts > 0))  # an artist's tracks some training playlist holds
                derived.artist_tracks = held[np.lexsort((-counts[held], artist[held]))]
                derived.artist_indptr = np.concatenate([[0], np.cumsum(np.bincount(artist[derived.artist_tracks],
                                                                                   minlength=n_artists))])
            self._derived = (first, derived)
        return self._derived[1]

    def compile(self, cache_dir: Path | None) -> bool:
        """Predict with the booster compiled for this CPU from now on (``ranker.recommenders.compiled``: same
        scores, 4–5× faster), its object code kept in ``cache_dir``; False when it could not be compiled (LightGBM's
        own prediction serves then)."""
        if self.booster_ is None:
            raise RuntimeError("the second stage is not fitted")
        self._compiled = compile_booster(self.booster_.model_to_string(), cache_dir)
        return self.compiled

    @property
    def compiled(self) -> bool:
        """Whether the booster predicts as machine code (``compile``) rather than through LightGBM."""
        return self._compiled is not None

    def warm(self, first: Blend) -> None:
        """Derive now what ``candidates`` needs from ``first`` (unit vectors, the head and its factors)."""
        head = self._of(first).head
        if head is not None:
            nothing = sp.csr_matrix((1, first.n_items), dtype=np.float32)
            for model, _ in first.components:
                if model.name in FACTOR_PARTS:
                    model.score_items(None, nothing, head)

    # -- candidates and features ------------------------------------------------------------------------------

    def candidates(self, first: Blend, seeds: sp.csr_matrix, *, userids: np.ndarray | None = None,
                   titles: list[str | None] | None = None, text: Any = None, tail: int = 0,
                   order: list[np.ndarray] | None = None) -> Candidates:
        """Candidates and features for each row of ``seeds`` (rows × items, the playlist's tracks so far).

        ``userids`` are trained user rows (None: fold each row in from its seeds); ``titles`` go to ``text`` (a
        ``TextModel``). ``order[i]`` is row i's seeds in playlist order, when known (else the last seeds are
        taken in index order). A row's seeds are never candidates. ``tail`` keeps that many of the blend's next
        tracks per row as ``fallback``.
        """
        n_rows, n_items = seeds.shape
        knn = next(m for m, _ in first.components if m.name == "itemknn")
        n_seeds = np.diff(seeds.indptr)
        has_title = np.asarray([bool((t or "").strip()) for t in (titles or [None] * n_rows)])
        raw_text = None
        if text is not None and has_title.any():
            raw_text = np.zeros((n_rows, n_items), dtype=np.float32)
            raw_text[has_title] = text.scores([t for t, h in zip(titles, has_title, strict=True) if h], n_items)
        scoring = _with_pseudo_seeds(seeds, raw_text) if raw_text is not None and PSEUDO_SEEDS else seeds
        scaled: dict[str, np.ndarray] = {}
        blend = np.zeros((n_rows, n_items), dtype=np.float32)
        derived = self._of(first)
        unit, head = derived.unit, derived.head
        knn_raw = None
        for model, weight in first.components:
            if head is not None and model.name in FACTOR_PARTS:
                part = np.zeros((n_rows, n_items), dtype=np.float32)  # beyond the head: the part's lowest, 0
                part[:, head] = minmax_rows(model.score_items(userids, scoring, head))
            else:
                raw = model.score(userids, scoring)
                if model is knn:
                    knn_raw = raw
                part = minmax_rows(raw)
            scaled[_COMPONENT.get(model.name, model.name)] = part
            if weight:
                blend += weight * part
        scaled["blend"] = minmax_rows(blend)
        del blend
        if raw_text is not None:
            peak = raw_text.max(axis=1, keepdims=True)
            scaled["text"] = np.divide(raw_text, peak, out=np.zeros_like(raw_text), where=peak > 0)
        known = np.diff(scoring.indptr)  # seeds, or a title's pseudo seeds
        scaled["pknn"] = _playlist_neighbours(knn, scoring)
        rows, cols = seeds.nonzero()
        for name, matrix in scaled.items():
            matrix[rows, cols] = -np.inf  # a seed is never a candidate (a pseudo seed may well be)
            # Nor a track no training playlist holds: the models know nothing of it. (Offline, such a track is
            # one that a test playlist hides: its popularity 0 would give it away.)
            matrix[:, derived.unheld] = -np.inf
            if name != "text":
                matrix[known == 0] = -np.inf  # no seeds: the models know nothing of this playlist
        depth = {name: self.blend_depth if name == "blend" else self.per_part for name in scaled}
        tops = {name: topk(matrix, depth[name])[0] for name, matrix in scaled.items()}
        for name in ("text", "pknn"):  # sparse parts: a track they give nothing is not their candidate
            if name in scaled:
                tops[name][~(np.take_along_axis(scaled[name], np.maximum(tops[name], 0), axis=1) > 0)] = -1
        if ARTIST_CANDIDATES and self.item_artist is not None:
            tops["artist"] = self._artist_candidates(derived, scoring, seeds)
        blend_top = topk(scaled["blend"], self.blend_depth + tail)[0] if tail else tops["blend"]

        ids, blocks, fallback = [], [], []
        popularity = knn.counts_
        knn_t = knn._matrix_t  # items × training rows: co-occurrence by sparse products
        for r in range(n_rows):
            cands = np.unique(np.concatenate([t[r][t[r] >= 0] for t in tops.values()]))
            ids.append(cands.astype(np.int64))
            x = np.zeros((len(cands), len(FEATURES)), dtype=np.float32)
            col = 0
            for name in PARTS:
                if name in scaled:
                    x[:, col] = np.maximum(scaled[name][r, cands], 0.0)
                    x[:, col + 1] = _ranks(tops[name][r], cands, depth[name])
                else:
                    x[:, col + 1] = self.blend_depth if name == "blend" else self.per_part
                col += 2
            pop = popularity[cands]
            x[:, col], x[:, col + 1] = pop, np.log1p(pop)
            seed_ids = scoring.indices[scoring.indptr[r]:scoring.indptr[r + 1]]
            x[:, col + 2] = _share(self.item_artist, seed_ids, cands)
            x[:, col + 3] = _share(self.item_album, seed_ids, cands)
            if len(seed_ids) and len(cands):
                co = (knn_t[seed_ids] @ knn_t[cands].T).toarray()
                x[:, col + 4] = co.max(axis=0)
                x[:, col + 5] = co.mean(axis=0)
                norm = np.sqrt(np.outer(np.maximum(popularity[seed_ids], 1), np.maximum(pop, 1)))
                x[:, col + 6] = (co / norm).max(axis=0)
                x[:, col + 7] = (co > 0).mean(axis=0)
                cosines = {}
                for n, name in enumerate(("als", "bpr")):
                    if name in unit:
                        cosines[name] = unit[name][seed_ids] @ unit[name][cands].T
                        x[:, col + 8 + 2 * n] = cosines[name].max(axis=0)
                        x[:, col + 9 + 2 * n] = cosines[name].mean(axis=0)
                in_order = (np.asarray(order[r], dtype=np.int64) if order is not None and n_seeds[r]
                            else seed_ids)
                # their rows in co (a CSR row's indices are sorted)
                last = np.minimum(np.searchsorted(seed_ids, in_order[-LAST:]), len(seed_ids) - 1)
                x[:, col + 12] = co[last].max(axis=0)
                x[:, col + 13] = co[last].mean(axis=0)
                if "als" in cosines:
                    x[:, col + 14] = cosines["als"][last].max(axis=0)
            x[:, col + 15] = n_seeds[r]
            x[:, col + 16] = float(has_title[r])
            if knn_raw is not None:
                x[:, col + 17] = knn_raw[r, cands] / max(len(seed_ids), 1)
            if raw_text is not None:
                x[:, col + 18] = raw_text[r, cands]
            if len(seed_ids):
                x[:, col + 19] = np.log1p(popularity[seed_ids]).mean()
                x[:, col + 20] = _top_share(self.item_artist, seed_ids)
            if derived.artist_pop is not None:
                cand_artist = self.item_artist[cands]
                x[:, col + 21] = np.where(cand_artist >= 0, np.log1p(derived.artist_pop[np.maximum(cand_artist, 0)]),
                                          0.0)
            blocks.append(x)
            if tail:
                rest = blend_top[r][blend_top[r] >= 0]
                fallback.append(rest[~np.isin(rest, cands)])
            else:
                fallback.append(np.zeros(0, dtype=np.int64))
        offsets = np.concatenate([[0], np.cumsum([len(c) for c in ids])]).astype(np.int64)
        features = np.concatenate(blocks) if blocks else np.zeros((0, len(FEATURES)), dtype=np.float32)
        return Candidates(ids=ids, features=features, offsets=offsets, fallback=fallback)

    def _artist_candidates(self, derived: Derived, scoring: sp.csr_matrix, seeds: sp.csr_matrix) -> np.ndarray:
        """Per row, up to ``ARTIST_CANDIDATES`` tracks by the seeds' artists (ids, -1 padded): the artists with
        most seeds first, each artist's most popular tracks first; never a seed."""
        n_rows = scoring.shape[0]
        out = np.full((n_rows, ARTIST_CANDIDATES), -1, dtype=np.int64)
        indptr, tracks_of = derived.artist_indptr, derived.artist_tracks
        if indptr is None:
            return out
        for r in range(n_rows):
            seed_ids = scoring.indices[scoring.indptr[r]:scoring.indptr[r + 1]]
            artists = self.item_artist[seed_ids]
            artists = artists[artists >= 0]
            if not len(artists):
                continue
            values, counts = np.unique(artists, return_counts=True)
            tracks = np.concatenate([tracks_of[indptr[a]:indptr[a + 1]] for a in values[np.argsort(-counts,
                                                                                               kind="stable")]])
            tracks = tracks[~np.isin(tracks, seeds.indices[seeds.indptr[r]:seeds.indptr[r + 1]])]
            out[r, :min(len(tracks), ARTIST_CANDIDATES)] = tracks[:ARTIST_CANDIDATES]
        return out

    # -- ranking ----------------------------------------------------------------------------------------------

    def rank(self, first: Blend, seeds: sp.csr_matrix, k: int, *, userids: np.ndarray | None = None,
             titles: list[str | None] | None = None, text: Any = None, order: list[np.ndarray] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item ids and scores per row (rows × k, -1 / -inf where fewer), best first: the candidates
        in the booster's order, then the blend's next tracks. Scores fall with rank and are only comparable
        within a row."""
        if self.booster_ is None:
            raise RuntimeError("the second stage is not fitted: call fit() or from_state() first")
        # The blend's top ``blend_depth`` are candidates already: its tail is needed only beyond them.
        tail = max(0, k - self.blend_depth)
        return self.order(self.candidates(first, seeds, userids=userids, titles=titles, text=text, tail=tail,
                                          order=order), k)

    def order(self, cands: Candidates, k: int, *, predict: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``rank`` for candidates already computed. ``predict`` (features → scores) stands in for the booster:
        ``bench/rerank.py`` orders the same candidates by other rankers."""
        predict = predict or self._compiled or (
            lambda x: self.booster_.predict(x, num_threads=self.params.get("num_threads", 0)))
        predicted = predict(cands.features) if len(cands.features) else np.zeros(0)
        n_rows = len(cands.ids)
        out_ids = np.full((n_rows, k), -1, dtype=np.int64)
        out_scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
        for r in range(n_rows):
            ids = cands.ids[r]
            order = np.argsort(-predicted[cands.offsets[r]:cands.offsets[r + 1]], kind="stable")
            ranked = np.concatenate([ids[order], cands.fallback[r]])[:k]
            out_ids[r, :len(ranked)] = ranked
            out_scores[r, :len(ranked)] = 1.0 - np.arange(len(ranked), dtype=np.float32) / max(k, 1)
        return out_ids, out_scores

    # -- training ---------------------------------------------------------------------------------------------

    def fit(self, cands: Candidates, hidden: list[np.ndarray], *, valid_share: float = 0.2, rounds: int = 400,
            early_stopping: int = 30, random_state: int = 0, num_threads: int | None = None) -> SecondStage:
        """Fit the booster on candidates whose relevant tracks are ``hidden[i]`` (row i's held-out tracks).

        Rows with no hidden track among their candidates teach a ranker nothing and are dropped. A share of the
        rows is held out for early stopping on NDCG at the first ``eval_at``.
        """
        import lightgbm as lgb  # lazy: a heavy import only the weekly training and the harness need

        labels = [np.isin(ids, h).astype(np.float32) for ids, h in zip(cands.ids, hidden, strict=True)]
        useful = [r for r, y in enumerate(labels) if y.any() and not y.all()]
        if len(useful) < 10:
            raise ValueError(f"only {len(useful)} training playlists have a hidden track among their candidates; "
                             "the second stage needs at least 10")
        rng = np.random.default_rng(random_state)
        rng.shuffle(useful)
        n_valid = max(1, int(len(useful) * valid_share))
        parts = {"valid": sorted(useful[:n_valid]), "train": sorted(useful[n_valid:])}

        def dataset(rows: list[int], reference: Any = None) -> Any:
            x = np.concatenate([cands.of(r)[1] for r in rows])
            y = np.concatenate([labels[r] for r in rows])
            return lgb.Dataset(x, y, group=[len(cands.ids[r]) for r in rows], feature_name=list(FEATURES),
                               reference=reference, free_raw_data=True)

        train = dataset(parts["train"])
        valid = dataset(parts["valid"], reference=train)
        params = {**self.params, "seed": random_state, "num_threads": num_threads or 0, "deterministic": True,
                  "force_row_wise": True}
        evals: dict[str, Any] = {}
        self._compiled = None  # compiled from the booster this replaces
        self.booster_ = lgb.train(params, train, num_boost_round=rounds, valid_sets=[valid], valid_names=["valid"],
                                  callbacks=[lgb.early_stopping(early_stopping, verbose=False),
                                             lgb.record_evaluation(evals)])
        gain = self.booster_.feature_importance(importance_type="gain")
        self.metrics_ = {
            "rounds": int(self.booster_.best_iteration or self.booster_.current_iteration()),
            "train_playlists": len(parts["train"]), "valid_playlists": len(parts["valid"]),
            "candidates_per_playlist": float(np.mean([len(cands.ids[r]) for r in useful])),
            "recall_of_candidates": float(np.mean([labels[r].sum() / max(len(hidden[r]), 1) for r in useful])),
            "valid_ndcg": float(max(evals.get("valid", {}).get(f"ndcg@{self.params['eval_at'][0]}", [0.0]))),
            "gain": {name: round(float(g / max(gain.sum(), 1e-12)), 4) for name, g in zip(FEATURES, gain,
                                                                                          strict=True)},
        }
        return self

    # -- persistence inside a model version (plain arrays; the booster as LightGBM's own text format) -----------

    def get_state(self) -> dict[str, np.ndarray]:
        if self.booster_ is None:
            raise RuntimeError("the second stage is not fitted")
        meta = {"per_part": self.per_part, "blend_depth": self.blend_depth, "params": self.params,
                "metrics": self.metrics_, "features": list(FEATURES)}
        return {"booster": np.asarray(self.booster_.model_to_string()), "meta": np.asarray(json.dumps(meta)),
                "item_artist": self.item_artist, "item_album": self.item_album}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> SecondStage:
        import lightgbm as lgb  # lazy: see fit

        meta = json.loads(str(state["meta"]))
        theirs, ours = list(meta["features"]), list(FEATURES)
        if theirs != ours:
            lacks, beyond = [f for f in ours if f not in theirs], [f for f in theirs if f not in ours]
            raise ValueError(f"the second stage was trained on other features than this code computes (it lacks "
                             f"{lacks or 'none'}; it has {beyond or 'none'} beyond them; or another order): "
                             "retrain the model version")
        stage = cls(per_part=int(meta["per_part"]), blend_depth=int(meta.get("blend_depth", BLEND_DEPTH)),
                    params=meta["params"], item_artist=state["item_artist"], item_album=state["item_album"])
        stage.booster_ = lgb.Booster(model_str=str(state["booster"]))
        stage.metrics_ = meta.get("metrics", {})
        return stage


class Reranked:
    """The track recommender with its second stage: ``first`` (the fitted blend) proposes and features, ``stage``
    orders; ``text`` (a ``TextModel``) scores titles. Not a ``Recommender``: it needs the playlists' titles."""

    name = "reranked"

    def __init__(self, first: Blend, stage: SecondStage, text: Any = None) -> None:
        self.first, self.stage, self.text = first, stage, text

    @property
    def n_items(self) -> int:
        return self.first.n_items

    def recommend(self, userids: np.ndarray | None, seeds: sp.csr_matrix, k: int, *,
                  titles: list[str | None] | None = None, order: list[np.ndarray] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(rows × k) ids and scores, best first, -1 where fewer; a row's seeds are never picked."""
        return self.stage.rank(self.first, seeds, k, userids=userids, titles=titles, text=self.text, order=order)


def _playlist_neighbours(knn: Any, seeds: sp.csr_matrix) -> np.ndarray:
    """Playlist-kNN scores (rows × items, each row scaled to a maximum of 1; zero without seeds): the
    ``PLAYLIST_NEIGHBOURS`` training playlists of highest cosine with the row's seeds, each adding its similarity to
    the power ``PLAYLIST_POWER`` to every track it holds. ``knn`` is the first stage's item-kNN, whose training
    matrix (and its transpose, tracks × playlists) it reads."""
    n_rows, n_items = seeds.shape
    out = np.zeros((n_rows, n_items), dtype=np.float32)
    held, by_track = knn.matrix_, knn._matrix_t
    for r in range(n_rows):
        seed_ids = seeds.indices[seeds.indptr[r]:seeds.indptr[r + 1]]
        if not len(seed_ids):
            continue
        # the playlists holding a seed, and how many seeds each holds: only those, never every playlist
        near, overlap = np.unique(by_track[seed_ids].indices, return_counts=True)
        cosine = overlap / np.sqrt((held.indptr[near + 1] - held.indptr[near]) * len(seed_ids))
        if len(near) > PLAYLIST_NEIGHBOURS:
            keep = np.argpartition(-cosine, PLAYLIST_NEIGHBOURS - 1)[:PLAYLIST_NEIGHBOURS]
            near, cosine = near[keep], cosine[keep]
        row = weighted_rows(held, near, cosine ** PLAYLIST_POWER)
        row[seed_ids] = 0.0
        peak = row.max()
        if peak > 0:
            out[r] = row / peak
    return out


def _with_pseudo_seeds(seeds: sp.csr_matrix, raw_text: np.ndarray) -> sp.csr_matrix:
    """``seeds`` where each row without seeds but with text scores gets the text's ``PSEUDO_SEEDS`` best tracks."""
    n_seeds = np.diff(seeds.indptr)
    empty = np.flatnonzero((n_seeds == 0) & (raw_text.max(axis=1) > 0))
    if not len(empty):
        return seeds
    top, top_scores = topk(raw_text[empty], PSEUDO_SEEDS)
    rows = [seeds.indices[seeds.indptr[r]:seeds.indptr[r + 1]] for r in range(seeds.shape[0])]
    for n, r in enumerate(empty):
        rows[r] = np.sort(top[n][top_scores[n] > 0])
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.concatenate(rows).astype(np.int32) if indptr[-1] else np.zeros(0, dtype=np.int32)
    return sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=seeds.shape)


def _top_share(item_codes: np.ndarray | None, seeds: np.ndarray) -> float:
    """The share of ``seeds`` by their most frequent known code (artist): 1 for a one-artist playlist."""
    if item_codes is None or not len(seeds):
        return 0.0
    seed_codes = item_codes[seeds]
    seed_codes = seed_codes[seed_codes >= 0]
    return float(np.unique(seed_codes, return_counts=True)[1].max() / len(seeds)) if len(seed_codes) else 0.0


def _ranks(top: np.ndarray, cands: np.ndarray, cap: int) -> np.ndarray:
    """Each candidate's position in ``top`` (a part's best-first ids, -1 padded), ``cap`` where it is absent."""
    out = np.full(len(cands), cap, dtype=np.float32)
    valid = np.flatnonzero(top >= 0)
    if not len(valid):
        return out
    order = np.argsort(top[valid])
    sorted_ids = top[valid][order]
    pos = np.minimum(np.searchsorted(sorted_ids, cands), len(sorted_ids) - 1)
    hit = sorted_ids[pos] == cands
    out[hit] = valid[order[pos[hit]]]
    return out


def _share(item_codes: np.ndarray | None, seeds: np.ndarray, cands: np.ndarray) -> np.ndarray:
    """For each candidate, the share of ``seeds`` with the same code (artist or album); 0 for unknown codes."""
    out = np.zeros(len(cands), dtype=np.float32)
    if item_codes is None or not len(seeds):
        return out
    seed_codes = item_codes[seeds]
    seed_codes = seed_codes[seed_codes >= 0]
    if not len(seed_codes):
        return out
    values, counts = np.unique(seed_codes, return_counts=True)
    cand_codes = item_codes[cands]
    pos = np.minimum(np.searchsorted(values, cand_codes), len(values) - 1)
    hit = (values[pos] == cand_codes) & (cand_codes >= 0)
    out[hit] = counts[pos[hit]] / len(seeds)
    return out
