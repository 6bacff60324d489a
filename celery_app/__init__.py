"""Celery wiring only: the app, its settings (``CELERY_*`` in Django settings), queues and the beat schedule.

Tasks live in each package's ``tasks.py`` and stay thin: they call one service. Three queues: ``default`` (job steps,
picks shards), ``gpu`` (training and KNN) and ``refresh`` (per-user picks refreshes after feedback, so that a burst
of feedback never holds up a job's next step). One worker consuming all three is the default (``make run``); a GPU
machine can run a worker with ``-Q gpu`` alone. The beat schedule (heartbeat, ``weekly_refresh`` at
``REFRESH_CRONTAB``, reaping of runs whose worker died) is ``CELERY_BEAT_SCHEDULE`` in ``recsys_site/settings/base.py``.
"""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsys_site.settings.local")

app = Celery("buddies")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_default_queue = "default"
app.conf.task_queues = (Queue("default"), Queue("gpu"), Queue("refresh"))
app.autodiscover_tasks()

__all__ = ["app"]
