"""Bayesian Personalised Ranking (Rendle et al. 2009) in PyTorch: user and item factors plus item bias.

Training is plain SGD on the pairwise loss −log σ(x_ui − x_uj), one epoch = as many (u, i, j) triples as there
are positives. Two ways to run an epoch, chosen by ``kernel`` (ADR 0009):

- ``fused`` (the CPU default): ``bpr_kernel``'s compiled loop draws each triple (a positive uniformly with
  replacement, a negative uniformly or hard) and updates its three rows of the torch factors in place, on
  ``threads`` lock-free threads, as ``implicit`` does; a mini-batch of torch ops cannot match it on the CPU (the
  gather and scatter alone cost more per sample than implicit's whole loop).
- ``torch`` (CUDA, and the CPU where no C compiler is found): mini-batches of a shuffled epoch, gradients written
  by hand and scattered with ``index_add_`` (autograd and an optimiser object cost 3–4× the time).

``auto`` takes ``fused`` on the CPU when it can be built, ``torch`` otherwise. Negatives are hard (the user's early
skips) with probability ``hard_negative_share`` where a user has any, uniform over items otherwise; a sampled
"negative" that is in fact a positive contributes nothing.

Early stopping: up to ``validation_users`` users with two or more positives each hold one positive out; every
``eval_every`` epochs the held-out hit rate at 50 (fewer on catalogues under 1,000 items) is measured, and
training stops after ``patience`` evaluations without improvement, keeping the best factors.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from ranker.recommenders.device import resolve_device

from .base import Callback, Recommender, check_fitted, check_params, cosine_top, sliced
from .bpr_kernel import Epochs, load

log = logging.getLogger(__name__)

KERNELS = ("auto", "fused", "torch")


class BPR(Recommender):
    name = "bpr"

    def __init__(self, *, factors: int = 64, learning_rate: float = 0.1, regularization: float = 0.01,
                 epochs: int = 100, batch_size: int = 16384, hard_negative_share: float = 0.5,
                 validation_users: int = 1000, eval_every: int = 5, patience: int = 3, device: str = "cpu",
                 threads: int | None = None, kernel: str = "auto", random_state: int = 0) -> None:
        check_params("bpr", factors=(factors, factors >= 1), learning_rate=(learning_rate, learning_rate > 0),
                     regularization=(regularization, regularization >= 0), epochs=(epochs, epochs >= 1),
                     batch_size=(batch_size, batch_size >= 1),
                     hard_negative_share=(hard_negative_share, 0 <= hard_negative_share <= 1),
                     eval_every=(eval_every, eval_every >= 1), patience=(patience, patience >= 1),
                     kernel=(kernel, kernel in KERNELS))
        self.factors, self.learning_rate, self.regularization = factors, learning_rate, regularization
        self.epochs, self.batch_size, self.hard_negative_share = epochs, batch_size, hard_negative_share
        self.validation_users, self.eval_every, self.patience = validation_users, eval_every, patience
        self.device, self.threads, self.kernel, self.random_state = device, threads, kernel, random_state
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.item_bias: np.ndarray | None = None
        self.metrics_: dict[str, Any] = {}

    @property
    def n_items(self) -> int:
        check_fitted(self, "item_factors")
        return self.item_factors.shape[0]

    def get_params(self) -> dict[str, Any]:
        keys = ("factors", "learning_rate", "regularization", "epochs", "batch_size", "hard_negative_share",
                "validation_users", "eval_every", "patience", "device", "threads", "kernel", "random_state")
        return {key: getattr(self, key) for key in keys}

    def get_state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors, "item_bias": self.item_bias}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.user_factors = state["user_factors"]
        self.item_factors = state["item_factors"]
        self.item_bias = state["item_bias"]

    # -- training ---------------------------------------------------------------------------------------------

    def fit(self, interactions: sp.csr_matrix, *, negatives: sp.csr_matrix | None = None,
            show_progress: bool = False, callback: Callback | None = None) -> BPR:
        import torch  # lazy: torch takes 2.9 s to import (measured); only training and search need it

        if self.threads:
            torch.set_num_threads(self.threads)
        threads = self.threads or torch.get_num_threads()
        device = resolve_device(self.device)
        rng = np.random.default_rng(self.random_state)
        gen = torch.Generator(device=device).manual_seed(self.random_state)
        train = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
        train.sum_duplicates()
        train.eliminate_zeros()
        if train.nnz == 0:
            raise ValueError("BPR needs at least one positive interaction")
        n_users, n_items = train.shape
        val_users, val_items = self._hold_out(train, rng)
        train.sort_indices()  # the fused kernel binary-searches each user's row
        # On a tiny catalogue the top 50 would hold nearly everything and every hit would be certain.
        val_k = min(50, max(1, n_items // 20))
        neg = negatives.tocsr() if negatives is not None and negatives.nnz else None
        if neg is not None and neg.shape != train.shape:
            raise ValueError(f"BPR: negatives have shape {neg.shape} but interactions {train.shape}")
        kernel = self._choose_kernel(device)
        if kernel == "fused":
            fused = Epochs(load(), train, neg, self.hard_negative_share)
            epoch_seeds = rng.integers(0, 2**63, size=self.epochs)

            def run_epoch(epoch: int, U: Any, V: Any) -> tuple[float, int]:
                return fused.run(U, V, lr=self.learning_rate, reg=self.regularization,
                                 seed=int(epoch_seeds[epoch - 1]), threads=threads, samples=train.nnz)
        else:
            run_epoch = self._torch_epochs(train, neg, device, gen)

        # The item bias rides as an extra column of the item factors against a constant 1 in the user
        # factors: one gather and one scatter per side instead of two.
        scale = 0.1 / self.factors ** 0.5
        U = torch.randn(n_users, self.factors + 1, generator=gen, device=device) * scale
        U[:, -1] = 1.0
        V = torch.randn(n_items, self.factors + 1, generator=gen, device=device) * scale
        V[:, -1] = 0.0
        best: tuple[float, Any] = (-1.0, None)
        stale, epochs_run, samples, skipped = 0, 0, 0, 0
        started = time.perf_counter()
        bar = tqdm(range(1, self.epochs + 1), disable=not show_progress, unit="epoch", desc="BPR")
        for epoch in bar:
            loss_sum, skip = run_epoch(epoch, U, V)
            samples += train.nnz
            skipped += skip
            epochs_run = epoch
            metrics = {"loss": loss_sum / train.nnz}
            if len(val_users) and (epoch % self.eval_every == 0 or epoch == self.epochs):
                hit = self._hit_rate(U, V, train, val_users, val_items, k=val_k)
                metrics["val_hit_rate_50"] = hit
                if hit > best[0]:
                    best, stale = (hit, (U.clone(), V.clone())), 0
                else:
                    stale += 1
            bar.set_postfix({k: round(v, 4) for k, v in metrics.items()})
            elapsed = time.perf_counter() - started
            log.debug("BPR epoch %d: %s (%.1f s)", epoch, metrics, elapsed)
            if callback:
                callback(epoch, elapsed, metrics)
            if stale >= self.patience:
                log.info("BPR stopped early at epoch %d (best val_hit_rate_50 %.4f)", epoch, best[0])
                break
        if best[1] is not None:
            U, V = best[1]
        elapsed = time.perf_counter() - started
        self.user_factors = U[:, :-1].cpu().numpy().copy()
        self.item_factors = V[:, :-1].cpu().numpy().copy()
        self.item_bias = V[:, -1].cpu().numpy().copy()
        self.metrics_ = {"epochs": epochs_run, "seconds": round(elapsed, 3), "samples": samples,
                         "samples_per_s": round(samples / elapsed, 1) if elapsed else 0.0,
                         "val_hit_rate_50": round(best[0], 6) if best[1] is not None else None, "val_k": val_k,
                         "device": str(device), "kernel": kernel, "threads": threads if kernel == "fused" else
                         torch.get_num_threads(), "skipped_share": round(skipped / samples, 6) if samples else 0.0}
        log.info("BPR trained: %s", self.metrics_)
        return self

    def _choose_kernel(self, device: Any) -> str:
        """``fused`` or ``torch`` for this fit: see the module docstring."""
        if device.type != "cpu":
            if self.kernel == "fused":
                raise ValueError(f"bpr: kernel='fused' runs on the CPU only, not on {device}; use 'auto' or 'torch'")
            return "torch"
        if self.kernel == "torch":
            return "torch"

        if load() is not None:
            return "fused"
        if self.kernel == "fused":
            raise RuntimeError("bpr: kernel='fused' but the fused CPU kernel could not be built (no C compiler? "
                               "see the warning above); use kernel='auto' or 'torch'")
        return "torch"

    def _torch_epochs(self, train: sp.csr_matrix, neg: sp.csr_matrix | None, device: Any, gen: Any) -> Any:
        """An epoch function for the mini-batch torch path: shuffled positives, hand-written gradients."""
        import torch  # lazy: torch takes 2.9 s to import (measured); only training and search need it

        n_items = train.shape[1]
        coo = train.tocoo()
        users = torch.as_tensor(coo.row.astype(np.int64), device=device)
        items = torch.as_tensor(coo.col.astype(np.int64), device=device)
        positive_keys = torch.sort(users * n_items + items).values
        neg_indptr = torch.as_tensor(neg.indptr.astype(np.int64), device=device) if neg is not None else None
        neg_indices = torch.as_tensor(neg.indices.astype(np.int64), device=device) if neg is not None else None
        lr, decay = self.learning_rate, self.learning_rate * self.regularization

        @torch.no_grad()
        def run_epoch(epoch: int, U: Any, V: Any) -> tuple[float, int]:
            order = torch.randperm(len(users), generator=gen, device=device)
            u_all, i_all = users[order], items[order]
            j_all = torch.randint(n_items, (len(order),), generator=gen, device=device)
            if neg is not None and self.hard_negative_share > 0:
                j_all = self._hard_negatives(u_all, j_all, neg_indptr, neg_indices, gen)
            keys = u_all * n_items + j_all
            found = torch.searchsorted(positive_keys, keys).clamp_(max=len(positive_keys) - 1)
            # A sampled "negative" that is a positive of the user contributes nothing.
            valid_all = (positive_keys[found] != keys).float()
            loss_sum = torch.zeros((), device=device)
            for start in range(0, len(order), self.batch_size):
                stop = start + self.batch_size
                u, i, j, valid = u_all[start:stop], i_all[start:stop], j_all[start:stop], valid_all[start:stop]
                uu, vi, vj = U.index_select(0, u), V.index_select(0, i), V.index_select(0, j)
                diff = vi - vj
                x = (uu * diff).sum(1)
                loss_sum += (torch.nn.functional.softplus(-x) * valid).sum()
                g = (torch.sigmoid(-x) * valid * lr)[:, None]  # lr · d log σ(x) / dx
                du = (g * diff).sub_(uu, alpha=decay)
                du[:, -1] = 0.0  # the constant column stays 1
                U.index_add_(0, u, du)
                V.index_add_(0, i, (g * uu).sub_(vi, alpha=decay))
                V.index_add_(0, j, (g * uu).neg_().sub_(vj, alpha=decay))
            return float(loss_sum), int(len(valid_all) - valid_all.sum())

        return run_epoch

    def _hold_out(self, train: sp.csr_matrix, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Remove one positive of up to ``validation_users`` users (with ≥ 2 positives) from ``train``."""
        lengths = np.diff(train.indptr)
        eligible = np.flatnonzero(lengths >= 2)
        if self.validation_users <= 0 or len(eligible) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        chosen = np.sort(rng.choice(eligible, size=min(self.validation_users, len(eligible)), replace=False))
        offsets = train.indptr[chosen] + rng.integers(0, lengths[chosen])
        held = train.indices[offsets].astype(np.int64)
        train.data[offsets] = 0.0
        train.eliminate_zeros()
        return chosen.astype(np.int64), held

    def _hard_negatives(self, u, j, neg_indptr, neg_indices, gen):
        import torch  # lazy: torch takes 2.9 s to import (measured); only training and search need it

        counts = neg_indptr[u + 1] - neg_indptr[u]
        draw = torch.rand(len(u), generator=gen, device=u.device)
        use = (counts > 0) & (draw < self.hard_negative_share)
        if bool(use.any()):
            pick = (torch.rand(int(use.sum()), generator=gen, device=u.device) * counts[use]).long()
            j = j.clone()
            j[use] = neg_indices[neg_indptr[u[use]] + pick]
        return j

    @staticmethod
    def _hit_rate(U, V, train, val_users, val_items, k: int = 50, chunk: int = 512) -> float:
        """Share of validation users whose held-out positive is in their top ``k`` (training positives masked)."""
        import torch  # lazy: torch takes 2.9 s to import (measured); only training and search need it

        hits = 0
        for start in range(0, len(val_users), chunk):
            rows = val_users[start:start + chunk]
            scores = U[torch.as_tensor(rows, device=U.device)] @ V.T
            liked = train[rows].tocoo()
            scores[torch.as_tensor(liked.row, device=U.device).long(),
                   torch.as_tensor(liked.col, device=U.device).long()] = -torch.inf
            top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.cpu().numpy()
            hits += int((top == val_items[start:start + chunk, None]).any(axis=1).sum())
        return hits / len(val_users)

    # -- serving ------------------------------------------------------------------------------------------------

    def fold_in(self, user_items: sp.csr_matrix) -> np.ndarray:
        """A vector for each row from its items' vectors (their mean): BPR cannot refit one user cheaply."""
        check_fitted(self, "item_factors")
        rows = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
        rows.data[:] = 1.0
        counts = np.asarray(rows.sum(axis=1)).ravel()
        counts[counts == 0] = 1.0
        return np.asarray(rows @ self.item_factors) / counts[:, None]

    def score(self, userids: np.ndarray | None, user_items: sp.csr_matrix) -> np.ndarray:
        check_fitted(self, "item_factors")
        vectors = self.fold_in(user_items) if userids is None else self.user_factors[userids]
        return (vectors @ self.item_factors.T + self.item_bias).astype(np.float32)

    def score_items(self, userids: np.ndarray | None, user_items: sp.csr_matrix, items: np.ndarray) -> np.ndarray:
        check_fitted(self, "item_factors")
        vectors = self.fold_in(user_items) if userids is None else self.user_factors[userids]
        return (vectors @ sliced(self, "item_factors", items).T + sliced(self, "item_bias", items)).astype(np.float32)

    def similar_items(self, itemid: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        check_fitted(self, "item_factors")
        return cosine_top(self.item_factors, itemid, k)

    def similar_users(self, userid: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        check_fitted(self, "user_factors")
        return cosine_top(self.user_factors, userid, k)
