"""The listening simulator (``manage.py simulate_listeners``): simulated users who take picks and listen, through the
REST API only.

It is a client. Users, their playlists, picks, events and job starts go over HTTP (``requests``), exactly as an app
would send them; nothing here reads or writes the store. Only the MPD input is read from disk (with
``ingestion.mpd``'s parser).

**Users.** Each simulated user is a real MPD playlist the store does not hold. The user is created through
``POST /api/v1/users``, with the first ``known_share`` of the playlist as their own playlist (``POST
/api/v1/users/{id}/playlists``; seeds the catalogue does not know, as ``POST /api/v1/recommendations/continuation``
reports them, are left out). The rest is their hidden taste, which the system never sees. A user the API refuses is
skipped and counted, with the reason.

**A day.** Each user is active with probability ``active``. An active user fetches playlist picks and track picks,
opens each pick at rank r with probability ``p / (1 + r)^γ``, and plays what it opened in order: a track of the
hidden taste is played through; a track by an artist they like (the artists of their playlist, known and hidden; a
track pick's artist is known when the MPD input names it) is played 40–120 s; any other is mostly skipped within
seconds (a ``skip``, or a play under 30 s); a track played from a playlist names it (``playlist``), as an app
knows the context it plays from. A playlist whose share of good plays (taste or liked artist) reaches
``follow_threshold`` is followed. Every event carries its list's
``rec_id`` and an ``event_id``, and a user's events of a day go in one ``POST /api/v1/events``. Day d of n is dated
n − d days ago (``ts`` on the events, ``?ts=`` on the picks reads), so the Engagement page draws the run's days.

**Determinism.** Every draw comes from a generator seeded with (seed, the user's MPD pid, day), never from
one shared between threads: two runs with the same seed on the same store state make the same decisions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from tqdm import tqdm

from ingestion.mpd import Problem, SliceError, decode_slice, iter_sources, validate_playlist

log = logging.getLogger(__name__)

PLAY_POSITIVE_MS = 30_000  # a shorter play counts as a skip (ingestion.feedback.rules)
RETRY_STATUSES = (429, 502, 503, 504)


@dataclass(frozen=True)
class Params:
    """Every knob of a run (each is a flag of ``simulate_listeners``)."""

    users: int = 200
    days: int = 7
    active: float = 0.6  # chance a user is active on a day
    known_share: float = 0.5  # the first part of the playlist the system sees
    min_known: int = 5  # ... at least this many tracks (and one hidden)
    playlist_k: int = 10
    track_k: int = 20
    open_playlist: float = 0.5  # p0 of opening the top playlist pick; rank r: p0 / (1 + r)^gamma
    open_track: float = 0.3
    gamma: float = 1.0
    plays_per_playlist: int = 10  # tracks played of an opened playlist, from its first
    follow_threshold: float = 0.3  # share of good plays that makes a follow
    full_ms: int = 200_000  # a taste track: played through (its duration when known, else about this)
    full_ms_sd: int = 20_000
    artist_ms: tuple[int, int] = (40_000, 120_000)  # a liked artist's track: played this long
    skip_prob: float = 0.8  # any other track: a skip event with this chance, else a short play
    short_ms: tuple[int, int] = (2_000, 25_000)
    seed: int = 0
    concurrency: int = 4
    experiment: str = "playlist_ranker"
    prefix: str = ""  # user names: PREFIX-PID (default: sim<seed>)
    retrain_job: str = ""  # a job started between days (staff token), e.g. train_playlist_ranker
    retrain_timeout: float = 1800.0
    timeout: float = 60.0  # per HTTP request
    settle_seconds: float = 3.0  # waited before reading the results: the servers' served logs are written in batches

    def user_prefix(self) -> str:
        return self.prefix or f"sim{self.seed}"


@dataclass
class SimUser:
    """One simulated listener: an MPD playlist split into what the system is shown and what it must find."""

    pid: int
    name: str
    known: list[str]
    hidden: frozenset[str]
    artists: frozenset[str]  # normalised artist names of the whole playlist
    durations: dict[str, int] = field(default_factory=dict)
    user_id: str | None = None
    seeded: int = 0  # tracks of ``known`` the catalogue knew (their own playlist); 0: a cold user


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {json.dumps(body)[:300]}")
        self.status, self.body = status, body


class Api:
    """A thin HTTP client: one ``requests.Session`` per thread, retries of throttled or shed requests (a POST of
    events is safe to retry: its ``event_id``s make it idempotent)."""

    def __init__(self, base_url: str, token: str, *, staff_token: str = "", timeout: float = 60.0,
                 retries: int = 4) -> None:
        self.base = base_url.rstrip("/")
        self.token, self.staff_token = token, staff_token
        self.timeout, self.retries = timeout, retries
        self._local = threading.local()
        self.requests = 0
        self._count_lock = threading.Lock()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def call(self, method: str, path: str, *, staff: bool = False, ok: Iterable[int] = (200, 201, 202),
             **kwargs) -> tuple[int, Any]:
        """(status, JSON body); ``ApiError`` for a status outside ``ok`` after the retries."""
        if staff and not self.staff_token:
            raise ApiError(method, path, 0, {"message": "needs --staff-token"})
        auth = f"Token {self.staff_token}" if staff else f"Bearer {self.token}"
        ok = tuple(ok)
        for attempt in range(self.retries + 1):
            with self._count_lock:
                self.requests += 1
            try:
                response = self._session().request(method, f"{self.base}{path}", headers={"Authorization": auth},
                                                   timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout):  # a retried POST of events is stored once
                if attempt == self.retries:
                    raise
                time.sleep(0.5 * 2 ** attempt)
                continue
            try:
                body = response.json()
            except ValueError:
                body = {"text": response.text[:300]}
            if response.status_code in ok:
                return response.status_code, body
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                time.sleep(min(float(response.headers.get("Retry-After") or 0.5 * 2 ** attempt), 10.0))
                continue
            raise ApiError(method, path, response.status_code, body)
        raise AssertionError("unreachable")


# -- users --------------------------------------------------------------------------------------------------------

def _artist(name: str) -> str:
    return " ".join(name.lower().split())


def load_users(paths: list[str], params: Params, artist_of: dict[str, str] | None = None
               ) -> tuple[list[SimUser], list[str]]:
    """``params.users`` playlists of the MPD files (chosen with ``params.seed``, in pid order) as simulated users,
    and the problems met reading the files. A playlist needs ``min_known`` + 1 distinct tracks or more. ``artist_of``,
    if given, is filled with the artist of every track in the files: what a listener knows of a track pick's artist
    without asking the API."""
    problems: list[str] = []
    candidates: list[dict[str, Any]] = []
    for source in iter_sources(paths):
        if isinstance(source, Problem):
            problems.append(str(source))
            continue
        try:
            raws = decode_slice(source.read(), name=source.name)
        except (SliceError, OSError) as exc:
            problems.append(str(exc))
            continue
        for index, raw in enumerate(raws):
            doc = validate_playlist(raw, file=source.name, index=index)
            if isinstance(doc, Problem):
                problems.append(str(doc))
                continue
            if artist_of is not None:
                artist_of.update((t["uri"], t["artist_name"]) for t in doc["tracks"])
            if len({t["uri"] for t in doc["tracks"]}) > params.min_known:
                candidates.append(doc)
    candidates.sort(key=lambda d: d["pid"])
    chosen = random.Random(f"{params.seed}:users").sample(candidates, min(params.users, len(candidates)))
    users = []
    for doc in sorted(chosen, key=lambda d: d["pid"]):
        uris = list(dict.fromkeys(t["uri"] for t in doc["tracks"]))
        cut = min(max(params.min_known, math.ceil(params.known_share * len(uris))), len(uris) - 1)
        users.append(SimUser(pid=doc["pid"], name=doc["name"], known=uris[:cut], hidden=frozenset(uris[cut:]),
                             artists=frozenset(_artist(t["artist_name"]) for t in doc["tracks"]),
                             durations={t["uri"]: t["duration_ms"] for t in doc["tracks"] if t.get("duration_ms")}))
    return users, problems


def user_setup(api: Api, user: SimUser, prefix: str) -> str | None:
    """Create ``user`` through the API with its known tracks as its playlist; None when it worked, else why the
    API refused it (the user is then skipped)."""
    try:
        _, created = api.call("POST", "/api/v1/users", json={"name": f"{prefix}-{user.pid}"}, ok=(201,))
    except ApiError as exc:
        return f"user not created: HTTP {exc.status} {exc.body.get('message') or exc.body}"
    except requests.RequestException as exc:
        return f"user not created: {exc}"
    user.user_id = created["id"]
    try:
        _, seen = api.call("POST", "/api/v1/recommendations/continuation", json={"seed_tracks": user.known, "k": 1})
        unknown = set(seen.get("unknown_seeds") or [])
        tracks = [t for t in user.known if t not in unknown]
        if tracks:  # a user none of whose tracks the catalogue knows starts cold (most-followed picks)
            api.call("POST", f"/api/v1/users/{user.user_id}/playlists",
                     json={"name": user.name[:200] or "my playlist", "tracks": tracks}, ok=(201,))
    except (ApiError, requests.RequestException) as exc:
        return f"user {user.user_id} created, but not their playlist: {exc}"
    user.seeded = len(tracks)
    return None


# -- a day --------------------------------------------------------------------------------------------------------

@dataclass
class UserDay:
    """What one user did on one day: the figures the tables sum, and the decisions (for determinism checks)."""

    pid: int
    active: bool
    variant: str | None = None
    experiment: str | None = None
    playlist_lists: int = 0
    follows: int = 0
    plays: int = 0  # plays, skips and listening time on the lists of the A/B experiment (as its results count)
    skips: int = 0
    ms: int = 0
    all_plays: int = 0  # ... and on every list (track picks outside the experiment too)
    all_skips: int = 0
    all_ms: int = 0
    events: int = 0
    decisions: list[Any] = field(default_factory=list)
    followed: list[int] = field(default_factory=list)
    picks: list[int] = field(default_factory=list)  # the playlist picks served (pids, by rank)
    track_picks: list[str] = field(default_factory=list)  # the track picks served (uris, by rank)
    error: str | None = None


class PlaylistCache:
    """Playlists' tracks fetched once per run (``GET /api/v1/playlists/{pid}``), shared by the threads."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._docs: dict[int, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def tracks(self, pid: int) -> list[dict[str, Any]]:
        with self._lock:
            if pid in self._docs:
                return self._docs[pid]
        _, doc = self.api.call("GET", f"/api/v1/playlists/{pid}")
        tracks = doc.get("tracks") or []
        with self._lock:
            self._docs[pid] = tracks
        return tracks


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _listen(rng: random.Random, params: Params, user: SimUser, uri: str, artist: str | None,
            duration: int | None) -> tuple[str, int | None, bool]:
    """(kind, ms_played, good) of one track the user starts: taste played through, a liked artist longer, any other
    mostly skipped within seconds."""
    if uri in user.hidden or uri in user.known:
        full = duration or params.full_ms
        return "play", max(PLAY_POSITIVE_MS, int(rng.gauss(full, params.full_ms_sd))), True
    if artist is not None and _artist(artist) in user.artists:
        return "play", rng.randint(*params.artist_ms), True
    if rng.random() < params.skip_prob:
        return "skip", rng.randint(500, 5_000), False
    return "play", rng.randint(*params.short_ms), False


