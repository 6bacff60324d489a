"""Names of the MongoDB collections that the ingestion package owns.

Other packages read them only through ``ingestion.selectors``.
"""

PLAYLISTS = "playlists"
TRACKS = "tracks"
ARTISTS = "artists"
USERS = "users"
LISTENS = "listens"  # (user, item, weight) from triplet files
FRIENDSHIPS = "friendships"
INGEST_FILES = "ingest_files"  # one document per ingested file content (sha256)
INGEST_RUNS = "ingest_runs"
CATALOGUE_STATE = "catalogue_state"
LISTEN_ITEMS = "listen_items"  # names of listened items (HetRec artists.dat), by item id
EVENTS = "events"  # feedback from the API: play (ms_played), skip, like, follow, unfollow
CATALOGUE_STATS = "catalogue_stats"  # one precomputed document of catalogue statistics for the dashboard
