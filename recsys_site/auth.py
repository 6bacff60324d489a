"""Who may call the API for which user: scoped bearer credentials, and the one rule every per-user endpoint asks.

Callers (see README, "Who may call what"):

- **an app** (``Authorization: Bearer <app token>``) acts for the users of its app, those it created through
  ``POST /api/v1/users`` (or every user, for a first-party app marked ``any_user``), within its scopes:
  ``events:write``, ``users:write``, ``picks:read``;
- **a user** (``Bearer <user token>``, given when the app creates the user) acts for that one user only;
- **staff** (a Django staff account: admin session or ``Token`` key) run jobs, read experiment results and may act
  for any user;
- **anyone** may read the catalogue and ask for a playlist continuation. Per-user reads (picks, buddies) are
  public only where ``API_PUBLIC_READS`` is on (the local demo), and an anonymous read is never logged as an
  A/B exposure.

A plain (non-staff) Django account acts for nobody.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass

from cachetools import TTLCache
from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.throttling import SimpleRateThrottle

from ingestion.selectors import users_app

from .models import SCOPES, Credential

EVENTS_WRITE, USERS_WRITE, PICKS_READ = SCOPES


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def credential_create(*, kind: str, app: str = "", user: str = "", scopes: list[str] | None = None,
                      any_user: bool = False) -> tuple[Credential, str]:
    """A new credential and its token (shown to the caller once; only its hash is kept)."""
    scopes = list(scopes or [])
    if kind not in (Credential.KIND_APP, Credential.KIND_USER):
        raise ValueError(f"kind must be app or user, not {kind!r}")
    if unknown := set(scopes) - set(SCOPES):
        raise ValueError(f"unknown scopes {sorted(unknown)}; known: {list(SCOPES)}")
    if kind == Credential.KIND_APP and not app:
        raise ValueError("an app credential needs the app's name")
    if kind == Credential.KIND_USER and not user:
        raise ValueError("a user credential needs the user's id")
    token = f"bdy_{secrets.token_urlsafe(32)}"
    credential = Credential.objects.create(key_hash=_hash(token), prefix=token[:8], kind=kind, app=app, user=user,
                                           scopes=scopes if kind == Credential.KIND_APP else [],
                                           any_user=any_user and kind == Credential.KIND_APP)
    return credential, token


# Known tokens, kept a few seconds per process: a read of Django's database per request was measurable at hundreds of
# requests a second. A revoked token therefore keeps working here for at most CREDENTIAL_CACHE_SECONDS.
CREDENTIAL_CACHE_SECONDS = 5.0
_known: TTLCache = TTLCache(maxsize=10_000, ttl=CREDENTIAL_CACHE_SECONDS)
_known_lock = threading.Lock()


@dataclass(frozen=True)
class CredentialUser:
    """``request.user`` for a request with a credential: authenticated, never staff, throttled per credential."""

    credential: Credential
    is_authenticated: bool = True
    is_staff: bool = False
    is_active: bool = True

    @property
    def pk(self) -> str:
        return f"credential:{self.credential.pk}"


class CredentialAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>``; an unknown or revoked token is a 401 (not a silent anonymous request)."""

    keyword = b"bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("give the token as: Authorization: Bearer <token>")
        try:
            token = header[1].decode()
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("the token is not text") from exc
        key = _hash(token)
        with _known_lock:
            credential = _known.get(key)
        if credential is None:
            credential = Credential.objects.filter(key_hash=key, active=True).first()
            if credential is None:
                raise exceptions.AuthenticationFailed("unknown or revoked token")
            with _known_lock:
                _known[key] = credential
        return CredentialUser(credential), credential

    def authenticate_header(self, request):
        return "Bearer"


class CountingThrottle(SimpleRateThrottle):
    """A window of the rate's duration from a caller's first request, counted with one atomic increment in the
    shared cache. DRF's own throttles keep, unpickle and pickle back the time of every request in the window: at an
    app token's 12,000 a minute that list cost more than a cached pick (bench/api.py: p99 83 ms at 300/s)."""

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.cache.add(self.key, 0, timeout=self.duration)
        try:
            count = self.cache.incr(self.key)
        except ValueError:  # the window ended between add and incr
            self.cache.add(self.key, 1, timeout=self.duration)
            count = 1
        return count <= self.num_requests

    def wait(self) -> float:
        return float(self.duration)


