"""The second stage's booster compiled to machine code for this CPU (lleaves, through LLVM): the same scores as
LightGBM's own prediction, 4–5 times faster per request (ADR 0020).

A continuation at k=500 asks the booster for ~1,200 rows: with the API bench world's 261 trees, 8.5 ms in LightGBM
on one thread and 1.9 ms compiled, on this project's 2-core box (``bench/booster.py``). Compiling takes ~5 s, so
the object code is kept in a cache directory, one file per (model, CPU, compiler) and reused by every process of
the machine that loads the model. When anything about compiling fails, the caller keeps LightGBM's prediction:
slower, never wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KEEP = 8  # compiled models kept in a cache directory; older ones (of retired versions) are removed
# Fewer rows than this are predicted on the calling thread: a request's candidates. More (an evaluation's batch)
# are split over the threads OpenMP would use.
ONE_THREAD_ROWS = 50_000

Predict = Callable[[np.ndarray], np.ndarray]


def compile_booster(model_text: str, cache_dir: Path | None) -> Predict | None:
    """A function from features (rows × features) to the booster's scores, compiled for this CPU, or None (logged)
    when lleaves is missing or compiling fails. ``cache_dir`` keeps the object code between processes (None: in
    memory only, ~5 s per process)."""
    try:
        import lleaves  # lazy: LLVM loads only where a second stage is served
        import llvmlite.binding as llvm  # lazy: as above

        cache = None
        if cache_dir is not None:
            cache = Path(cache_dir) / f"{_key(model_text, llvm)}.o"
        with tempfile.TemporaryDirectory() as tmp:
            text = Path(tmp) / "booster.txt"
            text.write_text(model_text)
            model = lleaves.Model(model_file=str(text))
            _compile(model, cache)
    except Exception as exc:  # noqa: BLE001 (any failure: LightGBM's own prediction serves instead)
        log.warning("second stage: booster not compiled (%s: %s); LightGBM's prediction serves", type(exc).__name__,
                    exc)
        return None
    threads = max(1, int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))

    def predict(x: np.ndarray) -> np.ndarray:
        return model.predict(np.ascontiguousarray(x, dtype=np.float64),
                             n_jobs=1 if len(x) < ONE_THREAD_ROWS else threads)

    return predict


def _key(model_text: str, llvm) -> str:
    """What the object code depends on: the model, the CPU it is compiled for, and the compiler's versions."""
    cpu = f"{llvm.get_host_cpu_name()}|{llvm.get_host_cpu_features().flatten()}"
    parts = [model_text, cpu, version("lleaves"), version("llvmlite")]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _compile(model, cache: Path | None) -> None:
    """Load ``cache`` when it is there whole; else compile, writing the object code to a private file first and
    renaming it into place, so that two processes compiling at once never read half a file. LLVM aborts the whole
    process on a damaged object file, so a file is loaded only when its SHA-256 matches the one written with it."""
    if cache is None:
        model.compile()
        return
    digest = cache.with_suffix(".sha256")
    if cache.exists():
        if digest.exists() and digest.read_text().strip() == _sha256(cache):
            model.compile(cache=str(cache))
            return
        log.warning("second stage: compiled booster %s damaged (its SHA-256 differs); compiling again", cache)
    private = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        model.compile(cache=str(private))
        private_digest = private.with_suffix(".sha256")
        private_digest.write_text(_sha256(private))
        os.replace(private_digest, digest)
        os.replace(private, cache)
    except OSError as exc:  # a read-only model directory: compile in memory
        log.info("second stage: compiled booster not cached in %s (%s)", cache.parent, exc)
        model.compile()
        return
    finally:
        with contextlib.suppress(OSError):
            private.unlink(missing_ok=True)
            private.with_suffix(".sha256").unlink(missing_ok=True)
    _prune(cache.parent)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prune(cache_dir: Path) -> None:
    """Keep the ``KEEP`` most recently written object files."""
    files = sorted(cache_dir.glob("*.o"), key=lambda f: f.stat().st_mtime, reverse=True)
    for old in files[KEEP:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".sha256").unlink(missing_ok=True)
