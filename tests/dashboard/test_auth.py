"""The dashboard is mounted in Django's WSGI process and only staff get in: checked through the real WSGI stack."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from werkzeug.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def wsgi():
    from recsys_site.wsgi import build

    return Client(build())


def _session_for(django_client, user) -> str:
    django_client.force_login(user)
    return django_client.cookies[settings.SESSION_COOKIE_NAME].value


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ana", password="pw-ana-123", is_staff=True)


@pytest.fixture
def member(django_user_model):
    return django_user_model.objects.create_user("bob", password="pw-bob-123")


def test_anonymous_visitor_is_sent_to_login(wsgi):
    response = wsgi.get("/dashboard/models")
    assert response.status_code == 302
    assert response.headers["Location"] == f"{settings.LOGIN_URL}?next=/dashboard/models"


def test_non_staff_user_is_sent_to_login(wsgi, client, member):
    wsgi.set_cookie(settings.SESSION_COOKIE_NAME, _session_for(client, member))
    assert wsgi.get("/dashboard/").status_code == 302


def test_dash_endpoints_answer_403_json_without_staff(wsgi):
    response = wsgi.post("/dashboard/_dash-update-component", json={})
    assert response.status_code == 403
    assert json.loads(response.get_data())["code"] == "forbidden"


def test_staff_user_gets_the_dashboard_and_django_still_serves_the_rest(wsgi, client, staff):
    wsgi.set_cookie(settings.SESSION_COOKIE_NAME, _session_for(client, staff))
    page = wsgi.get("/dashboard/jobs")
    assert page.status_code == 200 and b"Buddies analytics" in page.get_data()
    layout = wsgi.get("/dashboard/_dash-layout")
    assert layout.status_code == 200 and json.loads(layout.get_data())["type"] == "Div"
    assert wsgi.get("/healthz").status_code in (200, 503)  # Django, not Dash, answers outside /dashboard


def test_a_logged_out_session_no_longer_gets_in(wsgi, client, staff):
    wsgi.set_cookie(settings.SESSION_COOKIE_NAME, _session_for(client, staff))
    assert wsgi.get("/dashboard/").status_code == 200
    client.logout()  # deletes the session server-side; the browser's cookie is now stale
    assert wsgi.get("/dashboard/").status_code == 302


def test_a_tampered_cookie_is_refused(wsgi):
    wsgi.set_cookie(settings.SESSION_COOKIE_NAME, "not-a-session")
    assert wsgi.get("/dashboard/").status_code == 302
