"""Property-based tests of the whole HTTP API from its own OpenAPI schema (schemathesis 4, in-process over WSGI).

Every operation in the schema that ``/api/schema/`` serves gets generated requests (schema examples, coverage
cases, then Hypothesis fuzzing; valid and invalid data) against the module's live demo store, with a staff token.

Checks: no 5xx (``not_a_server_error``); every status answered is one the schema documents for that operation
(``status_code_conformance``: successes and the error statuses each view declares through
``recsys_site.api_common.responses``); bodies match the documented schema, errors included
(``response_schema_conformance``, ``content_type_conformance``); invalid data is refused (``negative_data_rejection``,
except DRF's deliberate scalar coercion); token-only operations refuse a missing or bad token (``ignored_auth``);
undocumented methods get 405 (``unsupported_method``); and every error an API view answers is the JSON envelope
``{"code", "message", "fields"?}`` (``error_envelope`` below).

Not checked: ``positive_data_acceptance``: schema-valid data meets business rules the schema cannot state (an
event's user must exist, a playlist's tracks must be in the catalogue), and those are 400s by design.

``POST /api/v1/jobs/{name}`` only ever sees names no job has (404): a real name would queue a real job.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from urllib.parse import unquote, urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.core.parameters import ParameterLocation

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

MAX_EXAMPLES = 50
JOB_START = "POST /api/v1/jobs/{name}"

# Examples added to the loaded schema (the served one has none), so the examples phase always sends some requests
# that succeed: users and playlists the demo store holds, events it stores, a playlist of a track it holds.
TRACK = "spotify:track:" + "0" * 22  # replaced by a catalogue track before the request goes out
PATH_EXAMPLES = {"user": "mpd:1", "pid": 1}
BODY_EXAMPLES = {
    "/api/v1/events": [{"user": "mpd:0", "kind": "follow", "playlist": 1}, {"user": "mpd:1", "kind": "like",
                                                                              "track": TRACK}],
    "/api/v1/users/{user}/playlists": {"name": "schemathesis", "tracks": [TRACK]},
}


def _openapi() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    openapi = SchemaGenerator().get_schema(request=None, public=True)
    for operations in openapi["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in PATH_EXAMPLES:
                    parameter["example"] = PATH_EXAMPLES[parameter["name"]]
    for path, example in BODY_EXAMPLES.items():
        content = openapi["paths"].get(path, {}).get("post", {}).get("requestBody", {}).get("content", {})
        if "application/json" in content:
            content["application/json"]["example"] = example
    return openapi


def _application():
    from recsys_site.wsgi import application

    return application


CONFIG = SchemathesisConfig.from_dict({
    "seed": 20240611,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
    "checks": {
        "enabled": False,
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "negative_data_rejection": {"enabled": True},
        "ignored_auth": {"enabled": True},
        "unsupported_method": {"enabled": True},
        "error_envelope": {"enabled": True},
    },
})

schema = schemathesis.openapi.from_dict(_openapi(), config=CONFIG)
schema.app = _application()

KNOWN: dict[str, list] = {}  # path parameter or body field → values the store holds (filled by ``known``)
SEEN: dict[str, Counter] = defaultdict(Counter)  # operation → status code → responses


def _routed(url: str) -> bool:
    """Whether Django's URLconf maps ``url`` to a view (else Django's own HTML 404 answers, before any API code)."""
    from django.urls import Resolver404, resolve

    try:
        resolve(unquote(urlsplit(url).path))
    except Resolver404:
        return False
    return True


@schemathesis.check
def error_envelope(ctx, response, case):
    """Every error an API view answers is JSON ``{"code", "message", "fields"?}``."""
    status = response.status_code
    if status < 400 or not _routed(response.request.url):
        return None
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and {"code", "message"} <= set(body), body
    assert isinstance(body["code"], str) and isinstance(body["message"], str), body
    assert set(body) <= {"code", "message", "fields", "run_id"}, body
    if "fields" in body:
        assert isinstance(body["fields"], dict) and body["fields"], body
    return None


@pytest.fixture(scope="module", autouse=True)
def known(live, request):
    """Real ids for the generated requests, a queued and a failed job run to read, and a summary at the end."""
    from django.conf import settings as django_settings

    from ingestion.selectors import playlist_search
    from recsys_site.jobs import fail_run, get_job, run_create

    docs, _ = playlist_search(text="", page=1, page_size=20)
    runs = [run_create(job=get_job(name), params={}, trigger="schemathesis") for name in ("compute_buddies",
                                                                                          "train_ranker")]
    fail_run(run_id=runs[1]["_id"], error="boom")
    KNOWN.update(user=[str(u) for u in live.user_ids[:10]], pid=[d["_id"] for d in docs],
                 uri=[str(t) for t in live.item_ids[:50]], run_id=[r["_id"] for r in runs],
                 name=list(getattr(django_settings, "EXPERIMENTS", {})))
    yield KNOWN
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and SEEN:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(f"schemathesis: {sum(sum(s.values()) for s in SEEN.values())} requests checked "
                                f"over {len(SEEN)} operations (status: count)")
            for label, statuses in sorted(SEEN.items()):
                reporter.write_line(f"  {label}: {dict(sorted(statuses.items()))}")


@pytest.fixture(autouse=True)
def unthrottled(monkeypatch):
    """Thousands of generated requests a minute from one token: the limits (tested in test_auth.py) stand aside."""
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": None, "user": None, "app": None})


@pytest.fixture
def staff_token(db):
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    user = User.objects.create_user("schemathesis", is_staff=True)
    return Token.objects.create(user=user).key


def _ground_body(draw, body):
    """``body`` with users and track URIs swapped for ones the store knows (so events and playlists can be stored)."""
    if isinstance(body, list):
        return [_ground_body(draw, item) for item in body]
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if isinstance(body.get("user"), str):
        body["user"] = draw(st.sampled_from(KNOWN["user"]))
    if isinstance(body.get("track"), str) or body.get("kind") in ("play", "skip", "like"):  # what each kind needs
        body["track"] = draw(st.sampled_from(KNOWN["uri"]))
    if body.get("kind") == "play" and body.get("ms_played") is None:
        body["ms_played"] = draw(st.integers(0, 600_000))
    if body.get("kind") in ("follow", "unfollow") and not isinstance(body.get("playlist"), int):
        body["playlist"] = draw(st.sampled_from(KNOWN["pid"]))
    for key in ("tracks", "seed_tracks"):
        if isinstance(body.get(key), list) and body[key]:
            body[key] = draw(st.lists(st.sampled_from(KNOWN["uri"]), min_size=1, max_size=min(len(body[key]), 30)))
    return body


@st.composite
def _grounded(draw, case):
    """``case`` with, mostly, its ids swapped for real ones; only in parts generated valid, so they stay valid."""
    meta = case.meta

    def swap(location):
        return (meta is None or not meta.is_negative_at(location)) and draw(st.integers(0, 3)) > 0

    if case.path_parameters and case.operation.label != JOB_START and swap(ParameterLocation.PATH):
        case.path_parameters = {name: draw(st.sampled_from(KNOWN[name])) if KNOWN.get(name) else value
                                for name, value in case.path_parameters.items()}
    if case.media_type == "application/json" and case.body is not None and swap(ParameterLocation.BODY):
        case.body = _ground_body(draw, case.body)
    return case


@schema.hook
def flatmap_case(ctx, case):
    """Three in four fuzzed requests name things the store holds, so not all are 404s or unknown-user 400s."""
    return _grounded(case) if KNOWN else st.just(case)


@schema.hook
def filter_failure(ctx, failure, case, response):
    """DRF's leniency is deliberate, not a bug: it coerces scalars (``"name": 0`` is the string ``"0"``, ``?k=5.0``
    is 5), and an empty optional query parameter (``?limit=``) counts as absent."""
    if not isinstance(failure, AcceptedNegativeData):
        return True
    coerced = "Incorrect type" in failure.message or "violates `type`" in failure.message
    blank = any(value == "" for value in (case.query or {}).values())
    return not (coerced or blank)


def _real_track(value):
    """``value`` with the example's placeholder track replaced by one from the catalogue."""
    if isinstance(value, list):
        return [_real_track(item) for item in value]
    if isinstance(value, dict):
        return {key: _real_track(item) for key, item in value.items()}
    return KNOWN["uri"][0] if value == TRACK else value


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api(case, staff_token):
    from recsys_site.jobs import REGISTRY, get_job

    if case.operation.label == JOB_START:
        get_job("compute_buddies")  # fills the registry
        if case.path_parameters.get("name") in REGISTRY:  # never start a real job
            case.path_parameters = {**case.path_parameters, "name": f"nojob-{case.path_parameters['name']}"}
    if case.media_type == "application/json" and TRACK in json.dumps(case.body, default=str):
        case.body = _real_track(case.body)
    response = case.call_and_validate(headers={"Authorization": f"Token {staff_token}"})
    # Coverage also sends other methods (405, OPTIONS 200): counted apart.
    label = case.operation.label if case.method.upper() == case.operation.method.upper() else "other methods"
    SEEN[label][response.status_code] += 1