def user_day(api: Api, cache: PlaylistCache, params: Params, user: SimUser, day: int, shown_at: datetime,
             artist_of: dict[str, str] | None = None) -> UserDay:
    """One user's day: picks, what they open and play, one POST of the day's events. ``artist_of``: the artists of
    tracks the listener knows (from the MPD input), for the track picks (a playlist's tracks come with theirs)."""
    rng = random.Random(f"{params.seed}:{user.pid}:{day}")
    out = UserDay(pid=user.pid, active=rng.random() < params.active)
    if not out.active:
        return out
    try:
        when = {"ts": _iso(shown_at)}
        _, lists = api.call("GET", f"/api/v1/users/{user.user_id}/playlists/recommended",
                            params={"k": params.playlist_k, **when})
        _, tracks = api.call("GET", f"/api/v1/users/{user.user_id}/tracks/recommended",
                             params={"k": params.track_k, **when})
        out.variant, out.experiment = lists.get("variant"), lists.get("experiment")
        out.playlist_lists = 1
        out.picks = [p["pid"] for p in lists.get("playlists", [])]
        out.track_picks = [t["uri"] for t in tracks.get("tracks", [])]
        events: list[dict[str, Any]] = []
        clock = [0]

        def emit(kind: str, rec_id: str, **fields: Any) -> None:
            offset = timedelta(milliseconds=min(clock[0], 3_600_000))  # plays follow each other in time
            events.append({"user": user.user_id, "kind": kind, "rec_id": rec_id, "event_id": f"d{day}-{len(events)}",
                           "ts": _iso(shown_at + offset), **fields})

        # The figures per variant count the lists of the experiment, as its results and the Engagement page do
        # (when no list is in one, every list counts).
        counted = {b["rec_id"] for b in (lists, tracks) if b.get("experiment")} or {lists["rec_id"], tracks["rec_id"]}

        def play(uri: str, artist: str | None, duration: int | None, rec_id: str, playlist: int | None = None) -> bool:
            kind, ms, good = _listen(rng, params, user, uri, artist, duration)
            mine = rec_id in counted
            context = {} if playlist is None else {"playlist": playlist}  # the playlist it is played from
            if kind == "skip":
                emit("skip", rec_id, track=uri, **context)
                out.skips += mine
                out.all_skips += 1
            else:
                emit("play", rec_id, track=uri, ms_played=ms, **context)
                out.plays += mine
                out.ms += ms if mine else 0
                out.all_plays += 1
                out.all_ms += ms
            clock[0] += ms or 0
            return good

        for rank, pick in enumerate(lists.get("playlists", [])):
            if rng.random() >= params.open_playlist / (1 + rank) ** params.gamma:
                continue
            started = cache.tracks(pick["pid"])[:params.plays_per_playlist]
            good = [play(t["uri"], t.get("artist_name"), t.get("duration_ms"), lists["rec_id"], pick["pid"])
                    for t in started]
            follow = bool(good) and sum(good) / len(good) >= params.follow_threshold
            if follow:
                emit("follow", lists["rec_id"], playlist=pick["pid"])
                out.follows += 1
                out.followed.append(pick["pid"])
            out.decisions.append(["playlist", rank, pick["pid"], sum(good), len(good), follow])
        for rank, pick in enumerate(tracks.get("tracks", [])):
            if rng.random() >= params.open_track / (1 + rank) ** params.gamma:
                continue
            uri = pick["uri"]
            good = play(uri, (artist_of or {}).get(uri), user.durations.get(uri), tracks["rec_id"])
            out.decisions.append(["track", rank, uri, good])
        out.decisions.append(["events", [(e["kind"], e.get("track") or e.get("playlist"), e.get("ms_played"))
                                         for e in events]])
        if events:
            _, stored = api.call("POST", "/api/v1/events", json=events, ok=(201,))
            out.events = int(stored.get("stored", 0)) + int(stored.get("duplicates", 0))
    except (ApiError, requests.RequestException) as exc:
        out.error = str(exc)
    return out


