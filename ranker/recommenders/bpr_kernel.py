"""BPR's fused CPU epoch: one compiled loop that reads, scores and updates each sample's three rows in place.

Why it exists (``docs/adr/0009-bpr-training-kernel.md``): on the CPU a mini-batch of torch ops gathers each
sample's rows (``index_select``), computes on copies and scatters the updates back (``index_add_``). Those two
memory round trips alone cost more per sample than ``implicit``'s whole Cython loop, whatever the batch size,
eager or ``torch.compile``. This loop does what implicit does: per sample, draw a positive (u, i) and a negative
j, skip j if u has it (binary search in u's sorted CSR row), then update the three rows in place. Threads run
lock-free over shared factors (Hogwild, Niu et al. 2011), each with its own SplitMix64 stream; one thread is
bit-for-bit reproducible, several are not (their updates race, as implicit's do).

The factors stay torch tensors: the loop writes into their memory, and validation, early stopping and the CUDA
path are torch as before. The C source below is compiled once per machine with the system C compiler (``CC``,
default ``cc``) into ``$BUDDIES_KERNEL_DIR`` (default ``~/.cache/buddies``, else the temp folder) and loaded with
ctypes, which releases the GIL during the call. Where no compiler is found, :func:`load` returns None and BPR
trains with torch ops instead (it says so in its metrics and the log).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <omp.h>

static inline uint64_t next(uint64_t *s) {  /* SplitMix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline int64_t below(uint64_t *s, int64_t n) {  /* uniform in [0, n), Lemire's multiply-shift */
    return (int64_t)(((__uint128_t)next(s) * (uint64_t)n) >> 64);
}

static inline int has(const int32_t *row, int64_t len, int32_t item) {  /* binary search in a sorted row */
    int64_t lo = 0, hi = len;
    while (lo < hi) {
        int64_t mid = (lo + hi) >> 1;
        if (row[mid] < item) lo = mid + 1; else hi = mid;
    }
    return lo < len && row[lo] == item;
}

/* Samples are drawn AHEAD steps before they are used and their rows prefetched meanwhile: the item table is far
   larger than the caches, and waiting on memory is most of a step's time. */
#define AHEAD 8
/* Threads take chunks of samples as they free up: a thread the OS has descheduled holds up one chunk, not a
   1/threads share of the epoch. */
#define CHUNK 16384

typedef struct { int32_t u, i, j; } triple;

static inline void prefetch_row(const float *row, int64_t d) {
    for (int64_t f = 0; f < d; f += 16) __builtin_prefetch(row + f, 1, 3);
    __builtin_prefetch(row + d - 1, 1, 3);
}

/* One epoch of n_samples SGD steps. U: n_users x d, V: n_items x d (float32, row-major); column d-1 is the item
   bias against a constant 1 in U, which is never updated. Returns the summed loss -log sigma(x) of the samples
   used; *skipped gets how many sampled negatives were positives of their user (no update). */
double bpr_epoch(float *U, float *V, int64_t d, int64_t n_items,
                 const int64_t *indptr, const int32_t *indices, const int32_t *rows, int64_t nnz,
                 const int64_t *neg_indptr, const int32_t *neg_indices, double hard_share,
                 float lr, float reg, uint64_t seed, int threads, int64_t n_samples, int64_t *skipped) {
    double loss = 0.0;
    int64_t skip = 0;
    const uint64_t hard_cut = (uint64_t)(hard_share * 18446744073709551615.0);
    const float keep = 1.0f - lr * reg;
    #pragma omp parallel num_threads(threads) reduction(+:loss, skip)
    {
        uint64_t s = seed ^ (0xD1B54A32D192ED03ULL * (uint64_t)(omp_get_thread_num() + 1));
        triple ring[AHEAD];
        #pragma omp for schedule(dynamic, 1)
        for (int64_t c = 0; c < (n_samples + CHUNK - 1) / CHUNK; ++c) {
        int64_t begin = c * CHUNK, end = begin + CHUNK < n_samples ? begin + CHUNK : n_samples;
        for (int64_t k = begin; k < end + AHEAD; ++k) {
            if (k < end) {  /* draw sample k, to be used AHEAD steps later */
                int64_t p = below(&s, nnz);
                int32_t u = rows[p], i = indices[p], j;
                int64_t hard = neg_indptr ? neg_indptr[u + 1] - neg_indptr[u] : 0;
                if (hard > 0 && next(&s) < hard_cut) j = neg_indices[neg_indptr[u] + below(&s, hard)];
                else j = (int32_t)below(&s, n_items);
                ring[k % AHEAD] = (triple){u, i, j};
                prefetch_row(U + (int64_t)u * d, d);
                prefetch_row(V + (int64_t)i * d, d);
                prefetch_row(V + (int64_t)j * d, d);
                __builtin_prefetch(indices + indptr[u], 0, 3);
            }
            if (k - AHEAD < begin) continue;
            triple x3 = ring[(k - AHEAD) % AHEAD];
            int32_t u = x3.u, i = x3.i, j = x3.j;
            if (has(indices + indptr[u], indptr[u + 1] - indptr[u], j)) { ++skip; continue; }
            float *pu = U + (int64_t)u * d, *pi = V + (int64_t)i * d, *pj = V + (int64_t)j * d;
            float x = 0.0f;
            #pragma omp simd reduction(+:x)
            for (int64_t f = 0; f < d; ++f) x += pu[f] * (pi[f] - pj[f]);
            float e = expf(-x);                /* sigma(-x) = e / (1 + e) = 1 / (1 + exp(x)) */
            float z = isinf(e) ? 1.0f : e / (1.0f + e);
            loss += x < -30.0f ? -(double)x : (double)log1pf(e);
            float g = lr * z;
            #pragma omp simd
            for (int64_t f = 0; f < d - 1; ++f) {
                float uf = pu[f], df = pi[f] - pj[f];
                pu[f] = keep * uf + g * df;
                pi[f] = keep * pi[f] + g * uf;
                pj[f] = keep * pj[f] - g * uf;
            }
            pi[d - 1] = keep * pi[d - 1] + g;
            pj[d - 1] = keep * pj[d - 1] - g;
        }
        }
    }
    *skipped = skip;
    return loss;
}
"""

