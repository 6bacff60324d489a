from pymongo import ASCENDING, DESCENDING, IndexModel

from . import collections as c

INDEXES = {
    c.MODELS: [IndexModel([("kind", ASCENDING), ("created_at", DESCENDING)]), IndexModel([("status", ASCENDING)])],
}