# -- figures ------------------------------------------------------------------------------------------------------

def day_figures(days: list[UserDay]) -> dict[str, dict[str, Any]]:
    """Per A/B variant of some user-days: active users (distinct), playlist lists served, follows, follow-through
    (playlist lists with a follow ÷ playlist lists served, as the A/B results and the Engagement page count it),
    and on the experiment's lists plays, skips, skip rate (skips ÷ plays and skips) and listening minutes per
    user-day, as they count them too; ``all_*``: the same over every list (track picks outside the experiment)."""
    by: dict[str, list[UserDay]] = defaultdict(list)
    for d in days:
        if d.active and d.error is None:
            by[d.variant or "none"].append(d)
    out = {}
    for variant in sorted(by):
        mine = by[variant]
        lists, follows = sum(d.playlist_lists for d in mine), sum(d.follows for d in mine)
        followed = sum(1 for d in mine if d.follows)
        plays, skips, ms = sum(d.plays for d in mine), sum(d.skips for d in mine), sum(d.ms for d in mine)
        out[variant] = {"active_users": len({d.pid for d in mine}), "user_days": len(mine), "playlist_lists": lists,
                        "follows": follows, "followed_lists": followed,
                        "follow_through": round(followed / lists, 6) if lists else 0.0,
                        "plays": plays, "skips": skips,
                        "skip_rate": round(skips / (plays + skips), 6) if plays + skips else 0.0,
                        "minutes_per_user": round(ms / 60_000 / len(mine), 6),
                        "all_plays": sum(d.all_plays for d in mine), "all_skips": sum(d.all_skips for d in mine),
                        "all_minutes_per_user": round(sum(d.all_ms for d in mine) / 60_000 / len(mine), 6),
                        "events": sum(d.events for d in mine)}
    return out