def test_every_operation_ran_and_most_reached_their_view(request):
    """The run above covered every operation, and ids from the store got past the 404s to a success."""
    labels = {operation.ok().label for operation in schema.get_all_operations()}
    if sum(getattr(item, "originalname", "") == "test_api" for item in request.session.items) < len(labels):
        pytest.skip("test_api was not selected for every operation")
    assert labels <= set(SEEN), labels - set(SEEN)
    no_success = {label for label, statuses in SEEN.items() if not any(200 <= s < 300 for s in statuses)}
    assert no_success <= {JOB_START}, {label: dict(SEEN[label]) for label in no_success}


BIG = 2**70  # JSON has no limit; MongoDB's integers stop at 2**63 - 1
SURROGATE = "\\ud800"  # a lone surrogate: valid JSON text, not encodable as UTF-8


@pytest.mark.parametrize("event", [
    f'{{"user": "mpd:0", "kind": "play", "track": "%s", "ms_played": {BIG}}}',
    f'{{"user": "mpd:0", "kind": "follow", "playlist": {BIG}}}',
    f'{{"user": "mpd:0", "kind": "like", "track": "%s", "rec_id": [{BIG}]}}',
    '{"user": "mpd:0", "kind": "like", "track": "%s", "rec_id": "' + SURROGATE + '"}',
    '{"user": "' + SURROGATE + '", "kind": "like", "track": "%s"}',
    '{"user": "mpd:0", "kind": "like", "track": "%s", "rec_id": {"a\\u0000": 1}}',
])
def test_events_mongodb_cannot_store_are_refused_not_500(live, staff_token, event):
    """Found by fuzzing: these were 500s (OverflowError, UnicodeEncodeError, InvalidDocument from the driver)."""
    from rest_framework.test import APIClient

    from ingestion.feedback.selectors import event_iter

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {staff_token}")
    good = '{"user": "mpd:0", "kind": "like", "track": "%s"}'
    body = "[" + good + ", " + event + "]"
    before = len(list(event_iter(user="mpd:0")))
    response = client.post("/api/v1/events", body.replace("%s", str(live.item_ids[0])), content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid" and list(response.json()["fields"]) == ["1"]
    assert len(list(event_iter(user="mpd:0"))) == before  # all or nothing


def test_other_inputs_that_were_500s(live, staff_token):
    """A playlist id past 64 bits is a 404; a job parameter MongoDB cannot store a 400, before any lock or run;
    a form with more fields than Django parses is the JSON 400 envelope, not Django's HTML page."""
    from rest_framework.test import APIClient

    from recsys_site.jobs import run_list

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {staff_token}")
    missing = client.get(f"/api/v1/playlists/{2**63}")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    runs = len(run_list(job="train_ranker"))
    refused = client.post("/api/v1/jobs/train_ranker", f'{{"params": {{"force": {BIG}}}}}',
                          content_type="application/json")
    assert refused.status_code == 400 and "params" in refused.json()["fields"], refused.content
    assert len(run_list(job="train_ranker")) == runs
    crowded = client.get("/api/v1/playlists?" + "&".join(f"f{i}=1" for i in range(1001)))
    assert crowded.status_code == 400 and crowded.json()["code"] == "bad_request", crowded.content
    form = client.post("/api/v1/recommendations/continuation", {"name": "x", "seed_tracks": ["x"]}, format="multipart")
    assert form.status_code == 415 and form.json()["code"] == "unsupported_media_type", form.content
