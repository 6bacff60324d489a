"""WSGI entry point: Django at ``/``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recsys_site.settings.local")

application = get_wsgi_application()