def figures_table(day: int, figures: dict[str, dict[str, Any]]) -> str:
    head = f"{'day':>4} {'variant':<18} {'active':>7} {'lists':>6} {'follows':>7} {'follow-thr':>10} " \
           f"{'min/user':>9} {'skip rate':>9}"
    rows = [head] + [f"{day:>4} {v:<18} {f['active_users']:>7} {f['playlist_lists']:>6} {f['follows']:>7} "
                     f"{f['follow_through']:>10.4f} {f['minutes_per_user']:>9.2f} {f['skip_rate']:>9.4f}"
                     for v, f in figures.items()]
    return "\n".join(rows)


def decisions_digest(days: list[UserDay]) -> str:
    """A fingerprint of a day's decisions, by MPD pid (not by user id or rec_id, which differ between runs)."""
    body = json.dumps([[d.pid, d.active, d.decisions] for d in sorted(days, key=lambda d: d.pid)])
    return hashlib.sha256(body.encode()).hexdigest()[:16]


# -- a run --------------------------------------------------------------------------------------------------------

@dataclass
class Report:
    params: dict[str, Any]
    users_read: int = 0
    users_created: int = 0
    users_cold: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # MPD pid → why the API refused the user
    input_problems: int = 0
    days: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, dict[str, Any]] = field(default_factory=dict)
    retrains: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] | None = None
    results_error: str | None = None
    requests: int = 0
    seconds: float = 0.0
    trace: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # day → user-days (with --trace)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _retrain(api: Api, params: Params, say: Callable[[str], None]) -> dict[str, Any]:
    """Start the retrain job and wait for its run to end; a job the server does not have (404) is logged only."""
    try:
        _, run = api.call("POST", f"/api/v1/jobs/{params.retrain_job}", staff=True, json={"params": {}},
                          ok=(202,))
    except ApiError as exc:
        say(f"retrain: {params.retrain_job} not started (HTTP {exc.status}): {exc.body.get('message') or exc.body}")
        return {"job": params.retrain_job, "status": f"not started: HTTP {exc.status}"}
    deadline = time.monotonic() + params.retrain_timeout
    status = run.get("status")
    while status not in ("succeeded", "failed", "cancelled"):
        if time.monotonic() > deadline:
            status = f"still {status} after {params.retrain_timeout:g} s: going on"
            break
        time.sleep(2.0)
        _, run = api.call("GET", f"/api/v1/jobs/runs/{run['id']}", staff=True)
        status = run.get("status")
    say(f"retrain: run {run['id']} of {params.retrain_job}: {status}")
    return {"job": params.retrain_job, "run": run["id"], "status": status}


