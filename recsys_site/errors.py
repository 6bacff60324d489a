"""Every API error as JSON with a ``code``, a ``message`` and, for bad input, the errors per ``fields``."""

from __future__ import annotations

import logging

from django.core.exceptions import SuspiciousOperation
from pymongo.errors import AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from .exceptions import NotFoundError, UnavailableError


def api_exception_handler(exc, context):
    if isinstance(exc, NotFoundError):
        exc = exceptions.NotFound(str(exc))
    if isinstance(exc, AutoReconnect | ConnectionFailure | ServerSelectionTimeoutError):
        # The store is down: say so at once, with a retry hint, rather than a 500 after a stack trace.
        response = Response({"code": "unavailable", "message": "the catalogue store is unreachable; try again soon"},
                            status=status.HTTP_503_SERVICE_UNAVAILABLE)
        response["Retry-After"] = "30"
        return response
    if isinstance(exc, UnavailableError):
        # e.g. the live model version cannot be loaded on this machine (not in the store whole, corrupt, no disk
        # for the cache): a retry may find it fetched, or another version live.
        logging.getLogger(type(exc).__module__).error("answering 503: %s", exc)
        response = Response({"code": exc.code, "message": exc.public_message},
                            status=status.HTTP_503_SERVICE_UNAVAILABLE)
        response["Retry-After"] = str(exc.retry_after)
        return response
    response = exception_handler(exc, context)
    if response is None and isinstance(exc, SuspiciousOperation):  # e.g. a form with more than 1000 fields
        logging.getLogger(f"django.security.{type(exc).__name__}").error(str(exc))  # as Django would log it
        return Response({"code": "bad_request", "message": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = {"code": "invalid", "message": "the request has invalid fields", "fields": fields}
    else:
        detail = getattr(exc, "detail", str(exc))
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = {"code": code, "message": str(detail)}
    return response


def error(code: str, message: str, http_status: int = status.HTTP_404_NOT_FOUND, **extra) -> Response:
    return Response({"code": code, "message": message, **extra}, status=http_status)
