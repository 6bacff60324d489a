"""The one place that decides CPU or GPU (``RECSYS_DEVICE=auto|cpu|cuda``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings


def resolve_device(requested: str | None = None) -> Any:
    """A ``torch.device``: ``auto`` takes CUDA when torch sees a GPU; ``cuda`` without one is an error."""
    import torch  # lazy: torch takes 2.9 s to import (measured); only training and search need it

    if requested is None:
        requested = settings.RECSYS_DEVICE
    requested = (requested or "auto").lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("RECSYS_DEVICE=cuda but torch sees no CUDA device (torch "
                           f"{torch.__version__}); use RECSYS_DEVICE=auto or cpu")
    if requested not in ("cpu", "cuda") and not requested.startswith("cuda:"):
        raise ValueError(f"RECSYS_DEVICE must be auto, cpu or cuda, not {requested!r}")
    return torch.device(requested)
