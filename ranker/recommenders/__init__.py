"""Track recommenders behind one contract (``base.Recommender``); torch and implicit are imported in ``fit``."""

from .als import ALS
from .base import REGISTRY, Recommender, topk
from .blend import Blend
from .bpr import BPR
from .neighbours import ItemKNN, Popularity

__all__ = ["ALS", "BPR", "REGISTRY", "Blend", "ItemKNN", "Popularity", "Recommender", "topk"]
