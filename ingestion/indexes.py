from django.conf import settings
from pymongo import ASCENDING, DESCENDING, IndexModel

from recsys_site.mongo import retention_index

from . import collections as c

INDEXES = {
    c.PLAYLISTS: [
        IndexModel([("owner", ASCENDING)]),
        IndexModel([("num_followers", DESCENDING)]),
        IndexModel([("name_norm", ASCENDING)]),
    ],
    # Only indexes that a query uses: each one is upkeep on every write and, on a first load, a scan of the
    # whole collection (docs/adr/0011-bulk-first-load.md). Nothing queries playlists by ``source.file`` or tracks
    # by ``artist_key``.
    # ``name`` and ``artist_name``: the dashboard's type-ahead for seed tracks reads prefixes as ranges on them
    # (``selectors.track_lookup``).
    c.TRACKS: [IndexModel([("num_playlists", DESCENDING)]), IndexModel([("name", ASCENDING)]),
               IndexModel([("artist_name", ASCENDING)])],
    c.ARTISTS: [IndexModel([("num_tracks", DESCENDING)])],
    c.USERS: [IndexModel([("source", ASCENDING)])],
    # ``_id`` is "<user>|<item>" (and "<user>|<friend>"), which already makes each pair unique.
    c.LISTENS: [IndexModel([("user", ASCENDING)]), IndexModel([("source", ASCENDING)])],
    c.FRIENDSHIPS: [IndexModel([("user", ASCENDING)]), IndexModel([("source", ASCENDING)])],
    c.INGEST_FILES: [IndexModel([("sha256", ASCENDING)], unique=True)],
    c.EVENTS: [IndexModel([("user", ASCENDING), ("ts", ASCENDING)]), IndexModel([("kind", ASCENDING)]),
               # events since the catalogue statistics were computed are counted by a range on ``ts``; events
               # older than EVENTS_RETENTION_DAYS expire (and the weekly cleanup deletes them where no TTL runs)
               retention_index("ts", settings.EVENTS_RETENTION_DAYS),
               # A/B results and engagement join feedback to served lists by ``rec_id``
               IndexModel([("rec_id", ASCENDING)], sparse=True),
               # a client's retry of an event (same user and event_id) is stored once; events without an event_id
               # are not in this index (partial), so any number of them may be stored
               IndexModel([("user", ASCENDING), ("event_id", ASCENDING)], unique=True, name="user_1_event_id_1",
                          partialFilterExpression={"event_id": {"$exists": True}})],
    c.INGEST_RUNS: [IndexModel([("started_at", DESCENDING)])],
}
