"""Names of the MongoDB collections that the ranker package owns.

Other packages read them only through the selectors of ranker's subpackages (``training``, ``picks``, ...).
"""

MODELS = "models"  # one document per trained model version: status, parameters, data snapshot, metrics
MODEL_FILES = "model_files"  # GridFS bucket (``model_files.files``, ``.chunks``): every model version's files
MODEL_LIVE = "model_live"  # one document per model kind: the version serving now (swapped atomically)
EVALUATIONS = "evaluations"  # one document per ``manage.py evaluate`` run: the JSON report, for the dashboard
PICKS = "picks"  # one document per user: precomputed track and playlist picks of the live model
PICKS_STATE = "picks_state"  # one document: which model version the precomputed picks come from, and when
SERVED = "served"  # one document per served pick list (rec_id, user, variant, items): joined to feedback for A/B
