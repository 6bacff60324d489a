"""The degradation watch: online follow-through and score drift checked against their thresholds.

``services.watch_check`` (the ``ranker.watch_check`` task, on beat every ``WATCH_INTERVAL_SECONDS``) measures both
signals, records each threshold crossing once (``watch_alerts``), keeps each signal's state (``watch_state``), sets
the ``buddies_degraded`` gauges and, with ``WATCH_RETRAIN``, starts a retrain when a signal goes bad;
``selectors.watch_alerts_open`` is what the dashboard's notice shows.
"""
