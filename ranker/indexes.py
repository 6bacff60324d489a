from django.conf import settings
from pymongo import ASCENDING, DESCENDING, IndexModel

from recsys_site.mongo import retention_index

from . import collections as c

INDEXES = {
    # ``ts``: lists older than SERVED_RETENTION_DAYS expire (TTL), and the weekly cleanup deletes them by a range
    c.SERVED: [IndexModel([("experiment", ASCENDING), ("variant", ASCENDING)]), IndexModel([("user", ASCENDING)]),
               retention_index("ts", settings.SERVED_RETENTION_DAYS)],
    c.EXPERIMENT_USERS: [IndexModel([("experiment", ASCENDING), ("variant", ASCENDING)])],
    c.EXPERIMENT_PENDING: [retention_index("ts", 1.0)],  # feedback of a list never logged waits a day at most
    # the open alerts (the dashboard's notice), a signal's history, and the closed ones past their retention
    c.WATCH_ALERTS: [IndexModel([("open", ASCENDING), ("at", DESCENDING)]),
                     IndexModel([("signal", ASCENDING), ("at", DESCENDING)])],
    c.MODELS: [IndexModel([("kind", ASCENDING), ("created_at", DESCENDING)]), IndexModel([("status", ASCENDING)])],
}
