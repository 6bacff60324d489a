"""What every benchmark script shares: the machine line, Django setup, the JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GENRES = 300  # taste_data's genres


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_facts(*packages: str) -> dict[str, Any]:
    """Cores, CPU, platform, Python and the installed version of each named distribution."""
    facts: dict[str, Any] = {"cores": os.cpu_count(), "cpu": cpu_model(), "platform": platform.platform(),
                             "python": platform.python_version()}
    for package in packages:
        with contextlib.suppress(PackageNotFoundError):
            facts[package.replace("-", "_")] = version(package)
    return facts


def setup_django(settings_module: str) -> None:
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # keep the tables readable
    import django

    django.setup()


def write_json(path: Path, out: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")


def timed(call: Any) -> tuple[Any, float]:
    """``call()``'s result and its seconds."""
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def taste_data(n: int, dim: int, seed: int) -> Any:
    """Clustered unit vectors shaped like users' tastes: each is one of ``GENRES`` unit "genre" centres (Zipf-popular,
    as genres are), plus 0.4 of a second random genre, plus Gaussian noise of norm about 1, L2-normalised."""
    import numpy as np

    from ranker.recommenders.vectors import normalize_rows

    rng = np.random.default_rng(seed)
    genres = normalize_rows(rng.normal(size=(GENRES, dim)))
    popularity = 1 / np.arange(1, GENRES + 1) ** 0.8
    main = rng.choice(GENRES, size=n, p=popularity / popularity.sum())
    side = rng.integers(GENRES, size=n)
    noise = rng.normal(scale=1 / np.sqrt(dim), size=(n, dim))
    return normalize_rows(genres[main] + 0.4 * genres[side] + noise)
