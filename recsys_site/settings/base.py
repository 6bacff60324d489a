"""Settings shared by every environment.

Every URL, secret and path is read once, here, through the single ``env`` object.
"""

from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parents[2]
env = environ.Env()
VAR_DIR = Path(env("VAR_DIR", default=str(BASE_DIR / "var")))

# --- Django core -------------------------------------------------------------------------------------------------
# Published in this repository: fit for a developer's machine only (recsys_site.settings.production refuses it).
_DEV_SECRET_KEY = "dev-only-insecure-key-change-me"
SECRET_KEY = env("DJANGO_SECRET_KEY", default=_DEV_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files served from here (/static/), never from a CDN
    "rest_framework.authtoken",
    "axes",
    "recsys_site",
    "ingestion",
    "ranker",
    "pairing",
    "dashboard",
]

MIDDLEWARE = [
    "recsys_site.metrics.MetricsMiddleware",
    "recsys_site.deadline.DeadlineMiddleware",  # sheds a request that waited past its budget (X-Request-Start)
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it answers a locked-out login
]
# Failed logins (the admin's, which is also the dashboard's) are counted per username and address; past the limit,
# that pair is locked out for the cool-off (django-axes), the right password included.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_LOCKOUT_MINUTES", default=30))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

ROOT_URLCONF = "recsys_site.urls"
WSGI_APPLICATION = "recsys_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Django's own SQL database holds only what Django needs (auth, tokens, sessions, admin).
# The catalogue, events and models live in MongoDB.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'django.sqlite3'}")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
LOGIN_URL = "/admin/login/"  # staff log in through the admin; the dashboard sends visitors there

# A request that waited longer than this in the queue (since nginx's X-Request-Start stamp) is shed: picks get the
# popular fallback, anything else a 503 with Retry-After (recsys_site/deadline.py). 0 turns it off.
REQUEST_DEADLINE_SECONDS = env.float("REQUEST_DEADLINE_SECONDS", default=0.25)

# Who may call what (recsys_site/auth.py). Per-user reads (picks, buddies) need a token with picks:read unless
# this is on: a public demo. Anonymous reads are never logged as A/B exposures.
API_PUBLIC_READS = env.bool("API_PUBLIC_READS", default=False)
# /metrics answers the Prometheus scraper that sends this as a Bearer token, and staff; or anyone if public.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_PUBLIC = env.bool("METRICS_PUBLIC", default=False)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "recsys_site.auth.CredentialAuthentication",
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "EXCEPTION_HANDLER": "recsys_site.errors.api_exception_handler",
    # The API speaks JSON: a form body is a 415, not a second encoding whose repeated keys and coercions differ.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    # Counted in Django's cache: Redis shared by every process in production (CACHE_URL). Anonymous callers per
    # address, a token per token: an app's (which acts for many users) has its own, larger budget.
    "DEFAULT_THROTTLE_CLASSES": ["recsys_site.auth.AnonThrottle", "recsys_site.auth.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": env("API_THROTTLE_ANON", default="120/min"),
                               "user": env("API_THROTTLE_USER", default="600/min"),
                               "app": env("API_THROTTLE_APP", default="12000/min")},
    # How many proxies in front of the web processes append to X-Forwarded-For (nginx: 1). With 0 the address is the
    # connection's own and X-Forwarded-For, which a client can write, is ignored.
    "NUM_PROXIES": env.int("API_TRUSTED_PROXIES", default=0),
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Buddies API",
    "DESCRIPTION": "Organic playlist picks from taste buddies, track picks, buddies, feedback and jobs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/docs/ loads Swagger UI from this server's static files (the drf-spectacular-sidecar package, pinned),
    # not from a CDN at @latest: it works offline and behind a strict firewall, and cannot change under us.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "ingestion.api.schema_batch_limits"],
}

# --- MongoDB -----------------------------------------------------------------------------------------------------
# Unset MONGO_URI means "use the embedded server" that `recsys_site.stack` starts and exports.
MONGO_URI = env("MONGO_URI", default="")
MONGO_DB = env("MONGO_DB", default="buddies")
MONGO_PORT = env.int("MONGO_PORT", default=27071)
MONGO_TIMEOUT_MS = env.int("MONGO_TIMEOUT_MS", default=5000)