def simulate(*, api: Api, paths: list[str], params: Params, progress: bool = True, trace: bool = False,
             say: Callable[[str], None] = print, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Report:
    """A whole run: read the users, create them, simulate ``params.days`` days, read the experiment's results."""
    began = time.perf_counter()
    report = Report(params=asdict(params))
    artist_of: dict[str, str] = {}
    users, problems = load_users(paths, params, artist_of)
    report.users_read, report.input_problems = len(users), len(problems)
    for problem in problems[:5]:
        say(f"input: {problem}")
    if not users:
        raise ValueError(f"no usable playlists (more than {params.min_known} tracks) in {paths}")
    with ThreadPoolExecutor(max_workers=params.concurrency) as pool:
        refusals = list(_progress(pool.map(lambda u: user_setup(api, u, params.user_prefix()), users),
                                  total=len(users), desc="users", enabled=progress))
        for user, why in zip(users, refusals, strict=True):
            if why:
                report.refused[str(user.pid)] = why
        live = [u for u in users if u.user_id and str(u.pid) not in report.refused]
        report.users_created, report.users_cold = len(live), sum(1 for u in live if not u.seeded)
        say(f"users: {len(users)} read, {len(live)} created ({report.users_cold} cold: no known track in the "
            f"catalogue), {len(report.refused)} refused" + (f", e.g. {next(iter(report.refused.values()))}"
                                                             if report.refused else ""))
        if not live:
            raise ValueError("the API refused every user: " + "; ".join(list(report.refused.values())[:3]))
        cache = PlaylistCache(api)
        totals: dict[str, list[UserDay]] = defaultdict(list)
        for day in range(1, params.days + 1):
            shown_at = now() - timedelta(days=params.days - day, hours=2)
            days = list(_progress(pool.map(lambda u, d=day, at=shown_at: user_day(api, cache, params, u, d, at,
                                                                                   artist_of), live),
                                  total=len(live), desc=f"day {day}/{params.days}", enabled=progress))
            errors = [d.error for d in days if d.error]
            figures = day_figures(days)
            report.days.append({"day": day, "date": f"{shown_at:%Y-%m-%d}", "variants": figures,
                                "errors": len(errors), "decisions": decisions_digest(days)})
            if trace:
                report.trace[str(day)] = [asdict(d) for d in days]
            for d in days:
                totals[d.variant or "none"].append(d)
            say(figures_table(day, figures) + (f"\n     {len(errors)} user-days failed, e.g. {errors[0]}"
                                                if errors else ""))
            if params.retrain_job and day < params.days:
                report.retrains.append(_retrain(api, params, say))
    report.totals = day_figures([d for ds in totals.values() for d in ds])
    # Each web process logs its served lists in batches (SERVED_LOG_FLUSH_SECONDS, half a second by default): let
    # the last ones land before the results are read.
    time.sleep(params.settle_seconds)
    try:
        _, report.results = api.call("GET", f"/api/v1/experiments/{params.experiment}/results", staff=True)
        say(results_table(report.results))
    except ApiError as exc:
        report.results_error = str(exc)
        say(f"results of {params.experiment}: {exc}")
    report.requests, report.seconds = api.requests, round(time.perf_counter() - began, 1)
    say(f"{api.requests:,} requests in {report.seconds:,.1f} s ({api.requests / max(report.seconds, 1e-9):,.0f}/s)")
    return report


def results_table(results: dict[str, Any]) -> str:
    """``GET experiments/{name}/results`` as lines: each variant's follow-through and minutes per user, with the
    difference to the baseline and its 95 % interval."""
    lines = [f"experiment {results['experiment']} (baseline {results.get('baseline')}):"]
    for variant, v in results["variants"].items():
        line = (f"  {variant:<18} users {v['users']:>6}  follow-through {v.get('follow_through', 0):.4f} "
                f"{v.get('follow_through_ci')}  minutes/user {v['listening_minutes_per_user']:.2f} "
                f"{v['listening_minutes_ci']}  skip rate {v['skip_rate']:.4f}")
        if "follow_through_diff" in v:
            line += (f"\n  {'':<18} vs baseline: follow-through {v['follow_through_diff']:+.4f} "
                     f"{v['follow_through_diff_ci']}, minutes/user {v['listening_minutes_diff']:+.2f} "
                     f"{v['listening_minutes_diff_ci']}")
        lines.append(line)
    return "\n".join(lines)


def _progress(items, *, total: int, desc: str, enabled: bool):
    """``items`` with a tqdm bar (its rate in users per second) when ``enabled``."""
    return tqdm(items, total=total, desc=desc, unit="user", disable=not enabled, leave=False)
