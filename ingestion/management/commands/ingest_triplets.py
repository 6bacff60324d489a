from django.core.management.base import BaseCommand

from ingestion.listens import triplets_ingest
from ingestion.triplets import FORMATS
from recsys_site.mongo import ensure_indexes


class Command(BaseCommand):
    help = (
        "Ingest listening triplets into users, listens (user, item, weight) and friendships. "
        "--format tasteprofile: EchoNest Taste Profile train_triplets.txt (user<TAB>song<TAB>count, no header), "
        "or a folder of such *.txt files. --format hetrec: the HetRec 2011 Last.fm folder (user_artists.dat, "
        "user_friends.dat, artists.dat) or one of its files. Files already ingested (same sha256) are skipped; "
        "changed files update their rows and drop the rows that left them, unless that would drop more than "
        "TRIPLETS_MAX_REMOVED_SHARE (10 percent) of the rows stored from that file: then nothing is dropped, the file "
        "is reported and not recorded as ingested, and --allow-removals lets the removal go ahead. Bad lines are "
        "reported with file and line and skipped. Exit status 1 if anything was rejected."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument("--format", dest="fmt", required=True, choices=FORMATS)
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.add_argument("--allow-removals", action="store_true",
                            help="let a changed file remove the stored rows that left it even when they are more "
                            "than TRIPLETS_MAX_REMOVED_SHARE (10 %%) of the rows stored from it")

    def handle(self, *args, paths, fmt, no_progress, allow_removals, verbosity, **options):
        ensure_indexes()
        report = triplets_ingest(paths=paths, fmt=fmt, show_progress=not no_progress and verbosity > 0,
                                 allow_removals=allow_removals)
        for name in report.skipped:
            self.stdout.write(f"skipped {name}: already ingested (same sha256)")
        for name, collection, removed in report.removals:
            self.stdout.write(f"removed {removed:,} rows from {collection}: stored from {name}, no longer in it")
        for problem in report.problems:
            self.stderr.write(f"rejected {problem}")
        s = report.summary()
        line = (
            f"files: {s['files']} read, {s['files_skipped']} skipped, {s['files_failed']} failed | "
            f"listens: {s['listens_new']:,} new, {s['listens_updated']:,} updated, "
            f"{s['listens_unchanged']:,} unchanged, {s['listens_removed']:,} removed | "
            f"friendships: {s['friendships_new']:,} new, {s['friendships_removed']:,} removed | "
        )
        if s["items_new"] or s["items_updated"] or s["items_removed"]:
            line += f"item names: {s['items_new']:,} new, {s['items_updated']:,} updated | "
        line += (f"users: {s['users_new']:,} new | {s['rejected']:,} rejected | "
                 f"{s['seconds']:.1f} s ({s['rows_per_s']:,.0f} rows/s)")
        self.stdout.write(line)
        if not report.changed:
            self.stdout.write("nothing new: the store already holds everything in these files" if report.ok
                              else "nothing new stored")
        if not report.ok:
            self.stderr.write(f"{len(report.problems)} problem(s); see above")
            raise SystemExit(1)
