import json

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Print the document counts of the store as JSON (used by `make run` to decide on demo data)."

    def handle(self, *args, **options):
        from ingestion.selectors import catalogue_counts

        self.stdout.write(json.dumps(catalogue_counts()))
