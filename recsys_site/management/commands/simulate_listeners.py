"""``manage.py simulate_listeners --mpd PATH... --users N --days D``: simulated listeners through the REST API
(``recsys_site.simulation``)."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from recsys_site.auth import EVENTS_WRITE, PICKS_READ, USERS_WRITE, credential_create
from recsys_site.simulation import Api, Params, simulate

DEFAULTS = Params()


class Command(BaseCommand):
    help = ("Simulate listeners through the REST API: users made from MPD playlists the store does not hold (the "
            "first part of each playlist is theirs, the rest their hidden taste), who take picks, listen, skip and "
            "follow for --days days, one batch of events per user and day. Prints per day and A/B variant the "
            "active users, follow-through, listening minutes per user and skip rate, then the experiment's results.")

    def add_arguments(self, parser):
        d = DEFAULTS
        parser.add_argument("--mpd", nargs="+", required=True, metavar="PATH",
                            help="MPD slice files or folders of mpd.slice.*.json, not ingested: the users")
        parser.add_argument("--url", default=f"http://127.0.0.1:{settings.WEB_PORT}", help="the API's base URL")
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--token", help="an app token with events:write, users:write and picks:read")
        who.add_argument("--create-token", action="store_true",
                         help="make that app token now (in this store's Django database) for the app --app")
        parser.add_argument("--app", default="simulator", help="the app of --create-token: events are recorded with "
                            "the credential app:NAME, so analysts can filter them")
        parser.add_argument("--staff-token", default="", help="a staff account's Token key: needed for "
                            "--retrain-daily and for reading the experiment's results at the end")
        parser.add_argument("--users", type=int, default=d.users, help="simulated users taken from --mpd (seeded)")
        parser.add_argument("--days", type=int, default=d.days, help="simulated days; day d of D is dated D-d days ago")
        parser.add_argument("--active", type=float, default=d.active, help="chance a user is active on a day")
        parser.add_argument("--known-share", type=float, default=d.known_share,
                            help="share of each playlist (from its start) the system is shown")
        parser.add_argument("--min-known", type=int, default=d.min_known, help="... and at least this many tracks")
        parser.add_argument("--playlist-k", type=int, default=d.playlist_k, help="playlist picks fetched per day")
        parser.add_argument("--track-k", type=int, default=d.track_k, help="track picks fetched per day")
        parser.add_argument("--open-playlist", type=float, default=d.open_playlist,
                            help="p0: a playlist pick at rank r is opened with p0 / (1 + r)^gamma")
        parser.add_argument("--open-track", type=float, default=d.open_track, help="p0 for track picks")
        parser.add_argument("--gamma", type=float, default=d.gamma, help="position bias exponent")
        parser.add_argument("--plays-per-playlist", type=int, default=d.plays_per_playlist,
                            help="tracks played of an opened playlist, from its first")
        parser.add_argument("--follow-threshold", type=float, default=d.follow_threshold,
                            help="follow a playlist when this share of its plays went well")
        parser.add_argument("--full-ms", type=int, default=d.full_ms,
                            help="a taste track is played through: its duration when known, else about this")
        parser.add_argument("--full-ms-sd", type=int, default=d.full_ms_sd, help="noise of a played-through track")
        parser.add_argument("--artist-ms", type=int, nargs=2, default=list(d.artist_ms), metavar=("LOW", "HIGH"),
                            help="a track by a liked artist is played this long (ms)")
        parser.add_argument("--skip-prob", type=float, default=d.skip_prob,
                            help="any other track: a skip event with this chance, else a short play")
        parser.add_argument("--short-ms", type=int, nargs=2, default=list(d.short_ms), metavar=("LOW", "HIGH"),
                            help="a short play (ms)")
        parser.add_argument("--seed", type=int, default=d.seed, help="seeds the users chosen and every draw")
        parser.add_argument("--concurrency", type=int, default=d.concurrency, help="users simulated at once")
        parser.add_argument("--experiment", default=d.experiment, help="the A/B experiment whose results end the run")
        parser.add_argument("--prefix", default="", help="user names are PREFIX-PID (default sim<seed>)")
        parser.add_argument("--retrain-daily", action="store_true",
                            help="between days, start the --retrain-job job (staff token) and wait for its run")
        parser.add_argument("--retrain-job", default="train_playlist_ranker", help="the job --retrain-daily starts")
        parser.add_argument("--retrain-timeout", type=float, default=d.retrain_timeout, help="seconds to wait for it")
        parser.add_argument("--timeout", type=float, default=d.timeout, help="seconds per HTTP request")
        parser.add_argument("--out", type=Path, help="write the run's report (JSON) here")
        parser.add_argument("--trace", action="store_true", help="put every user-day's decisions in --out")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")

    def handle(self, *args, **o):
        if o["retrain_daily"] and not o["staff_token"]:
            raise CommandError("--retrain-daily starts a job: give --staff-token")
        for name in ("users", "days", "concurrency", "playlist_k", "track_k"):
            if o[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1, got {o[name]}")
        for name in ("active", "known_share", "open_playlist", "open_track", "follow_threshold", "skip_prob"):
            if not 0 <= o[name] <= 1:
                raise CommandError(f"--{name.replace('_', '-')} must be between 0 and 1, got {o[name]}")
        if o["days"] >= settings.CLIENT_TS_MAX_AGE_DAYS:
            raise CommandError(f"--days {o['days']}: day 1 would be dated further back than CLIENT_TS_MAX_AGE_DAYS "
                               f"({settings.CLIENT_TS_MAX_AGE_DAYS:g}) allows")
        token = o["token"]
        if o["create_token"]:
            credential, token = credential_create(kind="app", app=o["app"],
                                                  scopes=[EVENTS_WRITE, USERS_WRITE, PICKS_READ])
            self.stderr.write(f"made {credential} for this run")
        params = Params(users=o["users"], days=o["days"], active=o["active"], known_share=o["known_share"],
                        min_known=o["min_known"], playlist_k=o["playlist_k"], track_k=o["track_k"],
                        open_playlist=o["open_playlist"], open_track=o["open_track"], gamma=o["gamma"],
                        plays_per_playlist=o["plays_per_playlist"], follow_threshold=o["follow_threshold"],
                        full_ms=o["full_ms"], full_ms_sd=o["full_ms_sd"], artist_ms=tuple(o["artist_ms"]),
                        skip_prob=o["skip_prob"], short_ms=tuple(o["short_ms"]), seed=o["seed"],
                        concurrency=o["concurrency"], experiment=o["experiment"], prefix=o["prefix"],
                        retrain_job=o["retrain_job"] if o["retrain_daily"] else "",
                        retrain_timeout=o["retrain_timeout"], timeout=o["timeout"])
        api = Api(o["url"], token, staff_token=o["staff_token"], timeout=params.timeout)
        try:
            report = simulate(api=api, paths=o["mpd"], params=params, progress=not o["no_progress"],
                              trace=o["trace"], say=self.stdout.write)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if o["out"]:
            o["out"].parent.mkdir(parents=True, exist_ok=True)
            o["out"].write_text(json.dumps(report.to_json(), indent=1, default=str))
            self.stdout.write(f"report written to {o['out']}")
