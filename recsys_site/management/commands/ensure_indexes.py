from django.core.management.base import BaseCommand

from recsys_site.mongo import ensure_indexes


class Command(BaseCommand):
    help = "Create every MongoDB index the packages declare (idempotent)."

    def handle(self, *args, **options):
        created = ensure_indexes()
        self.stdout.write(f"indexes ensured on {len(created)} collections")
