"""Settings for a developer's machine and `make run`."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
# The local demo: picks, buddies and /metrics readable without a token (never in production: settings.production).
API_PUBLIC_READS = env.bool("API_PUBLIC_READS", default=True)
METRICS_PUBLIC = env.bool("METRICS_PUBLIC", default=True)
