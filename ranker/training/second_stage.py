"""Training the second stage (``ranker.recommenders.rerank``) on playlists cut from the training data only.

A second stage must learn from first-stage scores of tracks the first stage did *not* see, as at serving time. So
``second_stage_train`` cuts ``cases`` training playlists the way the RecSys 2018 challenge cuts its test playlists
(``CATEGORIES``: a title and/or the first or random 0–100 tracks shown, the rest hidden), fits a first stage and a
text model on the training data with those hidden tracks (and those titles) removed, and trains the booster to put
the hidden tracks first among the candidates. The first stage fitted here is thrown away: the caller serves the
booster with its first stage fitted on everything, whose scores are distributed the same way.

Called on the evaluation harness's training part, the test playlists are excluded (``exclude_rows``): nothing of
what is evaluated is ever learned from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ranker.recommenders import Blend
from ranker.recommenders.rerank import Candidates, SecondStage, codes
from ranker.recommenders.text import TextModel

from .data import Playlists, rows_matrix

log = logging.getLogger(__name__)

CASES = 1000  # training playlists cut; ~600 candidates each
MIN_HIDDEN = 5
MAX_SHARE = 0.5  # of the playlists that may be cut: the first stage fitted for the cases keeps at least the rest whole
FOLDS = 1
BATCH = 128  # playlists per feature batch: bounds the dense (batch × catalogue) score matrices


@dataclass(frozen=True)
class Category:
    name: str
    title: bool
    seeds: int
    random: bool = False


# The RecSys Challenge 2018 categories of test playlists: the evaluation harness cuts its test playlists by them,
# and the second stage its training playlists, so that it learns every case it will be asked.
CATEGORIES = (
    Category("title_only", True, 0),
    Category("title_first1", True, 1),
    Category("title_first5", True, 5),
    Category("first5_no_title", False, 5),
    Category("title_first10", True, 10),
    Category("first10_no_title", False, 10),
    Category("title_first25", True, 25),
    Category("title_random25", True, 25, random=True),
    Category("title_first100", True, 100),
    Category("title_random100", True, 100, random=True),
)
CATEGORY_NAMES = tuple(c.name for c in CATEGORIES)


@dataclass
class TrainingCase:
    row: int
    title: str | None
    seeds: np.ndarray
    hidden: np.ndarray


def unique_in_order(tracks: np.ndarray) -> np.ndarray:
    _, first = np.unique(tracks, return_index=True)
    return tracks[np.sort(first)]


def cut(tracks: np.ndarray, category: Category, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, hidden) of a playlist's distinct tracks as ``category`` cuts them."""
    if category.random:
        mask = np.zeros(len(tracks), dtype=bool)
        mask[rng.choice(len(tracks), size=category.seeds, replace=False)] = True
        return tracks[mask], tracks[~mask]
    return tracks[:category.seeds], tracks[category.seeds:]


def cut_cases(rows: list[np.ndarray], names: list[str], *, cases: int, random_state: int = 0,
              exclude_rows: np.ndarray | None = None) -> list[TrainingCase]:
    """``cases`` playlists in turn from each category, each a random row long enough for it (``rows[i]``: row i's
    distinct tracks in order), never one of ``exclude_rows``."""
    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(rows))
    if exclude_rows is not None and len(exclude_rows):
        order = order[~np.isin(order, exclude_rows)]
    sizes = np.asarray([len(r) for r in rows])
    taken = np.zeros(len(rows), dtype=bool)
    out: list[TrainingCase] = []
    cursor = {c.name: 0 for c in CATEGORIES}
    while len(out) < cases:
        before = len(out)
        for cat in CATEGORIES:
            if len(out) >= cases:
                break
            need = cat.seeds + MIN_HIDDEN
            i = cursor[cat.name]
            while i < len(order) and (taken[order[i]] or sizes[order[i]] < need
                                      or (cat.title and not names[order[i]])):
                i += 1
            cursor[cat.name] = i + 1
            if i >= len(order):
                continue
            row = int(order[i])
            taken[row] = True
            seeds, hidden = cut(rows[row], cat, rng)
            out.append(TrainingCase(row=row, title=names[row] if cat.title else None, seeds=seeds, hidden=hidden))
        if len(out) == before:  # no category can find another playlist
            break
    return out


