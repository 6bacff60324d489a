"""Split settings: ``base`` holds everything, the others override a few values.

Pick one with ``DJANGO_SETTINGS_MODULE``. There is **no default**: ``manage.py``, the WSGI application and the Celery
app refuse to start without it (``require_settings_module``), so that no server ever runs by accident with DEBUG on
and the published development secret key. ``make run`` and the tests name theirs.
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

SETTINGS_HELP = (
    "DJANGO_SETTINGS_MODULE is not set, and Buddies has no default settings module (the development one runs with "
    "DEBUG on and a published secret key). Set DJANGO_SETTINGS_MODULE=recsys_site.settings.production on a server "
    "(it needs DJANGO_SECRET_KEY, MONGO_URI, CELERY_BROKER_URL and DATABASE_URL; see docs/DEPLOY.md), or "
    "DJANGO_SETTINGS_MODULE=recsys_site.settings.local on a developer's machine (`make run` sets it for you)."
)


def require_settings_module(program: str) -> str:
    """The settings module named in the environment; ImproperlyConfigured naming the variable when there is none."""
    module = os.environ.get("DJANGO_SETTINGS_MODULE", "").strip()
    if not module:
        raise ImproperlyConfigured(f"{program}: {SETTINGS_HELP}")
    return module
