"""Celery wiring only: the app, its settings (``CELERY_*`` in Django settings), queues and the beat schedule.

Tasks live in each package's ``tasks.py`` and stay thin: they call one service.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsys_site.settings.local")

app = Celery("buddies")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_default_queue = "default"
app.autodiscover_tasks()

__all__ = ["app"]
