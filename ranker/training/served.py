"""Which track recommender Buddies serves, and with which parameters (measured: docs/adr/0003-served-blend.md).

One function builds it, so the weekly job, the evaluation harness and the benchmark all train the same thing.
"""

from __future__ import annotations

from typing import Any

from ranker.recommenders import ALS, BPR, Blend, ItemKNN, Recommender

SERVED_NAME = "blend"

# Chosen on the harness (``manage.py evaluate``) over the real MPD sample; see the ADR for the sweep.
DEFAULTS: dict[str, Any] = {
    "knn_alpha": 0.5,
    "knn_beta": 0.3,
    "knn_weight": 1.0,
    "als_weight": 1.0,
    "bpr_weight": 0.25,
    "als": {"factors": 128, "regularization": 0.01, "alpha": 20.0, "iterations": 15},
    "bpr": {"factors": 64, "learning_rate": 0.1, "regularization": 0.01, "epochs": 100},
    # The second stage (ADR 0018): training playlists cut for it per fold (each fold fits its own first stage);
    # 0 cases serves the blend's order alone.
    "second_stage_cases": 2500,
    "second_stage_folds": 2,
}
NESTED = ("als", "bpr")


def served_params(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    params = {**DEFAULTS, **{key: dict(DEFAULTS[key]) for key in NESTED}}
    for key, value in (overrides or {}).items():
        if key in NESTED:
            params[key].update(value)
        elif key in params:
            params[key] = value
        else:
            raise ValueError(f"unknown ranker parameter {key!r}; known: {', '.join(sorted(params))}")
    return params


def make_served(params: dict[str, Any] | None = None, *, device: str = "cpu", threads: int | None = None,
                random_state: int = 0) -> Recommender:
    """The served recommender, untrained: item co-occurrence kNN blended with ALS and BPR. ``device`` (the one
    decision, ``ranker.recommenders.device``) goes to both factor models: BPR trains in torch there, ALS with
    implicit's CUDA build when that is the one installed.

    BPR is always trained, even at weight 0 in the track blend: its vectors drive pairing and playlist picks.
    """
    p = served_params(params)
    bpr = BPR(**p["bpr"], device=device, threads=threads, random_state=random_state)
    als = ALS(**p["als"], threads=threads, device=device, random_state=random_state)
    knn = ItemKNN(alpha=p["knn_alpha"], beta=p["knn_beta"])
    return Blend(components=[(knn, p["knn_weight"]), (als, p["als_weight"]), (bpr, p["bpr_weight"])])
