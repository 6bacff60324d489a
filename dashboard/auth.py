"""The dashboard is for staff: a WSGI gate in front of the Dash app that reads Django's own session.

Dash runs on Flask, outside Django's middleware, so the gate loads the session named by Django's session cookie and
asks Django's ``get_user`` (which also checks the session's password hash) whether a staff user is logged in.
Pages of a visitor who is not staff redirect to the login page; Dash's JSON endpoints answer 403.
"""

from __future__ import annotations

import json
from http.cookies import CookieError, SimpleCookie
from importlib import import_module
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.contrib.auth import get_user
from django.db import close_old_connections

USER_KEY = "buddies.user"  # the WSGI environ key under which the gate leaves the staff user's name


def staff_user(environ: dict[str, Any]) -> Any | None:
    """The active staff user whose Django session cookie this request carries, else None."""

    try:
        key = SimpleCookie(environ.get("HTTP_COOKIE", "")).get(settings.SESSION_COOKIE_NAME)
    except CookieError:
        return None
    if key is None:
        return None
    close_old_connections()
    session = import_module(settings.SESSION_ENGINE).SessionStore(key.value)
    user = get_user(SimpleNamespace(session=session))
    return user if user.is_authenticated and user.is_active and user.is_staff else None


class StaffOnly:
    """Wrap a WSGI app so that only staff reach it."""

    def __init__(self, app: Any, *, login_url: str) -> None:
        self.app, self.login_url = app, login_url

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        user = staff_user(environ)
        if user is not None:
            environ[USER_KEY] = user.get_username()
            return self.app(environ, start_response)
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if environ.get("PATH_INFO", "").startswith("/_dash"):
            body = json.dumps({"code": "forbidden", "message": "log in as staff to use the dashboard"}).encode()
            start_response("403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        start_response("302 Found", [("Location", f"{self.login_url}?next={quote(path)}"), ("Content-Length", "0")])
        return [b""]
