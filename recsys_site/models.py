"""API credentials: who may call the API for which users (``recsys_site.auth``)."""

from __future__ import annotations

from django.db import models

SCOPES = ("events:write", "users:write", "picks:read")


class Credential(models.Model):
    """A bearer token, stored as its SHA-256 (the token itself is shown once, when it is made).

    ``app``: a service that acts for the users of its app (those it created, or any user with ``any_user``) within
    its ``scopes``. ``user``: a token that acts for one Buddies user (``user``) only, for every scope.
    """

    KIND_APP, KIND_USER = "app", "user"

    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8, help_text="the token's first characters, to tell tokens apart")
    kind = models.CharField(max_length=8, choices=[(KIND_APP, "app"), (KIND_USER, "user")])
    app = models.CharField(max_length=64, blank=True, help_text="the app's name (an app token, or a user's app)")
    user = models.CharField(max_length=200, blank=True, help_text="the Buddies user id of a user token")
    scopes = models.JSONField(default=list, blank=True, help_text=f"an app token's scopes, of {list(SCOPES)}")
    any_user = models.BooleanField(default=False, help_text="an app token that may act for every user (first party)")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["kind", "user"])]

    def __str__(self) -> str:
        return f"{self.kind}:{self.app or self.user} ({self.prefix}…)"

    @property
    def label(self) -> str:
        """What stored events record as the credential that sent them."""
        return f"app:{self.app}" if self.kind == self.KIND_APP else f"user:{self.user}"
