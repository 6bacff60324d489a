"""Names of the MongoDB collections that the pairing package owns (others read them through ``pairing.selectors``)."""

BUDDIES = "buddies"  # one document per user: their top-K taste buddies with similarity and evidence
PAIRING_STATE = "pairing_state"  # one document: the model version, method and time of the buddies now served
