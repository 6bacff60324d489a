"""Settings for the test suite: the servers are started by tests/conftest.py, never mocked."""

from .base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
WHITENOISE_AUTOREFRESH = True  # no collectstatic in tests
# Tests import recsys_site.wsgi in the test process (schemathesis, the deadline): no warm-start thread there, loading
# whatever model is live while fixtures switch databases. Tests of the warm start turn it on.
WEB_WARM_START = env.bool("WEB_WARM_START", default=False)  # noqa: F405
