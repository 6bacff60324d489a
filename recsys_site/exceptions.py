"""Errors that every layer may raise and the API maps to a status (``recsys_site.errors``): defined here, at the
bottom, so that the packages that raise them need not import the web layer, nor the web layer them."""

from __future__ import annotations


class NotFoundError(LookupError):
    """Something a request names does not exist (a user, a playlist): the API answers 404."""


class UnavailableError(Exception):
    """Something the answer needs cannot be had right now (the live model on this machine): the API answers 503
    with ``code`` and a ``Retry-After`` of ``retry_after`` seconds."""

    code = "unavailable"
    retry_after = 30
    public_message = "a part of the service is unavailable; try again soon"