# Below this many samples per thread, starting threads costs more than it saves; one thread is also reproducible.
MIN_SAMPLES_PER_THREAD = 50_000

_lock = threading.Lock()
_cache: dict[str, ctypes.CDLL | None] = {}


def _flags() -> list[str]:
    # -march=native: built on the machine that runs it; the cache key includes the CPU model for shared homes.
    return ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c11"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "cpu model", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _cache_dir() -> Path:
    explicit = os.environ.get("BUDDIES_KERNEL_DIR")
    if explicit:
        return Path(explicit)
    home = Path.home() / ".cache" / "buddies"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if os.access(home, os.W_OK):
            return home
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / "buddies-kernels"


def load() -> ctypes.CDLL | None:
    """The compiled ``bpr_epoch`` (built on first use), or None where this machine cannot build it."""
    compiler = os.environ.get("CC", "cc")
    key = hashlib.sha256("\0".join([SOURCE, compiler, *_flags(), platform.machine(), _cpu_model()]).encode())
    name = f"bpr_kernel_{key.hexdigest()[:16]}.so"
    with _lock:
        if name in _cache:
            return _cache[name]
        lib = None
        try:
            lib = _open(_build(name, compiler))
        except (OSError, subprocess.SubprocessError, FileNotFoundError) as exc:
            log.warning("BPR: no fused CPU kernel (%s); training with torch ops, about 2x slower on the CPU", exc)
        _cache[name] = lib
        return lib


def _build(name: str, compiler: str) -> Path:
    folder = _cache_dir()
    target = folder / name
    if target.exists():
        return target
    if shutil.which(compiler) is None:
        raise FileNotFoundError(f"C compiler {compiler!r} not found (set CC)")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        src = Path(tmp) / "bpr_kernel.c"
        src.write_text(SOURCE)
        out = Path(tmp) / name
        done = subprocess.run([compiler, *_flags(), str(src), "-o", str(out), "-lm"], capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            raise OSError(f"{compiler} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        os.replace(out, target)  # atomic: a concurrent build of the same source wins or loses whole
    log.info("BPR: built the fused CPU kernel %s", target)
    return target


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.bpr_epoch.restype = ctypes.c_double
    lib.bpr_epoch.argtypes = [p, p, i64, i64, p, p, p, i64, p, p, ctypes.c_double, f32, f32, ctypes.c_uint64,
                              ctypes.c_int, i64, ctypes.POINTER(i64)]
    return lib


class Epochs:
    """The training data laid out for the kernel once; :meth:`run` does one epoch in place on ``U`` and ``V``."""

    def __init__(self, lib: ctypes.CDLL, train, negatives, hard_negative_share: float) -> None:
        self.lib = lib
        self.indptr = np.ascontiguousarray(train.indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(train.indices, dtype=np.int32)
        self.rows = np.repeat(np.arange(train.shape[0], dtype=np.int32), np.diff(self.indptr))
        self.n_items = train.shape[1]
        self.nnz = len(self.indices)
        use_hard = negatives is not None and negatives.nnz and hard_negative_share > 0
        self.neg_indptr = np.ascontiguousarray(negatives.indptr, dtype=np.int64) if use_hard else None
        self.neg_indices = np.ascontiguousarray(negatives.indices, dtype=np.int32) if use_hard else None
        self.hard_share = float(hard_negative_share) if use_hard else 0.0

    def run(self, U, V, *, lr: float, reg: float, seed: int, threads: int, samples: int) -> tuple[float, int]:
        """(summed loss, skipped samples) of ``samples`` SGD steps on the float32 CPU tensors ``U`` and ``V``."""
        if not (U.is_contiguous() and V.is_contiguous()) or U.dtype != V.dtype or str(U.dtype) != "torch.float32":
            raise ValueError("the BPR kernel needs contiguous float32 factors")
        threads = max(1, min(threads, samples // MIN_SAMPLES_PER_THREAD))
        skipped = ctypes.c_int64(0)

        def ptr(a: np.ndarray | None) -> int | None:
            return None if a is None else a.ctypes.data

        loss = self.lib.bpr_epoch(U.data_ptr(), V.data_ptr(), U.shape[1], self.n_items, ptr(self.indptr),
                                  ptr(self.indices), ptr(self.rows), self.nnz, ptr(self.neg_indptr),
                                  ptr(self.neg_indices), self.hard_share, lr, reg, seed & (2**64 - 1), threads,
                                  samples, ctypes.byref(skipped))
        return float(loss), int(skipped.value)
