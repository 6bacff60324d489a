"""Celery wiring only: the app, its settings (``CELERY_*`` in Django settings), queues and the beat schedule.

Tasks live in each package's ``tasks.py`` and stay thin: they call one service. Three queues: ``default`` (job steps,
picks shards), ``gpu`` (training and KNN) and ``refresh`` (per-user picks refreshes after feedback, so that a burst
of feedback never holds up a job's next step). One worker consuming all three is the default (``make run``); a GPU
machine can run a worker with ``-Q gpu`` alone. The beat schedule (heartbeat, ``weekly_refresh`` at
``REFRESH_CRONTAB``, the degradation watch every ``WATCH_INTERVAL_SECONDS``, reaping of runs whose worker died) is
``CELERY_BEAT_SCHEDULE`` in ``recsys_site/settings/base.py``.
"""

from celery import Celery
from kombu import Queue

app = Celery("buddies")


def __getattr__(name: str):
    """``celery_app:django_settings``, the app's configuration source: Django's settings, read when the app first
    needs its configuration. No default settings module: a worker or beat started without DJANGO_SETTINGS_MODULE
    stops there, saying what to set. Importing ``recsys_site`` (which imports this app) for a helper such as
    ``recsys_site.embedded`` needs no settings."""
    if name != "django_settings":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # lazy: recsys_site imports this module, and Django's settings are read only once one is named
    from django.conf import settings

    from recsys_site.settings import require_settings_module

    require_settings_module("celery_app")
    return settings


app.config_from_object("celery_app:django_settings", namespace="CELERY")
app.conf.task_default_queue = "default"
app.conf.task_queues = (Queue("default"), Queue("gpu"), Queue("refresh"))
app.autodiscover_tasks()

__all__ = ["app"]
