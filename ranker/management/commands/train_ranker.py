"""``manage.py train_ranker [--promote] [--force] [--param KEY=VALUE ...]``: train a new ranker version.

It runs the ``train_ranker`` job in this process (``run_job train_ranker --sync``): the same steps, run document and
promotion rule as the weekly refresh and ``POST /api/v1/jobs/train_ranker``.
"""

from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Train the served track recommender on the store and register it; --promote makes it live if not worse."

    def add_arguments(self, parser):
        parser.add_argument("--promote", action="store_true", help="make it live unless it validates worse")
        parser.add_argument("--force", action="store_true", help="with --promote: even if it validates worse")
        parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                            help="override a parameter, e.g. bpr.epochs=20 or knn_weight=0.8")

    def handle(self, *args, **opts):
        params = [f"ranker.{pair}" for pair in opts["param"]]
        params += [f"promote={'true' if opts['promote'] else 'false'}", f"force={'true' if opts['force'] else 'false'}"]
        call_command("run_job", "train_ranker", "--sync", *[a for p in params for a in ("--param", p)],
                     stdout=self.stdout, stderr=self.stderr)
