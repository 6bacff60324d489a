from pymongo import ASCENDING, DESCENDING, IndexModel

from .jobs import JOB_LOCKS, JOB_RUNS

INDEXES = {
    JOB_RUNS: [IndexModel([("queued_at", DESCENDING)]), IndexModel([("job", ASCENDING), ("queued_at", DESCENDING)])],
    JOB_LOCKS: [IndexModel([("expires_at", ASCENDING)])],
}
