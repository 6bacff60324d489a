import json

from django.core.management.base import BaseCommand

from ingestion.selectors import catalogue_counts
from ranker.training.selectors import live_version


class Command(BaseCommand):
    help = ("Print the document counts of the store and the live model version as JSON "
            "(used by `make run` to decide on demo data and a first training).")

    def handle(self, *args, **options):
        self.stdout.write(json.dumps({**catalogue_counts(), "live_model": live_version()}))
