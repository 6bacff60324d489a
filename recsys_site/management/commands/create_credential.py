"""``manage.py create_credential --app NAME --scopes events:write,picks:read [--any-user]`` or ``--user ID``."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from recsys_site.auth import credential_create
from recsys_site.models import SCOPES


class Command(BaseCommand):
    help = ("Make an API token: an app token (--app, with --scopes; --any-user lets a first-party app act for every "
            "user) or a user token (--user). The token is printed once; only its hash is stored.")

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--app", help="the app's name: it acts for the users it creates")
        who.add_argument("--user", help="a Buddies user id: the token acts for that user only")
        parser.add_argument("--scopes", default="", help=f"an app's scopes, comma-separated, of {','.join(SCOPES)}")
        parser.add_argument("--any-user", action="store_true", help="an app that may act for every user")

    def handle(self, *args, **opts):
        scopes = [s.strip() for s in opts["scopes"].split(",") if s.strip()]
        if opts["app"] and not scopes:
            raise CommandError(f"an app token needs --scopes, of {','.join(SCOPES)}")
        try:
            credential, token = credential_create(kind="app" if opts["app"] else "user", app=opts["app"] or "",
                                                  user=opts["user"] or "", scopes=scopes, any_user=opts["any_user"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(f"made {credential}; keep the token, it is shown only now:")
        self.stdout.write(token)
