from django.core.management.base import BaseCommand, CommandError

from ingestion.services import catalogue_rebuild, catalogue_stats_compute, mpd_ingest
from recsys_site.mongo import ensure_indexes


class Command(BaseCommand):
    help = (
        "Ingest Spotify Million Playlist Dataset slices. PATH: a slice file, a folder (every mpd.slice.*.json "
        "below it) or the official spotify_million_playlist_dataset.zip, read in place. Files already ingested "
        "(same sha256) are skipped; changed files update their playlists by pid. Exit status 1 if anything was "
        "rejected."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="*", metavar="PATH")
        parser.add_argument("--rebuild-catalogue", action="store_true",
                            help="recompute tracks and artists from the stored playlists")
        parser.add_argument("--stats", action="store_true",
                            help="recompute the catalogue statistics the dashboard shows (every ingest that writes "
                            "playlists does; for a store ingested before they existed)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, paths, rebuild_catalogue, stats, no_progress, verbosity, **options):
        if not paths and not rebuild_catalogue and not stats:
            raise CommandError("give at least one PATH (slice file, folder or MPD zip), or --rebuild-catalogue, "
                               "or --stats")
        ensure_indexes()
        show_progress = not no_progress and verbosity > 0
        if rebuild_catalogue:
            counts = catalogue_rebuild(show_progress=show_progress)
            self.stdout.write(f"catalogue rebuilt: {counts['tracks']:,} tracks, {counts['artists']:,} artists")
        report = mpd_ingest(paths=paths, show_progress=show_progress) if paths else None
        if report is not None:
            self._report(report)
        if stats or rebuild_catalogue:
            self._stats()
        if report is not None and not report.ok:
            self.stderr.write(f"{len(report.problems)} problem(s); see above")
            raise SystemExit(1)

    def _report(self, report) -> None:
        for name in report.skipped:
            self.stdout.write(f"skipped {name}: already ingested (same sha256)")
        for problem in report.problems:
            self.stderr.write(f"rejected {problem}")
        s = report.summary()
        self.stdout.write(
            f"files: {s['files']} read, {s['files_skipped']} skipped, {s['files_failed']} failed | "
            f"playlists: {s['new']:,} new, {s['updated']:,} updated, {s['unchanged']:,} unchanged, "
            f"{s['rejected']:,} rejected | tracks: {s['new_tracks']:,} new | "
            f"{s['seconds']:.1f} s ({s['playlists_per_s']:,.0f} playlists/s)"
        )
        if s["new"] == 0 and s["updated"] == 0 and report.ok:
            self.stdout.write("nothing new: the store already holds everything in these files")

    def _stats(self) -> None:
        doc = catalogue_stats_compute()
        counts = doc["counts"]
        self.stdout.write(f"catalogue statistics stored: {counts['playlists']:,} playlists, {counts['tracks']:,} "
                          f"tracks, in {doc['seconds']:.1f} s")
