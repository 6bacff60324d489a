"""``manage.py promote_model VERSION [--force]``: make a registered version live."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ranker.training.services import PromotionRefused, model_promote


class Command(BaseCommand):
    help = "Make VERSION the live ranker (refused if it validates worse than the live one, unless --force)."

    def add_arguments(self, parser):
        parser.add_argument("version")
        parser.add_argument("--force", action="store_true")

    def handle(self, *args, **opts):
        try:
            promotion = model_promote(version=opts["version"], force=opts["force"])
        except (PromotionRefused, ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{promotion.version} is live (was {promotion.previous})")
