"""Track recommenders behind one contract (``base.Recommender``); heavy imports (torch) stay inside ``fit``."""

from .base import REGISTRY, Recommender, topk
from .blend import Blend
from .bpr import BPR
from .neighbours import ItemKNN, Popularity

__all__ = ["BPR", "REGISTRY", "Blend", "ItemKNN", "Popularity", "Recommender", "topk"]