# --- Celery ------------------------------------------------------------------------------------------------------
REDIS_PORT = env.int("REDIS_PORT", default=6391)
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=f"redis://127.0.0.1:{REDIS_PORT}/0")
# Served picks are cached per process (seconds) over Redis (an hour); keys carry the model version.
PICKS_CACHE_URL = env("PICKS_CACHE_URL", default=f"redis://127.0.0.1:{REDIS_PORT}/1")  # "" turns Redis off
PICKS_CACHE_LOCAL_SECONDS = env.float("PICKS_CACHE_LOCAL_SECONDS", default=5.0)
PICKS_CACHE_LOCAL_SIZE = env.int("PICKS_CACHE_LOCAL_SIZE", default=20_000)
PICKS_CACHE_REDIS_SECONDS = env.int("PICKS_CACHE_REDIS_SECONDS", default=3600)
# Served pick lists are logged in batches (ranker.experiments.served_log): every N seconds or N lists;
# 0 writes each inline.
SERVED_LOG_FLUSH_SECONDS = env.float("SERVED_LOG_FLUSH_SECONDS", default=0.5)
SERVED_LOG_BATCH = env.int("SERVED_LOG_BATCH", default=500)
SERVED_LOG_MAX_BUFFER = env.int("SERVED_LOG_MAX_BUFFER", default=100_000)
# Retention (days; 0 keeps forever): served lists and feedback events older than this go, by a TTL index where the
# store honours one and by the weekly refresh's cleanup step, RETENTION_BATCH documents per delete. The A/B results
# are kept counters (ranker.experiments.stats) and survive the lists and events they were counted from.
SERVED_RETENTION_DAYS = env.float("SERVED_RETENTION_DAYS", default=90.0)
EVENTS_RETENTION_DAYS = env.float("EVENTS_RETENTION_DAYS", default=365.0)
RETENTION_BATCH = env.int("RETENTION_BATCH", default=5000)
# A client may date an event (``ts``) or a picks read (``?ts=``: when the list was shown) in the past, by at most
# this many days (and never past the retention above), and in the future by at most CLIENT_TS_SKEW_SECONDS (its
# clock may run ahead a little). A replaying client, or the listening simulator (simulate_listeners), uses it.
CLIENT_TS_MAX_AGE_DAYS = env.float("CLIENT_TS_MAX_AGE_DAYS", default=30.0)
CLIENT_TS_SKEW_SECONDS = env.float("CLIENT_TS_SKEW_SECONDS", default=60.0)
# Credentials (as events and served lists record them: app:NAME, user:ID, staff:NAME) whose traffic is simulated: the
# Engagement page's per-variant curves can leave them out or show them alone.
SIMULATED_CREDENTIALS = env.list("SIMULATED_CREDENTIALS", default=["app:simulator"])
# Per-user picks refreshes after feedback have a queue of their own, so a burst of feedback never delays job steps.
REFRESH_QUEUE = "refresh"
# Playlist search: pages reach at most this many rows (page × page_size), and the total is counted up to it.
PLAYLIST_SEARCH_MAX_ROWS = env.int("PLAYLIST_SEARCH_MAX_ROWS", default=10_000)
# Mood search (GET /api/v1/search, ranker.picks.search): at most this many results, and a query of at most this many
# characters (a 400 beyond either), so one request's work is bounded.
SEARCH_MAX_K = env.int("SEARCH_MAX_K", default=50)
SEARCH_MAX_QUERY_CHARS = env.int("SEARCH_MAX_QUERY_CHARS", default=200)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=30 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=25 * 60)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat heartbeat: a tiny task that proves worker and beat are alive (shown by /healthz).
HEARTBEAT_SECONDS = env.int("HEARTBEAT_SECONDS", default=60)
REFRESH_CRONTAB = env("REFRESH_CRONTAB", default="0 3 * * 1")  # minute hour day-of-month month day-of-week
# The learned playlist ranker's own retraining (job train_playlist_ranker), daily by default: more often than the
# weekly pairing, as follows arrive every day. Same five fields.
PLAYLIST_RANKER_CRONTAB = env("PLAYLIST_RANKER_CRONTAB", default="30 3 * * *")
# Long jobs: a task is acknowledged only when it ends (a killed worker's step goes back to the queue) and a worker
# takes one task at a time, so a training never waits behind another it prefetched.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_REJECT_ON_WORKER_LOST = False  # a lost step is reaped by its lock, not redelivered forever


def cron(spec: str, name: str = "REFRESH_CRONTAB") -> crontab:
    """A crontab from the usual five fields (minute hour day-of-month month day-of-week), with a clear error."""
    fields = spec.split()
    if len(fields) != 5:
        raise ImproperlyConfigured(f"{name}={spec!r}: expected 5 fields (minute hour day month weekday)")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
                   day_of_week=day_of_week)


