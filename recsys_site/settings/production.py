"""Production settings: secrets and URLs must come from the environment; nothing falls back to a laptop's default.

``python manage.py check --deploy`` passes with no warning once the environment of docs/DEPLOY.md is given
(tests/recsys_site/test_deploy.py and tests/recsys_site/test_settings.py hold it to that).
"""

from urllib.parse import urlsplit, urlunsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import _DEV_SECRET_KEY, env


def required(name: str, why: str) -> str:
    """The variable's value; a clear error naming it when it is unset or empty (no silent default in production)."""
    value = env.str(name, default="").strip()
    if not value:
        raise ImproperlyConfigured(
            f"{name} is not set: recsys_site.settings.production requires it ({why}); see docs/DEPLOY.md"
        )
    return value


def redis_db(url: str, db: int) -> str:
    """The same Redis server as ``url`` (scheme, credentials, host, port, query), database number ``db``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


DEBUG = False
SECRET_KEY = required("DJANGO_SECRET_KEY", "50 or more random characters, the same on every machine")
if SECRET_KEY == _DEV_SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY is the published development key; set a secret one (docs/DEPLOY.md)")
MONGO_URI = required("MONGO_URI", "the MongoDB replica set or cluster that holds the catalogue, events and models")
CELERY_BROKER_URL = required("CELERY_BROKER_URL", "the Redis (or RabbitMQ) that carries the job steps")
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL)
_BROKER_IS_REDIS = urlsplit(CELERY_BROKER_URL).scheme in ("redis", "rediss")
# The cross-process picks cache: the broker's Redis, database 1, unless named ("" turns it off).
PICKS_CACHE_URL = env("PICKS_CACHE_URL", default=redis_db(CELERY_BROKER_URL, 1) if _BROKER_IS_REDIS else "")

# Django's own tables (users, API tokens, sessions, admin) must be one database every web machine shares: no silent
# per-machine SQLite file. An explicit DATABASE_URL=sqlite:///… is still honoured (one machine, on purpose).
DATABASES = {"default": environ.Env.db_url_config(
    required("DATABASE_URL", "Django's own tables, shared by every web machine: postgres://USER:PASSWORD@HOST/DB"))}

# Django's cache (API throttling counts, anything cached through django.core.cache) is shared by every process and
# machine: Redis, by default the broker's own server on database 2 (0 is the broker, 1 the picks cache).
if _BROKER_IS_REDIS:
    CACHE_URL = env("CACHE_URL", default=redis_db(CELERY_BROKER_URL, 2))
else:
    CACHE_URL = required("CACHE_URL", "a Redis URL for Django's shared cache; the broker is not Redis")
if urlsplit(CACHE_URL).scheme not in ("redis", "rediss", "unix"):
    raise ImproperlyConfigured(f"CACHE_URL={CACHE_URL!r}: expected a redis://, rediss:// or unix:// URL")
CACHES = {
    "default": {
        # Django's RedisCache, failing open: while Redis does not answer, requests are served unthrottled, not 500s.
        "BACKEND": "recsys_site.cache.SharedRedisCache",
        "LOCATION": CACHE_URL,
        "KEY_PREFIX": "buddies",
        # A Redis that does not answer costs a request a quarter of a second at most (it answers in a millisecond).
        "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
    },
}

# Origins allowed to send unsafe requests (the admin's and the dashboard's forms) when they differ from the host the
# request names, e.g. "https://buddies.example.com"; each with its scheme.
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS only. Django learns that a request came over HTTPS from X-Forwarded-Proto only when TRUST_X_FORWARDED_PROTO
# says so: set it (compose.yaml does) only when every request reaches Django through a proxy that terminates TLS and
# overwrites that header (deploy/nginx.conf), or any client could claim HTTPS.
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
# Plain HTTP is redirected, except the probes that load balancers and Prometheus send to each web machine directly.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# "preload" only consents to the browsers' HSTS list; the domain joins it when its owner submits it (hstspreload.org).
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
