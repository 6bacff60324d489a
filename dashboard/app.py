"""The analyst dashboard: one Dash app, one module per page under ``dashboard/pages/``.

Each page module has ``PATH``, ``TITLE``, ``layout(**query)`` returning its components (built from the packages'
selectors) and ``register(app)`` binding its callbacks, whose bodies are plain module functions a test can call.
The app is mounted at ``/dashboard/`` in Django's WSGI process (``recsys_site.wsgi``) behind ``StaffOnly``.
"""

from __future__ import annotations

import logging
import time
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

from dash import Dash, Input, Output, dcc, html

from ranker.watch.selectors import watch_alerts_open

from .components import degradation_notice
from .pages import buddies, catalogue, engagement, explorer, jobs, models, overview

log = logging.getLogger(__name__)

PAGES: tuple[ModuleType, ...] = (overview, catalogue, models, buddies, explorer, engagement, jobs)
PREFIX = "/dashboard/"



def create_app() -> Dash:
    """The Dash app with every page's callbacks bound; ``app.server`` is its Flask (WSGI) application."""
    app = Dash(__name__, routes_pathname_prefix="/", requests_pathname_prefix=PREFIX, serve_locally=True,
               suppress_callback_exceptions=True, title="Buddies analytics", update_title=None,
               # Dash turns on async dispatch when asgiref imports (Django brings it); Django refuses its ORM there.
               use_async=False)
    app.layout = html.Div([
        dcc.Location(id="url"),
        html.Nav([html.Span("Buddies analytics", className="brand"),
                  *[dcc.Link(page.TITLE, href=PREFIX + page.PATH.lstrip("/")) for page in PAGES],
                  html.A("API docs", href="/api/docs/"), html.A("Admin", href="/admin/")],
                 className="nav"),
        html.Div(id="watch-notice"),
        html.Div(id="page"),
    ])
    app.callback(Output("page", "children"), Input("url", "pathname"), Input("url", "search"))(route)
    app.callback(Output("watch-notice", "children"), Input("url", "pathname"))(watch_notice)
    for page in PAGES:
        page.register(app)
    return app


def watch_notice(pathname: str | None = None) -> Any:
    """The degradation watch's notice, shown above whichever page is open (read again at each navigation)."""
    return degradation_notice(watch_alerts_open())


def page_for(pathname: str | None) -> ModuleType | None:
    path = "/" + (pathname or "").removeprefix(PREFIX.rstrip("/")).strip("/")
    return next((page for page in PAGES if path == page.PATH), None)


def route(pathname: str | None, search: str | None = None) -> Any:
    """The layout of the page at ``pathname`` (query string ``search`` passed on as keyword arguments)."""

    page = page_for(pathname)
    if page is None:
        return html.Div([html.H2("Not found"), html.P(f"No dashboard page at {pathname}.")], className="page")
    began = time.perf_counter()
    content = page.layout(**dict(parse_qsl((search or "").lstrip("?"))))
    log.info("dashboard page %s built in %.0f ms", page.PATH, (time.perf_counter() - began) * 1000)
    return content
