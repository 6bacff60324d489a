from celery import shared_task


@shared_task(name="recsys_site.heartbeat", ignore_result=True, time_limit=30, soft_time_limit=20)
def heartbeat() -> None:
    """Sent by beat, run by a worker: its timestamp proves both are alive (shown by /healthz)."""
    from .health import heartbeat_record

    heartbeat_record(source="beat")
