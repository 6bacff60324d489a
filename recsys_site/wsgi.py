"""WSGI entry point: Django at ``/`` and the analyst dashboard (Dash) at ``/dashboard/``, in one process."""

import gc
import logging
import os
import threading

# One math thread per web worker (numpy's BLAS, FAISS's and torch's OpenMP), set before any of them loads: the
# workers already use every core, and each library's own thread pool made them fight — continuation at 50/s
# reached 31/s with p99 past 5 s, against 50/s and p99 84 ms with one thread (docs/BENCHMARKS.md). The Celery
# worker, which trains, keeps its threads. An explicit setting in the environment wins.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, os.environ.get("WEB_MATH_THREADS", "1"))

from django.core.wsgi import get_wsgi_application  # noqa: E402 (after the thread settings)
from werkzeug.middleware.dispatcher import DispatcherMiddleware  # noqa: E402

from recsys_site.settings import require_settings_module  # noqa: E402

# No default settings module: a server started without DJANGO_SETTINGS_MODULE stops here, saying what to set.
require_settings_module("recsys_site.wsgi")

django_application = get_wsgi_application()


def build(django_app=django_application):
    """Django with the staff-only dashboard mounted at /dashboard (Dash's own Flask app, behind Django's login)."""
    # lazy: these need the Django set-up that ``get_wsgi_application`` above has just done
    from django.conf import settings

    from dashboard.app import create_app
    from dashboard.auth import StaffOnly
    from recsys_site.deadline import DeadlineWSGI

    dashboard = StaffOnly(create_app().server, login_url=settings.LOGIN_URL)
    # Late API requests are shed before Django sees them (recsys_site/deadline.py); the dashboard is not shed.
    return DispatcherMiddleware(DeadlineWSGI(django_app), {"/dashboard": dashboard})


application = build()


def _warm() -> None:
    # lazy: Django is set up by ``get_wsgi_application`` above
    from ranker.picks.serve import warm_up

    log = logging.getLogger(__name__)
    try:
        log.info("web worker warmed: live model %s", warm_up())
    except Exception as exc:  # noqa: BLE001 (any failure: the first request loads, and answers 503 if it must)
        log.warning("web worker not warmed (%s: %s); the first request loads the model", type(exc).__name__, exc)


def warm() -> threading.Thread | None:
    """Load the live model and the overload lists as this worker starts (``ranker.picks.serve.warm_up``), unless
    ``WEB_WARM_START`` is off. In a thread: the worker keeps answering gunicorn's heartbeat meanwhile (a model of the
    full MPD may take longer to load than gunicorn's 60 s timeout), and a request that needs the model waits for
    this load instead of starting its own. A store that cannot answer yet only defers the loading to the first
    request."""
    # lazy: Django is set up by ``get_wsgi_application`` above
    from django.conf import settings

    if not settings.WEB_WARM_START:
        return None
    thread = threading.Thread(target=_warm, name="warm-start", daemon=True)
    thread.start()
    return thread


warming = warm()

# What was imported and built so far lives as long as the process: move it out of the cyclic collector's reach, so
# a full collection walks only what requests created (it walked ~130,000 startup objects, 80 ms, a periodic stall
# in the latency tail; docs/BENCHMARKS.md). The live model does the same once loaded (ranker.training.selectors).
gc.collect()
gc.freeze()
