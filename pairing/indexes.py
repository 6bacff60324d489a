from pymongo import ASCENDING, DESCENDING, IndexModel

from . import collections as c

INDEXES = {
    # ``user`` repeats ``_id`` so that a prefix search is an index range: SecantusDB scans for ranges on ``_id``.
    # ``buddies`` is replaced whole by a renamed side collection, which ``pairing.services`` indexes the same way.
    c.BUDDIES: [IndexModel([("user", ASCENDING)])],
    c.PAIRING_EVALUATIONS: [IndexModel([("kind", DESCENDING), ("created_at", DESCENDING)])],
}
