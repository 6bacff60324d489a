from pymongo import ASCENDING, DESCENDING, IndexModel

from .collections import JOB_LOCKS, JOB_RUNS, JOB_SHARDS

INDEXES = {
    JOB_RUNS: [IndexModel([("queued_at", DESCENDING)]), IndexModel([("job", ASCENDING), ("queued_at", DESCENDING)])],
    JOB_LOCKS: [IndexModel([("expires_at", ASCENDING)])],
    # the reaper's two questions: which leases lapsed, which runs still have shards to do
    JOB_SHARDS: [IndexModel([("status", ASCENDING), ("lease_until", ASCENDING)]),
                 IndexModel([("run_id", ASCENDING), ("step", ASCENDING), ("n", ASCENDING)])],
}