class AnonThrottle(CountingThrottle):
    """Per client address (``API_TRUSTED_PROXIES`` says how far X-Forwarded-For is believed), callers with no token."""

    scope = "anon"

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            return None
        return f"throttle:anon:{self.get_ident(request)}"


class TokenRateThrottle(CountingThrottle):
    """Per token (or staff account): the ``app`` rate for an app's token, which acts for many users; ``user`` else."""

    scope = "user"

    def allow_request(self, request, view) -> bool:
        credential = credential_of(request)
        self.scope = "app" if credential is not None and credential.kind == Credential.KIND_APP else "user"
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return None
        return f"throttle:{self.scope}:{request.user.pk}"


def credential_of(request) -> Credential | None:
    return request.auth if isinstance(request.auth, Credential) else None


def is_staff(request) -> bool:
    return bool(getattr(request.user, "is_staff", False) and credential_of(request) is None)


def check_acts_for(request, users: list[str], scope: str) -> None:
    """Allow the request to ``scope`` for every one of ``users``, or raise 401 (no credential) / 403 (naming the
    users and the missing right). Staff may act for anyone."""
    if is_staff(request):
        return
    credential = credential_of(request)
    if credential is None:
        if request.user and request.user.is_authenticated:
            raise exceptions.PermissionDenied("this account acts for no user: use an app or a user token")
        raise exceptions.NotAuthenticated(f"{scope} needs a token: Authorization: Bearer <token>")
    wanted = list(dict.fromkeys(users))
    if credential.kind == Credential.KIND_USER:
        others = [u for u in wanted if u != credential.user]
        if others:
            raise exceptions.PermissionDenied(f"a user token acts for {credential.user} only, not {others[:5]}")
        return
    if scope not in credential.scopes:
        raise exceptions.PermissionDenied(f"this app token lacks the scope {scope} (it has {credential.scopes})")
    if credential.any_user:
        return
    apps = users_app(users=wanted)
    foreign = [u for u in wanted if apps.get(u) != credential.app]
    if foreign:
        raise exceptions.PermissionDenied(f"app {credential.app} may act only for its own users, not {foreign[:5]}")


def check_reads(request, user: str) -> bool:
    """Allow a per-user read (picks, buddies) of ``user``; True when it should be logged as an A/B exposure (a
    caller acting for the user), False for an anonymous read allowed by ``API_PUBLIC_READS``."""
    if settings.API_PUBLIC_READS and credential_of(request) is None and not is_staff(request):
        return False
    check_acts_for(request, [user], PICKS_READ)
    return True


def check_staff(request) -> None:
    if not is_staff(request):
        if credential_of(request) is None and not (request.user and request.user.is_authenticated):
            raise exceptions.NotAuthenticated("staff only: log in or send a staff token")
        raise exceptions.PermissionDenied("staff only")


def app_creating_users(request) -> str | None:
    """The app a new user will belong to: the app of a token with ``users:write`` (None for staff); else 401/403."""
    if is_staff(request):
        return None
    credential = credential_of(request)
    if credential is None or credential.kind != Credential.KIND_APP:
        if credential is None and not (request.user and request.user.is_authenticated):
            raise exceptions.NotAuthenticated(f"{USERS_WRITE} needs an app token: Authorization: Bearer <token>")
        raise exceptions.PermissionDenied(f"only an app token with {USERS_WRITE} (or staff) creates users")
    if USERS_WRITE not in credential.scopes:
        raise exceptions.PermissionDenied(f"this app token lacks the scope {USERS_WRITE} (it has {credential.scopes})")
    return credential.app


def credential_label(request) -> str:
    """What a stored event records as the credential that sent it: ``app:NAME``, ``user:ID`` or ``staff:NAME``."""
    credential = credential_of(request)
    if credential is not None:
        return credential.label
    return f"staff:{request.user.get_username()}"


class CredentialScheme(OpenApiAuthenticationExtension):
    """The API schema's description of ``CredentialAuthentication``: an HTTP bearer token."""

    target_class = "recsys_site.auth.CredentialAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "an app token (acts for its users within its scopes) or a user token (that user)"}
