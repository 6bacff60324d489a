"""What the packages' API views share: the ``k`` query parameter, the user lookup that answers 404, and the test
for values MongoDB cannot store."""

from __future__ import annotations

from typing import Any

import bson
from bson.errors import InvalidDocument
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.exceptions import NotFound

from ingestion.selectors import UnknownUser, user_exists


class KSerializer(serializers.Serializer):
    """``?k=N`` with the endpoint's default and bounds."""

    def __init__(self, *args, default: int = 10, maximum: int = 100, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["k"] = serializers.IntegerField(required=False, default=default, min_value=1, max_value=maximum)


def known_user(user: str) -> str:
    """``user`` if the store knows it (created through the API, from triplets, or an MPD pseudo-user), else 404."""

    if not user_exists(user=user):
        raise NotFound(str(UnknownUser(user)))
    return user


def unstorable(value) -> str | None:
    """Why MongoDB cannot store ``value`` (an integer beyond 64 bits, a lone surrogate, a NUL in a key), else None.

    JSON allows all three, so request data that goes to the store unchecked by a serializer is tested first: a 400,
    not a 500 from the driver."""

    try:
        bson.encode({"value": value})
    except (OverflowError, UnicodeEncodeError, InvalidDocument) as exc:
        return f"cannot be stored: {exc}"
    return None


class ErrorSerializer(serializers.Serializer):
    """Every API error: a machine-readable ``code``, a sentence, and for bad input the errors per field."""

    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(required=False, help_text="field (or batch item index) → what is wrong with it")
    run_id = serializers.CharField(required=False, help_text="409 on a job start: the run already going")


ERRORS = {
    400: "Bad parameters or body (k out of range, a malformed URI, a wrong type): `fields` says what and where.",
    401: "No token, or an unknown one.",
    403: "The token's user may not do this (jobs are for staff).",
    404: "Unknown user, playlist, track, experiment, job or run.",
    409: "Already exists, or the job is already running (`run_id`).",
    415: "The body is not JSON (or form data).",
    429: "Throttled: too many requests for this address or token; see Retry-After.",
    503: "The store is unreachable, or the live model cannot be loaded on this server: retry after Retry-After "
         "seconds.",
}
ALWAYS = (429, 503)  # any operation may be throttled or find the store down


def responses(success: Any, *errors: int, status: int = 200) -> dict[int, Any]:
    """An operation's documented answers: ``success`` under ``status`` and the error envelope for each of ``errors``
    (plus throttling and an unreachable store, which any operation may answer)."""

    documented: dict[int, Any] = {status: success}
    for code in (*errors, *ALWAYS):
        documented[code] = OpenApiResponse(ErrorSerializer, description=ERRORS[code])
    return documented
