"""What the packages' API views share: the ``k`` query parameter, the user lookup that answers 404, and the test
for values MongoDB cannot store."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.exceptions import NotFound


class KSerializer(serializers.Serializer):
    """``?k=N`` with the endpoint's default and bounds."""

    def __init__(self, *args, default: int = 10, maximum: int = 100, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["k"] = serializers.IntegerField(required=False, default=default, min_value=1, max_value=maximum)


def known_user(user: str) -> str:
    """``user`` if the store knows it (created through the API, from triplets, or an MPD pseudo-user), else 404."""
    from ingestion.selectors import user_get

    if user_get(user=user) is None:
        raise NotFound(f"unknown user {user!r}")
    return user


def unstorable(value) -> str | None:
    """Why MongoDB cannot store ``value`` (an integer beyond 64 bits, a lone surrogate, a NUL in a key), else None.

    JSON allows all three, so request data that goes to the store unchecked by a serializer is tested first: a 400,
    not a 500 from the driver."""
    import bson
    from bson.errors import InvalidDocument

    try:
        bson.encode({"value": value})
    except (OverflowError, UnicodeEncodeError, InvalidDocument) as exc:
        return f"cannot be stored: {exc}"
    return None
