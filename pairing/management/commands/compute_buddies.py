"""``manage.py compute_buddies [--k K] [--method auto|exact|ivf|hnsw]``: recompute every user's buddies."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from pairing.services import buddies_compute


class Command(BaseCommand):
    help = "Pair every user with their top-K taste buddies from the live ranker and swap the result in."

    def add_arguments(self, parser):
        parser.add_argument("--k", type=int, help="buddies per user (default PAIRING_K)")
        parser.add_argument("--method", default="auto", choices=["auto", "exact", "ivf", "hnsw"])
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts):
        try:
            summary = buddies_compute(k=opts["k"], method=opts["method"], show_progress=not opts["no_progress"])
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(summary, default=str))