JOB_STEP_TIME_LIMIT = env.int("JOB_STEP_TIME_LIMIT", default=4 * 3600)  # training on the full MPD takes hours on CPU
JOB_STEP_SOFT_TIME_LIMIT = env.int("JOB_STEP_SOFT_TIME_LIMIT", default=4 * 3600 - 300)
JOB_LOCK_TTL_SECONDS = env.float("JOB_LOCK_TTL_SECONDS", default=60.0)  # a running step renews it every third
JOB_QUEUED_LOCK_TTL_SECONDS = env.float("JOB_QUEUED_LOCK_TTL_SECONDS", default=6 * 3600.0)
JOB_REAP_SECONDS = env.float("JOB_REAP_SECONDS", default=30.0)
# Users per shard of the weekly picks precompute (a Celery task each; a few seconds to a minute of work).
# The weekly refresh's cleanup leaves model versions younger than this alone: one may be a candidate whose run is
# still going (the live one, the one before it and those an experiment pins are kept at any age).
MODEL_CLEANUP_MIN_AGE_HOURS = env.float("MODEL_CLEANUP_MIN_AGE_HOURS", default=24.0)
# A triplets re-ingest that would remove more than this share of a source's stored rows stops and asks for
# --allow-removals (ingestion/listens.py).
TRIPLETS_MAX_REMOVED_SHARE = env.float("TRIPLETS_MAX_REMOVED_SHARE", default=0.10)
PICKS_SHARD_USERS = env.int("PICKS_SHARD_USERS", default=1000)
# Above this many tracks, precomputed track picks come from candidates re-scored exactly
# (ranker/recommenders/candidates.py) instead of scoring every track for every user.
PICKS_DENSE_MAX_ITEMS = env.int("PICKS_DENSE_MAX_ITEMS", default=100_000)
# Degradation watch (ranker/watch/): every WATCH_INTERVAL_SECONDS a worker checks the online follow-through (share
# of the playlist pick lists served in the last WATCH_WINDOW_HOURS that got a follow, once at least WATCH_MIN_SERVED
# were served) against WATCH_FOLLOW_THROUGH_MIN, and the score drift KL between the two newest model versions
# against WATCH_DRIFT_KL_MAX. Each crossing, bad or back to normal, is recorded (watch_alerts, kept
# WATCH_ALERTS_RETENTION_DAYS once closed), exported at /metrics (buddies_degraded) and shown on the dashboard.
WATCH_INTERVAL_SECONDS = env.float("WATCH_INTERVAL_SECONDS", default=3600.0)
WATCH_WINDOW_HOURS = env.float("WATCH_WINDOW_HOURS", default=24.0)
WATCH_MIN_SERVED = env.int("WATCH_MIN_SERVED", default=200)
WATCH_FOLLOW_THROUGH_MIN = env.float("WATCH_FOLLOW_THROUGH_MIN", default=0.02)
WATCH_DRIFT_KL_MAX = env.float("WATCH_DRIFT_KL_MAX", default=0.25)
WATCH_ALERTS_RETENTION_DAYS = env.float("WATCH_ALERTS_RETENTION_DAYS", default=365.0)
# On: a signal that goes bad starts a retrain (train_playlist_ranker where that job exists, else train_ranker).
WATCH_RETRAIN = env.bool("WATCH_RETRAIN", default=False)
CELERY_BEAT_SCHEDULE = {
    "heartbeat": {"task": "recsys_site.heartbeat", "schedule": float(HEARTBEAT_SECONDS)},
    "degradation_watch": {"task": "ranker.watch_check", "schedule": WATCH_INTERVAL_SECONDS},
    "weekly_refresh": {"task": "recsys_site.start_job", "schedule": cron(REFRESH_CRONTAB),
                       "args": ["weekly_refresh"], "kwargs": {"trigger": "beat"}},
    "train_playlist_ranker": {"task": "recsys_site.start_job",
                              "schedule": cron(PLAYLIST_RANKER_CRONTAB, "PLAYLIST_RANKER_CRONTAB"),
                              "args": ["train_playlist_ranker"], "kwargs": {"trigger": "beat"}},
    "reap_job_runs": {"task": "recsys_site.reap_job_runs", "schedule": JOB_REAP_SECONDS},
}

# A/B experiments on picks (ranker/experiments/assign.py): variants with weights and what each changes. JSON in the
# EXPERIMENTS variable replaces this default; {} runs none.
EXPERIMENTS = env.json("EXPERIMENTS", default={
    # The learned playlist ranker against the hand-set ranking, with and without exploration slots (ADR 0014).
    "playlist_ranker": {
        "active": True,
        "applies_to": ["playlists"],
        "variants": {
            "control": {"weight": 1, "playlist_ranker": "hand", "explore_slots": 0},
            "learned": {"weight": 1, "playlist_ranker": "learned", "explore_slots": 0},
            "learned_explore": {"weight": 1, "playlist_ranker": "learned", "explore_slots": 2},
        },
    },
})

