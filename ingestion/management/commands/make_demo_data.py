"""``manage.py make_demo_data OUT --playlists N --seed S [--slice-size M]``: synthetic MPD slices."""

from __future__ import annotations

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.demo import write_demo_slices


class Command(BaseCommand):
    help = (
        "Write deterministic demo data in the Spotify Million Playlist Dataset slice format "
        "(mpd.slice.START-END.json) to OUT. The same --playlists and --seed give identical files."
    )
    # Only writes files: no database, URLs or models involved, so don't block on unrelated checks.

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("out", metavar="OUT", help="folder to write the slices into (created if missing)")
        parser.add_argument(
            "--playlists", type=int, required=True, metavar="N", help="number of playlists (>= 1)"
        )
        parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (>= 0, default 0)")
        parser.add_argument(
            "--slice-size", type=int, default=1000, metavar="M",
            help="playlists per file (>= 1, default 1000)",
        )

    def handle(self, *args, **options) -> None:
        playlists: int = options["playlists"]
        seed: int = options["seed"]
        slice_size: int = options["slice_size"]
        out = Path(options["out"])
        if out.exists() and not out.is_dir():
            raise CommandError(f"{out} exists and is not a folder")

        # The bar goes to stderr so the summary line on stdout stays easy to parse.
        show_progress = options.get("verbosity", 1) >= 1
        stats: dict[str, int] = {}
        started = time.perf_counter()
        try:
            paths = write_demo_slices(
                out, playlists=playlists, seed=seed, slice_size=slice_size,
                show_progress=show_progress, stats=stats,
            )
        except OSError as exc:
            raise CommandError(f"cannot write to {out}: {exc}") from exc
        except ValueError as exc:  # --playlists, --slice-size or --seed out of range, named
            raise CommandError(str(exc)) from exc
        elapsed = time.perf_counter() - started
        files = f"{len(paths)} file" + ("s" if len(paths) != 1 else "")
        self.stdout.write(
            f"Wrote {files} to {out}: {stats['playlists']} playlists, "
            f"{stats['distinct_tracks']} distinct tracks, {elapsed:.1f} s"
        )
