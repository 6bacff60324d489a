"""Settings for the test suite: the servers are started by tests/conftest.py, never mocked."""

from .base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
WHITENOISE_AUTOREFRESH = True  # no collectstatic in tests