# --- The learned playlist ranker (ranker/playlist_ranking, docs/adr/0014) ----------------------------------------
# How users outside an experiment get their playlist picks ranked: "learned" (the live learned ranker; the hand-set
# weights while none is trained) or "hand" (the hand-set weights always). Precomputed picks follow it. "learned":
# the 14-day simulated A/B of issue 16 had it ahead of the hand-set ranking on follow-through (+0.159) and listening
# minutes per user (+9.15), both 95 % intervals excluding 0 (docs/BENCHMARKS.md, ADR 0014).
PLAYLIST_RANKER_DEFAULT = env("PLAYLIST_RANKER_DEFAULT", default="learned")
if PLAYLIST_RANKER_DEFAULT not in ("learned", "hand"):
    raise ImproperlyConfigured(f"PLAYLIST_RANKER_DEFAULT={PLAYLIST_RANKER_DEFAULT!r}: expected learned or hand")
# Exploration slots (Thompson sampling over follow rates) at the end of each playlist page, outside experiments.
PLAYLIST_EXPLORE_SLOTS = env.int("PLAYLIST_EXPLORE_SLOTS", default=0)
# The daily training ends without a model (saying so) below this many current follows ...
PLAYLIST_RANKER_MIN_FOLLOWS = env.int("PLAYLIST_RANKER_MIN_FOLLOWS", default=50)
# ... or below this many served playlist lists with an outcome (a playlist opened or followed).
PLAYLIST_RANKER_MIN_LISTS = env.int("PLAYLIST_RANKER_MIN_LISTS", default=20)
# A shown playlist counts as played through (a positive) from this many plays of 30 s or more of its tracks under
# the served list's rec_id.
PLAYLIST_RANKER_PLAYED_THROUGH = env.int("PLAYLIST_RANKER_PLAYED_THROUGH", default=3)
# Taste clusters (spherical k-means over the playlists' vectors) whose pooled follow rate is each playlist's prior.
PLAYLIST_EXPLORE_CLUSTERS = env.int("PLAYLIST_EXPLORE_CLUSTERS", default=32)
# The prior's weight in impressions: a playlist's own rate outweighs its cluster's after this many impressions.
PLAYLIST_EXPLORE_PRIOR_STRENGTH = env.float("PLAYLIST_EXPLORE_PRIOR_STRENGTH", default=20.0)
# Versions of the playlist ranker kept in the store (the live one always).
PLAYLIST_RANKER_KEEP = env.int("PLAYLIST_RANKER_KEEP", default=5)

# --- Models ------------------------------------------------------------------------------------------------------
MODEL_DIR = Path(env("MODEL_DIR", default=str(VAR_DIR / "models")))
RECSYS_DEVICE = env("RECSYS_DEVICE", default="auto")  # auto | cpu | cuda
# The second stage's booster compiled for the CPU at model load (ADR 0020); off: LightGBM predicts (4–5× slower).
SECOND_STAGE_COMPILE = env.bool("SECOND_STAGE_COMPILE", default=True)
# Each web worker loads the live model as it starts, not in its first request (recsys_site.wsgi).
WEB_WARM_START = env.bool("WEB_WARM_START", default=True)
# A candidate model goes live only if its validation hit rate is at least (1 - this) × the live one's: the
# validation sample is small enough that an identical retrain can score a few percent lower by chance.
RANKER_PROMOTION_TOLERANCE = env.float("RANKER_PROMOTION_TOLERANCE", default=0.05)
# Every new version is evaluated (ADR 0019): its recipe and the live one's, each retrained on one RecSys 2018 split
# of this many playlists sampled from the store (0: no evaluation, promotion by the hit rate alone), with this many
# test playlists, drawn with this seed.
EVAL_SAMPLE_PLAYLISTS = env.int("EVAL_SAMPLE_PLAYLISTS", default=2000)
EVAL_TEST_SIZE = env.int("EVAL_TEST_SIZE", default=200)
EVAL_SEED = env.int("EVAL_SEED", default=0)
RANKER_THREADS = env.int("RANKER_THREADS", default=0) or None  # torch threads for training; None = torch's choice
MODEL_POLL_SECONDS = env.float("MODEL_POLL_SECONDS", default=5.0)  # how often a process checks which model is live
PAIRING_K = env.int("PAIRING_K", default=50)  # buddies stored per user
PAIRING_EXACT_MAX = env.int("PAIRING_EXACT_MAX", default=200_000)  # above this many users, HNSW instead of exact

# --- Web ---------------------------------------------------------------------------------------------------------
WEB_PORT = env.int("WEB_PORT", default=8000)
WEB_WORKERS = env.int("WEB_WORKERS", default=2)
# Threads per web worker; 1 runs gunicorn's sync workers, which measured better on 2 cores (docs/BENCHMARKS.md).
WEB_THREADS = env.int("WEB_THREADS", default=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"pymongo": {"level": "WARNING"}},
}
