"""Names of the MongoDB collections that the pairing package owns (others read them through ``pairing.selectors``)."""

BUDDIES = "buddies"  # one document per user: their top-K taste buddies with evidence, and their place on the map
PAIRING_STATE = "pairing_state"  # one document: the model version, method and time of the buddies now served
TASTE_MAP = "taste_map"  # "state" (projection, clusters) and "chunk:NNNN" documents: a seeded sample of the map
PAIRING_EVALUATIONS = "pairing_evaluations"  # one document per ``evaluate_pairing`` run (HetRec friend recall)
