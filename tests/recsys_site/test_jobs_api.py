"""The job endpoints: staff token required, 202/409/404/400 as documented, runs readable by id."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    user = User.objects.create_user("analyst", password="x", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_writes_need_a_staff_token(store):
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    assert APIClient().post("/api/v1/jobs/compute_buddies", {}, format="json").status_code == 401
    plain = APIClient()
    plain.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=User.objects.create_user('u')).key}")
    assert plain.post("/api/v1/jobs/compute_buddies", {}, format="json").status_code == 403
    assert plain.get("/api/v1/jobs/runs").status_code == 403


def test_start_then_refuse_then_read(store, staff):
    from recsys_site.jobs import run_cancel

    started = staff.post("/api/v1/jobs/compute_buddies", {}, format="json")
    assert started.status_code == 202, started.json()
    run = started.json()
    assert run["status"] == "queued" and run["job"] == "compute_buddies" and run["steps"][0]["queue"] == "gpu"
    again = staff.post("/api/v1/jobs/compute_buddies", {}, format="json")
    assert again.status_code == 409 and again.json()["run_id"] == run["id"]
    listed = staff.get("/api/v1/jobs/runs", {"job": "compute_buddies"}).json()["results"]
    assert [r["id"] for r in listed] == [run["id"]]
    detail = staff.get(f"/api/v1/jobs/runs/{run['id']}").json()
    assert detail["id"] == run["id"] and detail["log"] == []
    run_cancel(run_id=run["id"])
    assert staff.get(f"/api/v1/jobs/runs/{run['id']}").json()["status"] == "cancelled"


def test_errors_are_json_with_a_code(store, staff):
    unknown = staff.post("/api/v1/jobs/nope", {}, format="json")
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_job"
    bad = staff.post("/api/v1/jobs/compute_buddies", {"params": {"epochs": 2}}, format="json")
    assert bad.status_code == 400 and "unknown parameters" in bad.json()["message"]
    wrong_type = staff.post("/api/v1/jobs/compute_buddies", {"params": "all"}, format="json")
    assert wrong_type.status_code == 400 and "params" in wrong_type.json()["fields"]
    assert staff.get("/api/v1/jobs/runs/doesnotexist").status_code == 404
    assert staff.get("/api/v1/jobs/runs", {"limit": 0}).status_code == 400
