"""Names of the MongoDB collections that the recsys_site package owns: job runs and the health heartbeats.

Other packages read them only through ``recsys_site.jobs`` and ``recsys_site.health``.
"""

JOB_RUNS = "job_runs"  # one document per job run: status, steps, progress, metrics, the worker
JOB_LOCKS = "job_locks"  # one document per running job: who holds it and until when (renewed while it runs)
JOB_SHARDS = "job_shards"  # one document per shard of a sharded step: its lease, attempts and metrics
HEARTBEATS = "heartbeats"  # one document per source (beat, worker): when it last proved itself alive
