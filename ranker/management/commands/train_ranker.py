"""``manage.py train_ranker [--promote] [--force] [--param KEY=VALUE ...]``: train a new ranker version."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from ranker.services import PromotionRefused, model_promote, ranker_train


def parse_params(pairs: list[str]) -> dict:
    """``bpr.epochs=20 knn_weight=0.8`` → ``{"bpr": {"epochs": 20}, "knn_weight": 0.8}`` (values read as JSON)."""
    params: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--param wants KEY=VALUE, got {pair!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        head, _, tail = key.partition(".")
        if tail:
            params.setdefault(head, {})[tail] = value
        else:
            params[key] = value
    return params


class Command(BaseCommand):
    help = "Train the served track recommender on the store and register it; --promote makes it live if not worse."

    def add_arguments(self, parser):
        parser.add_argument("--promote", action="store_true", help="make it live unless it validates worse")
        parser.add_argument("--force", action="store_true", help="with --promote: even if it validates worse")
        parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                            help="override a parameter, e.g. bpr.epochs=20 or knn_weight=0.8")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts):
        try:
            model = ranker_train(params=parse_params(opts["param"]), show_progress=not opts["no_progress"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        metrics = {k: v for k, v in model.meta["metrics"].items() if k != "components"}
        self.stdout.write(f"trained {model.version}: {json.dumps(metrics)}")
        if opts["promote"]:
            try:
                promotion = model_promote(version=model.version, force=opts["force"])
            except PromotionRefused as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"{model.version} is live (was {promotion.previous})")
