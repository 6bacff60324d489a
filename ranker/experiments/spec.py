"""What an A/B experiment's definition may hold, checked the same way for the settings and the admin."""

from __future__ import annotations

from typing import Any

from ranker.recommenders.playlists import PlaylistWeights
from ranker.training.selectors import model_get

KINDS = ("playlists", "tracks")
VARIANT_KEYS = {"weight", "model_version", "playlist_weights", "playlist_ranker", "explore_slots"}
PLAYLIST_RANKERS = ("hand", "learned")  # ``playlist_ranker``: the hand-set weights or the learned ranker (ADR 0014)
MAX_EXPLORE_SLOTS = 100  # ``explore_slots``: at most a whole page (k is at most 100)


def spec_errors(name: str, spec: Any, *, check_versions: bool = False) -> list[str]:
    """What is wrong with experiment ``name``'s definition (empty when it is sound); the same rules for settings
    and the admin. ``check_versions`` also asks the model registry whether each ``model_version`` exists."""
    if not isinstance(spec, dict):
        return [f"experiment {name!r}: expected an object, got {type(spec).__name__}"]
    problems = []
    applies = spec.get("applies_to", ["playlists"])
    if not isinstance(applies, list) or not applies or set(applies) - set(KINDS):
        problems.append(f"experiment {name!r}: applies_to must be a non-empty list of {list(KINDS)}, got {applies!r}")
    variants = spec.get("variants")
    if not isinstance(variants, dict) or not variants:
        return [*problems, f"experiment {name!r}: variants must be a non-empty object of name → changes"]
    for variant, changes in variants.items():
        where = f"experiment {name!r}, variant {variant!r}"
        if not isinstance(changes, dict):
            problems.append(f"{where}: expected an object, got {type(changes).__name__}")
            continue
        if unknown := set(changes) - VARIANT_KEYS:
            problems.append(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(VARIANT_KEYS)}")
        weight = changes.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            problems.append(f"{where}: weight must be a positive number, got {weight!r}")
        weights = changes.get("playlist_weights", {})
        known = sorted(PlaylistWeights.__dataclass_fields__)
        if not isinstance(weights, dict) or set(weights) - set(known) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in weights.values()):
            problems.append(f"{where}: playlist_weights must map some of {known} to numbers, got {weights!r}")
        ranker = changes.get("playlist_ranker", "hand")
        if ranker not in PLAYLIST_RANKERS:
            problems.append(f"{where}: playlist_ranker must be one of {list(PLAYLIST_RANKERS)}, got {ranker!r}")
        slots = changes.get("explore_slots", 0)
        if isinstance(slots, bool) or not isinstance(slots, int) or not 0 <= slots <= MAX_EXPLORE_SLOTS:
            problems.append(f"{where}: explore_slots must be an integer from 0 to {MAX_EXPLORE_SLOTS}, got {slots!r}")
        version = changes.get("model_version")
        if version is not None and not isinstance(version, str):
            problems.append(f"{where}: model_version must be a version string, got {version!r}")
        elif version is not None and check_versions and model_get(version=version) is None:
            problems.append(f"{where}: no model version {version!r} in the registry")
    return problems