def second_stage_train(playlists: Playlists, first_factory: Callable[[], Blend], *, train_rows: list[np.ndarray]
                       | None = None, names: list[str] | None = None, exclude_rows: np.ndarray | None = None,
                       cases: int = CASES, folds: int = FOLDS, random_state: int = 0, threads: int | None = None,
                       show_progress: bool = False, say: Callable[[str], None] | None = None,
                       **stage_options: Any) -> SecondStage:
    """Cut ``cases`` training playlists, fit ``first_factory()`` and a text model without their hidden tracks, and
    train a ``SecondStage`` (``stage_options``: its parameters) on their candidates.

    ``train_rows`` / ``names`` default to the playlists' own tracks and names (the harness passes its training
    part, whose test rows hold only their seeds, and names with the test titles blanked). ``say`` hears each phase
    as it starts (the training job shows it as its progress message).
    """
    began = time.perf_counter()
    stage, joined, hidden, chosen = second_stage_data(
        playlists, first_factory, train_rows=train_rows, names=names, exclude_rows=exclude_rows, cases=cases,
        folds=folds, random_state=random_state, show_progress=show_progress, say=say, **stage_options)
    if say:
        say(f"second stage: boosting over {len(joined.features):,} candidates of {len(chosen):,} playlists")
    stage.fit(joined, hidden, random_state=random_state, num_threads=threads)
    stage.metrics_["cases"] = len(chosen)
    stage.metrics_["seconds"] = round(time.perf_counter() - began, 1)
    log.info("second stage: %d cases, %d rounds, validation NDCG %.4f in %.0f s", len(chosen),
             stage.metrics_["rounds"], stage.metrics_["valid_ndcg"], stage.metrics_["seconds"])
    return stage


def second_stage_data(playlists: Playlists, first_factory: Callable[[], Blend], *,
                      train_rows: list[np.ndarray] | None = None, names: list[str] | None = None,
                      exclude_rows: np.ndarray | None = None, cases: int = CASES, folds: int = FOLDS,
                      random_state: int = 0, show_progress: bool = False, say: Callable[[str], None] | None = None,
                      **stage_options: Any) -> tuple[SecondStage, Candidates, list[np.ndarray], list[TrainingCase]]:
    """What ``second_stage_train`` fits on: an unfitted stage, the training cases' candidates and features, their
    hidden tracks, and the cases (in that order).

    ``folds`` sets of ``cases`` playlists each (disjoint): each fold fits its own first stage and text model with
    its cases cut, so every case is scored by a first stage that never saw its hidden tracks while each first stage
    still learns from all the other playlists whole. More folds, more to learn from, one first-stage fit each.
    """
    rows = train_rows if train_rows is not None else [playlists.tracks_of(i) for i in range(len(playlists))]
    names = list(names if names is not None else playlists.names)
    distinct = [unique_in_order(np.asarray(r)) for r in rows]
    eligible = len(rows) - (len(np.unique(exclude_rows)) if exclude_rows is not None else 0)
    cases = min(cases, int(MAX_SHARE * eligible))
    every = cut_cases(distinct, names, cases=cases * folds, random_state=random_state, exclude_rows=exclude_rows)
    if not every:
        raise ValueError("no playlist is long enough to train the second stage on")
    album = playlists.item_album if playlists.item_album is not None else np.full(playlists.n_items, "")
    stage = SecondStage(item_artist=codes(playlists.item_artist), item_album=codes(album), **stage_options)
    features, ids, hidden, fallback, ordered = [], [], [], [], []
    offsets = [0]
    bar = tqdm(total=len(every), disable=not show_progress, unit="playlist", desc="second stage features",
               leave=False)
    for fold in range(folds):
        chosen = every[fold::folds]
        if not chosen:
            continue
        reduced_rows = list(rows)
        reduced_names = list(names)
        for case in chosen:
            reduced_rows[case.row] = case.seeds
            reduced_names[case.row] = ""
        reduced = rows_matrix(reduced_rows, playlists.n_items)
        if say:
            say(f"second stage: fold {fold + 1} of {folds}, fitting a first stage without the hidden tracks of "
                f"{len(chosen):,} playlists")
        first = first_factory().fit(reduced, show_progress=show_progress)
        text = TextModel().fit(reduced_names, reduced, item_names=playlists.item_name,
                               item_artists=playlists.item_artist_name)
        for start in range(0, len(chosen), BATCH):
            if say:
                say(f"second stage: fold {fold + 1} of {folds}, candidates and features, {start:,} of "
                    f"{len(chosen):,} playlists")
            batch = chosen[start:start + BATCH]
            got = stage.candidates(first, rows_matrix([c.seeds for c in batch], playlists.n_items),
                                   titles=[c.title for c in batch], text=text, order=[c.seeds for c in batch])
            features.append(got.features)
            ids.extend(got.ids)
            fallback.extend(got.fallback)
            offsets.extend((got.offsets[1:] + offsets[-1]).tolist())
            hidden.extend(c.hidden for c in batch)
            ordered.extend(batch)
            bar.update(len(batch))
    bar.close()
    joined = Candidates(ids=ids, features=np.concatenate(features), offsets=np.asarray(offsets, dtype=np.int64),
                        fallback=fallback)
    return stage, joined, hidden, ordered
