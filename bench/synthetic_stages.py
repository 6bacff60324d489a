"""The train, buddies and picks stages at MPD size in one process, on a synthetic interaction matrix (``bench/scale.py
--synthetic-users``): what a GPU worker does each week, without the store and the broker around it.

The matrix is drawn in numpy, vectorised, with the MPD's proportions: 2.26 tracks in the catalogue per playlist
(2.26M at 1M), playlist lengths lognormal around the MPD's mean of 66 (5 to 250 tracks), and each playlist's tracks
drawn 70 % from one of 1,000 taste groups and 30 % from the whole catalogue, both by a power law on popularity. It
is not the demo data's shape (``make_demo_data`` writes JSON one playlist at a time, hours at 1M) but it has the
size, the sparsity and the skew that set the cost of each stage.

Stages, each timed on its own (seconds, rate, the process's peak RSS, and on CUDA the peak device memory):

- **train**: our BPR (``ranker.recommenders.BPR``) on ``--device``, ``--epochs`` epochs (with ``--cpu-train``,
  again on the CPU with the fused kernel and every core, for the ratio);
- **buddies**: users as the normalised mean of their tracks' BPR vectors (``pairing.knn.taste_vectors``), exact
  cosine top-``k`` by ``pairing.knn.exact_topk`` (torch on CUDA, FAISS on the CPU);
- **picks**: the top 50 tracks of every user by ``ranker.recommenders.candidates.DeviceScorer`` over the BPR
  part, the whole catalogue scored in batched matrix products (item-kNN's rows are CPU work, measured by the
  store-backed run);
- **picks (CPU dense, sample)**: the same top 50 for ``--cpu-sample`` users by the numpy dense path, for the ratio.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

TRACKS_PER_PLAYLIST = 2.26  # the MPD: 2,262,292 distinct tracks over 1,000,000 playlists
GROUPS = 1000
IN_GROUP = 0.7
LENGTH_MEDIAN = 80.0  # drawn tracks per playlist before repeats are merged: 66 distinct on average, as the MPD


def say(line: str) -> None:
    print(line, flush=True)


def interactions(users: int, *, seed: int = 7) -> sp.csr_matrix:
    """A binary users × tracks CSR matrix with the MPD's proportions (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n_items = max(100, int(round(TRACKS_PER_PLAYLIST * users)))
    lengths = np.clip(np.rint(rng.lognormal(np.log(LENGTH_MEDIAN), 0.75, size=users)), 5, 250).astype(np.int64)
    popularity = (np.arange(n_items, dtype=np.float64) + 10.0) ** -0.9  # track i's weight: a power law in rank
    group_of = rng.integers(0, GROUPS, size=n_items)
    by_group = np.argsort(group_of, kind="stable")  # tracks ordered by group, each group by rank
    group_cum = np.cumsum(popularity[by_group])
    group_end = np.searchsorted(group_of[by_group], np.arange(GROUPS), side="right")
    group_lo = np.concatenate([[0.0], group_cum[group_end[:-1] - 1]])
    group_hi = group_cum[group_end - 1]
    global_cum = np.cumsum(popularity)
    rows = np.repeat(np.arange(users, dtype=np.int64), lengths)
    taste = rng.integers(0, GROUPS, size=users)[rows]
    draw = rng.random(len(rows))
    in_group = rng.random(len(rows)) < IN_GROUP
    cols = np.empty(len(rows), dtype=np.int64)
    g = taste[in_group]
    at = np.searchsorted(group_cum, group_lo[g] + draw[in_group] * (group_hi[g] - group_lo[g]))
    cols[in_group] = by_group[np.minimum(at, n_items - 1)]
    cols[~in_group] = np.minimum(np.searchsorted(global_cum, draw[~in_group] * global_cum[-1]), n_items - 1)
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(users, n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _peaks(device: str) -> dict[str, float]:
    out = {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    if device.startswith("cuda"):
        import torch

        out["peak_device_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run(users: int, *, device: str, epochs: int, k: int = 50, picks_batch: int = 65_536,
        cpu_sample: int = 500, cpu_train: bool = False) -> dict[str, Any]:
    """The stages at one size; returns their figures (and prints them as it goes)."""
    import torch

    from pairing.knn import exact_topk
    from ranker.recommenders import BPR, Blend
    from ranker.recommenders.candidates import DeviceScorer
    from ranker.recommenders.vectors import taste_vectors

    say(f"\n== {users:,} synthetic users on {device} ==")
    out: dict[str, Any] = {"users": users, "device": device, "stages": {}}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
    t = time.perf_counter()
    matrix = interactions(users)
    out["tracks"], out["rows"] = matrix.shape[1], int(matrix.nnz)
    out["stages"]["data"] = {"seconds": round(time.perf_counter() - t, 2)}
    say(f"  data: {matrix.shape[0]:,} users × {matrix.shape[1]:,} tracks, {matrix.nnz:,} rows "
        f"({out['stages']['data']['seconds']:.1f} s to draw)")

    t = time.perf_counter()
    bpr = BPR(factors=64, epochs=epochs, eval_every=epochs, device=device, batch_size=65_536 if device != "cpu"
              else 16_384, random_state=0).fit(matrix)
    _sync(device)
    seconds = time.perf_counter() - t
    out["stages"]["train"] = {"seconds": round(seconds, 2), "epochs": bpr.metrics_["epochs"],
                              "samples_per_s": bpr.metrics_["samples_per_s"],
                              "val_hit_rate_50": bpr.metrics_["val_hit_rate_50"], **_peaks(device)}
    say(f"  train: {seconds:.1f} s, {bpr.metrics_['epochs']} epochs, {bpr.metrics_['samples_per_s'] / 1e6:.1f}M "
        f"samples/s, val hit@50 {bpr.metrics_['val_hit_rate_50']}")

    if cpu_train and device != "cpu":
        cpu = BPR(factors=64, epochs=1, device="cpu", random_state=0).fit(matrix)  # a rate: one epoch is enough
        out["stages"]["train_cpu"] = {key: cpu.metrics_[key] for key in ("seconds", "samples_per_s", "kernel",
                                                                           "threads", "val_hit_rate_50")}
        say(f"  train on the CPU ({cpu.metrics_['kernel']} kernel, {cpu.metrics_['threads']} threads): "
            f"{cpu.metrics_['seconds']:.1f} s, {cpu.metrics_['samples_per_s'] / 1e6:.1f}M samples/s → {device} "
            f"{bpr.metrics_['samples_per_s'] / cpu.metrics_['samples_per_s']:.1f}×")
        del cpu

    t = time.perf_counter()
    vectors = taste_vectors(bpr.item_factors, matrix)
    neighbours = exact_topk(vectors, k, device=device)
    _sync(device)
    seconds = time.perf_counter() - t
    out["stages"]["buddies"] = {"seconds": round(seconds, 2), "users_per_s": round(users / seconds, 1),
                                "search_seconds": round(neighbours.search_seconds, 2), **_peaks(device)}
    sample = np.random.default_rng(2).choice(users, size=min(200, users), replace=False)
    sims = vectors[sample] @ vectors.T  # the same top k by numpy on the CPU, for a sample of users
    sims[np.arange(len(sample)), sample] = -np.inf
    truth = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    agree = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(neighbours.ids[sample], truth, strict=True)]))
    out["stages"]["buddies"]["same_top_k_as_numpy"] = round(agree, 4)
    say(f"  buddies: {seconds:.1f} s ({users / seconds:,.0f} users/s, exact cosine top {k}); same top {k} as numpy "
        f"on {len(sample)} users: {agree:.3f}")
    del neighbours, vectors, sims

    blend = Blend(components=[(bpr, 1.0)])
    t = time.perf_counter()
    scorer = DeviceScorer(blend, device=device)
    picked = 0
    for start in range(0, users, picks_batch):
        rows = np.arange(start, min(start + picks_batch, users))
        ids, _ = scorer.recommend(rows, matrix[rows], k)
        picked += int((ids >= 0).sum())
    _sync(device)
    seconds = time.perf_counter() - t
    out["stages"]["picks"] = {"seconds": round(seconds, 2), "users_per_s": round(users / seconds, 1),
                              "ms_per_user": round(1000 * seconds / users, 4), "tracks_picked": picked,
                              "chunk_users": scorer.chunk, **_peaks(device)}
    say(f"  picks: {seconds:.1f} s ({users / seconds:,.0f} users/s, {1000 * seconds / users:.3f} ms per user, "
        f"top {k} of {matrix.shape[1]:,} tracks, chunks of {scorer.chunk} users)")

    if cpu_sample:
        rows = np.random.default_rng(1).choice(users, size=min(cpu_sample, users), replace=False)
        t = time.perf_counter()
        step = max(1, (256 * 2**20) // (16 * matrix.shape[1]))
        dense_ids = [blend.recommend(rows[s:s + step], matrix[rows[s:s + step]], k)[0]
                     for s in range(0, len(rows), step)]
        seconds = time.perf_counter() - t
        got, _ = scorer.recommend(rows, matrix[rows], k)
        same = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, np.vstack(dense_ids), strict=True)]))
        out["stages"]["picks_cpu_dense_sample"] = {
            "users": len(rows), "ms_per_user": round(1000 * seconds / len(rows), 3),
            "device_speedup": round((seconds / len(rows)) / (out["stages"]["picks"]["seconds"] / users), 1),
            "same_top_k": round(same, 4), "threads": torch.get_num_threads()}
        say(f"  picks, numpy dense on the CPU for {len(rows)} users: {1000 * seconds / len(rows):.2f} ms per user "
            f"→ {out['stages']['picks_cpu_dense_sample']['device_speedup']}× per user on {device}; same top {k}: "
            f"{same:.3f}")
    return out
