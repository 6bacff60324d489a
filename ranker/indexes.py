from pymongo import ASCENDING, DESCENDING, IndexModel

from . import collections as c

INDEXES = {
    c.SERVED: [IndexModel([("experiment", ASCENDING), ("variant", ASCENDING)]), IndexModel([("user", ASCENDING)])],
    c.MODELS: [IndexModel([("kind", ASCENDING), ("created_at", DESCENDING)]), IndexModel([("status", ASCENDING)])],
}
