"""Names of the MongoDB collections that the ranker package owns.

Other packages read them only through the selectors of ranker's subpackages (``training``, ``picks``, ...).
"""

MODELS = "models"  # one document per trained model version: status, parameters, data snapshot, metrics
MODEL_FILES = "model_files"  # GridFS bucket (``model_files.files``, ``.chunks``): every model version's files
MODEL_LIVE = "model_live"  # one document per model kind: the version serving now (swapped atomically)
EVALUATIONS = "evaluations"  # one per ``manage.py evaluate`` run or version evaluated: its report, for the dashboard
PICKS = "picks"  # one document per user: precomputed track and playlist picks of the live model
PICKS_REFRESHES = "picks_refreshes"  # one document per user whose picks a refresh rewrote: when (the swap replays)
PICKS_STATE = "picks_state"  # one document: which model version the precomputed picks come from, and when
SERVED = "served"  # one document per served pick list (rec_id, user, variant, items): joined to feedback for A/B
# A/B results kept up to date as lists are served and feedback arrives (ranker.experiments.stats): no scan per read.
EXPERIMENT_STATS = "experiment_stats"  # one document per (experiment, variant): lists, users, clicks, plays, minutes
EXPERIMENT_USERS = "experiment_users"  # one per (experiment, variant, user): exposed or not, summed ms_played
EXPERIMENT_PENDING = "experiment_pending"  # feedback whose served list was not logged yet, claimed once it is
# The degradation watch (ranker.watch): online follow-through and score drift against their thresholds.
WATCH_STATE = "watch_state"  # one document per watched signal: degraded or not, since when, the last check's figures
WATCH_ALERTS = "watch_alerts"  # one document per threshold crossing (gone bad, back to normal) with its figures
# The learned playlist ranker (ranker.playlist_ranking): one document per version (metrics, learned weights, the
# file's id and SHA-256); its live version is the ``model_live`` document ``playlist_ranker``.
PLAYLIST_RANKERS = "playlist_rankers"
PLAYLIST_RANKER_FILES = "playlist_ranker_files"  # GridFS bucket: each version's one .npz
