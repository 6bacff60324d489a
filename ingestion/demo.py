"""Deterministic demo data in the Spotify Million Playlist Dataset (MPD) slice format.

The real MPD cannot be redistributed, so demos, tests and CI runs use synthetic slices that
look like it (same file names, same JSON fields, realistic URIs) and, more importantly, have
the kind of structure the recommenders are supposed to pick up:

* a handful of latent taste groups, each with its own artists and playlist-name vocabulary;
* Zipf-like popularity inside each group, so a few hits dominate, and deep cuts that make the
  long tail of tracks found in one playlist only;
* playlists that mostly stick to one group, borrow from a second one and sprinkle in global
  hits, often adding runs of tracks from the same album or artist, and now and then a track twice;
* MPD-like length, follower and edit distributions.

At about 7,000 playlists the playlist-length histogram, the track-popularity power law, the distinct
tracks and the artists per playlist match the real sample's (``bench/data_shape.py`` prints them side
by side).

Everything is a pure function of ``(playlists, seed)``: each playlist has its own random
stream keyed by its pid, so the content does not even depend on ``slice_size``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

__all__ = ["GROUP_NAMES", "VERSION", "write_demo_slices"]

VERSION = "buddies-demo v2"

# Independent sub-streams of the user's seed; changing any of these changes every output file.
_STREAM_CATALOGUE = 1
_STREAM_GROUPS = 2
_STREAM_PLAYLIST = 3

_BASE62 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype=np.uint8)

# The calibration below (catalogue, popularity, runs, lengths, repeats) was fitted so that 7,065 demo playlists have
# the shape of the real sample in ../shared/data/mpd-real: see bench/data_shape.py and docs/BENCHMARKS.md.
# Catalogue: _CATALOGUE_SCALE tracks per playlist, of which only a part is ever picked; the real MPD has ~2.26M
# distinct tracks, past that a demo catalogue only costs memory.
_CATALOGUE_SCALE = 110
_MIN_TRACKS = 5_000
_MAX_TRACKS = 2_300_000
# Popularity: artists are Zipf-Mandelbrot (rank + _ARTIST_OFFSET)^-_ARTIST_ZIPF inside their taste group (the offset
# keeps the very top as flat as the real one); global hits are the groups' popularity to the power _GLOBAL_SHARPEN.
_ARTIST_ZIPF = 1.5
_ARTIST_OFFSET = 40.0  # Zipf-Mandelbrot offset: flattens the very top
_DEEP_CUTS = 0.11  # share of picks drawn uniformly from the main taste's whole catalogue: the long tail
_GLOBAL_SHARPEN = 1.0
_ALBUM_SIGMA, _TRACK_SIGMA = 1.0, 1.6  # lognormal spread of album and track popularity within an artist
# Runs: after a pick, with a per-playlist probability in _RUN_P, geometric(_RUN_GEOM) more tracks of its album or
# artist; that is what makes a playlist hold fewer artists than tracks.
_RUN_P = (0.15, 0.8)
_RUN_GEOM = 0.3

# Playlist lengths: gamma(shape, scale) truncated to 5..250; fits the real sample's deciles within 3 tracks.
_MIN_LEN, _MAX_LEN = 5, 250
_LEN_SHAPE, _LEN_SCALE = 1.3, 104.0
# Repeated entries: Poisson(rate x length x gamma(shape) / shape) per playlist, over-dispersed so that most
# playlists have none and a few have many (real sample: 1.4 % of entries, 38 % of playlists have one).
_REPEAT_RATE, _REPEAT_SHAPE = 0.0143, 0.3
_NAME_CACHE_MAX = 500_000  # rendered track JSON kept (~300 bytes each)

# MPD snapshot window: Feb 2010 .. Nov 2017, stored at day resolution like the original.
_T_START = 1_265_000_000
_T_END = 1_509_494_400
_DAY = 86_400


@dataclass(frozen=True)
class _Group:
    name: str
    weight: float  # share of playlists whose main taste this is
    words: tuple[str, ...]  # playlist-name vocabulary
    title_words: tuple[str, ...]  # flavour for track / album titles
    artist_style: str


_GROUPS: tuple[_Group, ...] = (
    _Group("country", 0.10,
           ("country", "boots", "truck", "southern", "summer", "back roads", "whiskey", "honky tonk",
            "bonfire", "dirt road", "cowboy", "country roads", "tailgate"),
           ("Truck", "Whiskey", "Dirt", "Road", "Town", "Boots", "Tailgate", "Porch", "Creek", "Georgia"),
           "person"),
    _Group("hip hop", 0.14,
           ("rap", "hip hop", "bars", "trap", "hood", "lit", "turnt", "swag", "beats", "flow", "gang"),
           ("Money", "Hustle", "Gang", "Bounce", "Ice", "Drip", "Block", "Flex", "Trap", "Goat"),
           "rapper"),
    _Group("workout", 0.09,
           ("workout", "gym", "run", "running", "cardio", "lift", "pump up", "beast mode", "sweat",
            "training", "motivation"),
           ("Power", "Run", "Stronger", "Fight", "Rise", "Beast", "Push", "Sweat", "Fast", "Pump"),
           "band"),
    _Group("chill", 0.10,
           ("chill", "relax", "vibes", "mellow", "sleep", "calm", "lazy sunday", "study", "acoustic",
            "coffee", "rainy day"),
           ("Slow", "Breathe", "Ocean", "Drift", "Quiet", "Sunday", "Float", "Haze", "Waves", "Easy"),
           "person"),
    _Group("rock", 0.09,
           ("rock", "classic rock", "guitar", "metal", "grunge", "alt rock", "punk", "headbang",
            "riffs", "rock on"),
           ("Thunder", "Highway", "Stone", "Rebel", "Electric", "Iron", "Wild", "Black", "Hell", "Roll"),
           "band"),
    _Group("edm", 0.07,
           ("edm", "house", "electro", "bass", "dubstep", "techno", "rave", "festival", "drop",
            "trance", "dance"),
           ("Drop", "Pulse", "Bass", "Neon", "Laser", "Rave", "Sky", "Circuit", "Wave", "Lights"),
           "dj"),
    _Group("latin", 0.06,
           ("latin", "reggaeton", "fiesta", "salsa", "bachata", "caliente", "musica", "latino", "baila",
            "verano"),
           ("Corazon", "Fuego", "Noche", "Baila", "Amor", "Loca", "Calor", "Vida", "Playa", "Bonita"),
           "latin"),
    _Group("indie", 0.07,
           ("indie", "alternative", "indie folk", "hipster", "bedroom pop", "discover", "dreamy",
            "lo-fi", "coffee shop", "feels"),
           ("Paper", "Polaroid", "Bloom", "Ghosts", "Youth", "Honey", "Wolves", "Lanterns", "Fade", "Kids"),
           "band"),
    _Group("throwback", 0.08,
           ("throwback", "throwbacks", "oldies", "90s", "2000s", "80s", "nostalgia", "old school",
            "tbt", "classics", "childhood"),
           ("Yesterday", "Remember", "Baby", "Forever", "Groove", "Boogie", "Radio", "Jukebox", "Cruise",
            "Disco"),
           "person"),
    _Group("christmas", 0.04,
           ("christmas", "xmas", "holiday", "winter", "santa", "snow", "jingle", "christmas songs",
            "december", "holidays"),
           ("Christmas", "Snow", "Santa", "Bells", "Winter", "Mistletoe", "Sleigh", "Holly", "Silent",
            "Star"),
           "person"),
    _Group("jazz", 0.03,
           ("jazz", "smooth jazz", "blues", "swing", "soul", "late night", "lounge", "bossa nova",
            "dinner", "piano"),
           ("Blue", "Moon", "Midnight", "Velvet", "Smoke", "Swing", "Satin", "Autumn", "Lullaby", "Street"),
           "jazz"),
    _Group("party", 0.13,
           ("party", "pregame", "turn up", "dance party", "lit", "friday night", "summer party", "bangers",
            "hype", "weekend"),
           ("Party", "Tonight", "Shots", "Club", "Dance", "Loud", "Friday", "Crazy", "Hands", "Jump"),
           "person"),
)

GROUP_NAMES: tuple[str, ...] = tuple(g.name for g in _GROUPS)

# Which second tastes go with which main taste (beyond their overall popularity).
_AFFINITY = {
    "country": ("throwback", "chill", "christmas"),
    "hip hop": ("party", "workout", "throwback"),
    "workout": ("edm", "hip hop", "rock"),
    "chill": ("indie", "jazz"),
    "rock": ("throwback", "workout", "indie"),
    "edm": ("party", "workout"),
    "latin": ("party", "hip hop"),
    "indie": ("chill", "rock"),
    "throwback": ("party", "rock", "hip hop"),
    "christmas": ("jazz", "throwback"),
    "jazz": ("chill", "christmas"),
    "party": ("hip hop", "edm", "latin"),
}

_TITLE_WORDS = (
    "Love", "Night", "Heart", "Fire", "Home", "Dream", "Time", "Light", "Gold", "Rain", "Tonight",
    "Forever", "River", "Blue", "Money", "Summer", "Stars", "Girl", "Boy", "Crazy", "Young", "Wild",
    "Lonely", "Sweet", "City", "Paradise", "Shadows", "Diamonds", "Ghost", "Angel", "Sunrise", "Mirror",
    "Runaway", "Echo", "Satellite", "Hurricane", "Thunder", "Wonder", "Gravity", "Kingdom", "Secrets",
    "Fever", "Magic", "Island", "Heaven", "Lights", "Roses", "Memories", "Champion", "Alive", "Closer",
    "Falling", "Dancing", "Broken", "Golden", "Electric", "Midnight", "Honey", "Sugar", "Storm",
)
_FIRST = (
    "Jake", "Luke", "Sam", "Kacey", "Carrie", "Tyler", "Maren", "Chris", "Dan", "Kelsea", "Brett", "Jon",
    "Ella", "Nina", "Miles", "Norah", "Leon", "Ray", "Amy", "Billie", "Frank", "Ariana", "Shawn", "Lana",
    "Noah", "Olivia", "Mason", "Ava", "Ethan", "Mia", "Lucas", "Chloe", "Owen", "Zoe", "Caleb", "Ruby",
)
_LAST = (
    "Owen", "Brown", "Hunt", "Bryan", "Rhett", "Morris", "Young", "Allen", "Parker", "Stone", "Hayes",
    "Rivers", "Cole", "Grant", "Reed", "Walker", "Bennett", "Lane", "Fisher", "Wells", "Hart", "Knox",
    "Shaw", "Price", "Dean", "Marsh", "Holt", "Vance", "Wilde", "Keller", "Monroe", "Sutton",
)
_RAP_PREFIX = ("Lil", "Young", "Big", "MC", "Yung", "Kid", "King", "Tha")
_RAP_NAME = ("Nitro", "Stackz", "Drippy", "Tec", "Savage", "Dollar", "Ghost", "Milly", "Kash", "Peso",
             "Vert", "Trigga", "Smoke", "Sosa", "Wavy", "Uzi")
_DJ_PREFIX = ("DJ", "", "", "")
_DJ_NAME = ("Axwell", "Kygo", "Zedd", "Nova", "Kaskade", "Avalon", "Oblivion", "Marten", "Lumo",
            "Hardwell", "Vortex", "Helix", "Zenith", "Orion", "Nyx", "Solace")
_LATIN_FIRST = ("Daddy", "J", "Nicky", "Romeo", "Ozuna", "Maluma", "Carlos", "Sofia", "Luis", "Mariana")
_LATIN_LAST = ("Yankee", "Balvin", "Jam", "Santos", "Fonsi", "Vives", "Reyes", "Diaz", "Luna", "Cruz")
_BAND_ADJ = ("Black", "Arctic", "Silver", "Electric", "Neon", "Royal", "Glass", "Paper", "Velvet", "Lost",
             "Hollow", "Crimson", "Young", "Foster", "Imagine", "Twenty")
_BAND_NOUN = ("Keys", "Monkeys", "Wolves", "Kings", "Dragons", "Lanterns", "Pilots", "Animals", "Horses",
              "Birds", "Saints", "Tigers", "Giants", "Shadows", "Engines", "Sons")
_JAZZ_SUFFIX = ("Trio", "Quartet", "Quintet", "Orchestra", "Big Band", "& His Orchestra", "Ensemble")

_NAME_TEMPLATES = (
    "{w}", "{w}", "{w}", "{w} {v}", "{w} songs", "{w} vibes", "{w} mix", "{w} playlist", "my {w}",
    "{w} {n}", "{w} {y}", "{w} & {v}", "{w}!!", "{w} music", "best of {w}", "{w} jams",
)
_DESC_TEMPLATES = (
    "songs for {w}", "my favorite {w} songs", "all the {w} you need", "{w}, {v} and more",
    "for when you need some {w}", "{w} all day", "a little {w} and a lot of {v}",
)


@dataclass
class _Catalogue:
    """Artists, albums and tracks, with ids contiguous so runs are cheap index ranges."""

    artist_group: np.ndarray
    artist_names: list[str]
    artist_uris: np.ndarray
    artist_track_start: np.ndarray  # tracks of artist a are [start[a], start[a + 1])
    album_artist: np.ndarray
    album_track_start: np.ndarray  # tracks of album b are [start[b], start[b + 1])
    album_kind: np.ndarray
    album_words: np.ndarray
    album_uris: np.ndarray
    track_album: np.ndarray
    track_artist: np.ndarray
    track_pos: np.ndarray  # position on its album, for the "title track" convention
    track_kind: np.ndarray
    track_words: np.ndarray
    track_duration: np.ndarray
    track_uris: np.ndarray
    # Rendered names of tracks/albums seen so far; bounded so huge runs don't hoard strings.
    name_cache: dict[int, dict]
    group_tracks: list[np.ndarray]  # track ids of each group ...
    group_cdf: list[np.ndarray]  # ... and their cumulative popularity
    global_cdf: np.ndarray

    @property
    def n_tracks(self) -> int:
        return len(self.track_album)


def _uris(rng: np.random.Generator, n: int) -> np.ndarray:
    # 22 base62 characters is ~131 bits, so collisions are astronomically unlikely.
    # uint8 draws: int64 ones would briefly need ~440 MB for a full-size catalogue.
    codes = _BASE62[rng.integers(0, 62, size=(n, 22), dtype=np.uint8)]
    return np.ascontiguousarray(codes).view("S22").ravel()


def _artist_name(rng: np.random.Generator, style: str) -> str:
    def pick(seq: tuple[str, ...]) -> str:
        return seq[int(rng.integers(len(seq)))]

    r = rng.random()
    if style == "rapper":
        return f"{pick(_RAP_PREFIX)} {pick(_RAP_NAME)}" if r < 0.7 else pick(_RAP_NAME)
    if style == "dj":
        if r < 0.8:
            return f"{pick(_DJ_PREFIX)} {pick(_DJ_NAME)}".strip()
        return f"{pick(_DJ_NAME)} & {pick(_DJ_NAME)}"
    if style == "latin":
        return f"{pick(_LATIN_FIRST)} {pick(_LATIN_LAST)}"
    if style == "jazz":
        suffix = f" {pick(_JAZZ_SUFFIX)}" if r < 0.5 else ""
        return f"{pick(_FIRST)} {pick(_LAST)}{suffix}"
    if style == "band":
        article = "The " if r < 0.6 else ""
        return f"{article}{pick(_BAND_ADJ)} {pick(_BAND_NOUN)}"
    return f"{pick(_FIRST)} {pick(_LAST)}"


def _catalogue_size(playlists: int) -> int:
    return int(np.clip(_CATALOGUE_SCALE * playlists, _MIN_TRACKS, _MAX_TRACKS))


def _build_catalogue(playlists: int, seed: int) -> _Catalogue:
    rng = np.random.default_rng([seed, _STREAM_CATALOGUE])
    target = _catalogue_size(playlists)
    k = len(_GROUPS)

    # Albums: mostly short (singles/EPs), some full LPs; artists have a geometric number of albums.
    mean_album = 3.2
    mean_albums_per_artist = 1 / 0.45
    n_artists = max(k * 20, round(target / (mean_album * mean_albums_per_artist)))
    albums_per_artist = rng.geometric(0.45, size=n_artists)
    n_albums = int(albums_per_artist.sum())
    lp = rng.random(n_albums) < 0.12
    album_len = np.where(lp, rng.integers(8, 16, size=n_albums), 1 + rng.poisson(1.4, size=n_albums))

    # Smaller taste groups still get a usable catalogue: artist shares follow sqrt(playlist share).
    group_w = np.array([g.weight for g in _GROUPS])
    artist_p = np.sqrt(group_w) / np.sqrt(group_w).sum()
    artist_group = rng.choice(k, size=n_artists, p=artist_p).astype(np.int16)

    album_artist = np.repeat(np.arange(n_artists), albums_per_artist)
    album_track_start = np.concatenate([[0], np.cumsum(album_len)])
    n_tracks = int(album_track_start[-1])
    track_album = np.repeat(np.arange(n_albums), album_len)
    track_artist = album_artist[track_album]
    track_pos = np.arange(n_tracks) - album_track_start[track_album]
    artist_track_start = np.concatenate([[0], np.cumsum(np.bincount(track_artist, minlength=n_artists))])

    # Popularity = artist popularity (Zipf over the artist's rank inside its group) times a skewed
    # share among the artist's own tracks, which makes track popularity power-law within a group.
    artist_pop = np.empty(n_artists)
    for g in range(k):
        members = np.flatnonzero(artist_group == g)
        ranks = rng.permutation(len(members)) + 1 + _ARTIST_OFFSET
        artist_pop[members] = ranks ** -_ARTIST_ZIPF
    album_pop = rng.lognormal(0.0, _ALBUM_SIGMA, size=n_albums)
    track_share = album_pop[track_album] * (track_pos + 1.0) ** -0.6 * rng.lognormal(0.0, _TRACK_SIGMA, size=n_tracks)
    share_sum = np.bincount(track_artist, weights=track_share, minlength=n_artists)
    track_pop = artist_pop[track_artist] * track_share / share_sum[track_artist]

    track_group = artist_group[track_artist]
    group_tracks, group_cdf = [], []
    global_pop = np.empty(n_tracks)
    for g in range(k):
        ids = np.flatnonzero(track_group == g)
        w = track_pop[ids] / track_pop[ids].sum()
        group_tracks.append(ids)
        group_cdf.append(np.cumsum(w))
        # Global hits are sharper than in-group taste: the head of every group, weighted by how
        # many playlists listen to that group.
        global_pop[ids] = group_w[g] * w**_GLOBAL_SHARPEN / (w**_GLOBAL_SHARPEN).sum()
    global_cdf = np.cumsum(global_pop)

    artist_names = [_artist_name(rng, _GROUPS[g].artist_style) for g in artist_group.tolist()]
    # Title vocabulary index: negative picks a group flavour word, non-negative a generic word.
    n_flav = len(_GROUPS[0].title_words)
    track_words = np.where(
        rng.random((n_tracks, 2)) < 0.3,
        -1 - rng.integers(0, n_flav, size=(n_tracks, 2)),
        rng.integers(0, len(_TITLE_WORDS), size=(n_tracks, 2)),
    ).astype(np.int16)
    album_words = np.where(
        rng.random((n_albums, 2)) < 0.3,
        -1 - rng.integers(0, n_flav, size=(n_albums, 2)),
        rng.integers(0, len(_TITLE_WORDS), size=(n_albums, 2)),
    ).astype(np.int16)
    track_kind = rng.choice(6, size=n_tracks, p=[0.35, 0.35, 0.1, 0.1, 0.06, 0.04]).astype(np.int8)
    album_kind = rng.choice(5, size=n_albums, p=[0.4, 0.3, 0.12, 0.1, 0.08]).astype(np.int8)
    track_duration = np.clip(rng.lognormal(np.log(215_000), 0.25, size=n_tracks), 30_000, 900_000)

    return _Catalogue(
        artist_group=artist_group,
        artist_names=artist_names,
        artist_uris=_uris(rng, n_artists),
        artist_track_start=artist_track_start,
        album_artist=album_artist,
        album_track_start=album_track_start,
        album_kind=album_kind,
        album_words=album_words,
        album_uris=_uris(rng, n_albums),
        track_album=track_album,
        track_artist=track_artist,
        track_pos=track_pos,
        track_kind=track_kind,
        track_words=track_words,
        track_duration=track_duration.astype(np.int64),
        track_uris=_uris(rng, n_tracks),
        name_cache={},
        group_tracks=group_tracks,
        group_cdf=group_cdf,
        global_cdf=global_cdf,
    )


def _word(code: int, group: int) -> str:
    return _TITLE_WORDS[code] if code >= 0 else _GROUPS[group].title_words[-1 - code]


def _track_name(cat: _Catalogue, t: int) -> str:
    # Names are rendered on demand: a few small ints per track instead of millions of strings.
    artist = int(cat.track_artist[t])
    g = int(cat.artist_group[artist])
    x, y = cat.track_words[t].tolist()
    a, b = _word(x, g), _word(y, g)
    kind = int(cat.track_kind[t])
    if kind == 0:
        return a
    if kind == 1:
        return f"{a} {b}"
    if kind == 2:
        return f"The {a}"
    if kind == 3:
        return f"{a} of {b}"
    if kind == 4:
        # Any other artist will do for a credit; the neighbour keeps it deterministic and cheap.
        other = (artist + 1) % len(cat.artist_names)
        return f"{a} (feat. {cat.artist_names[other]})"
    return f"{a} {b} - Remix"


def _album_name(cat: _Catalogue, b: int) -> str:
    artist = int(cat.album_artist[b])
    g = int(cat.artist_group[artist])
    u, v = cat.album_words[b].tolist()
    x, y = _word(u, g), _word(v, g)
    kind = int(cat.album_kind[b])
    if kind == 0:
        return f"{x} {y}"
    if kind == 1:
        # Singles are named after their first track, as on Spotify.
        return _track_name(cat, int(cat.album_track_start[b]))
    if kind == 2:
        return cat.artist_names[artist]
    if kind == 3:
        return f"{x} (Deluxe Edition)"
    return f"{x} {y} (Remastered)"


def _playlist_groups(playlists: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Main and second taste group of every playlist (not part of the MPD format; for tests)."""
    rng = np.random.default_rng([seed, _STREAM_GROUPS])
    k = len(_GROUPS)
    w = np.array([g.weight for g in _GROUPS])
    main = rng.choice(k, size=playlists, p=w / w.sum())
    index = {name: i for i, name in enumerate(GROUP_NAMES)}
    second_p = np.tile(w, (k, 1))
    for name, friends in _AFFINITY.items():
        for f in friends:
            second_p[index[name], index[f]] *= 5.0
    np.fill_diagonal(second_p, 0.0)
    second_cdf = np.cumsum(second_p / second_p.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(playlists)
    second = np.minimum((u[:, None] > second_cdf[main]).sum(axis=1), k - 1)
    return main.astype(np.int64), second.astype(np.int64)


def _case(rng: np.random.Generator, text: str) -> str:
    r = rng.random()
    if r < 0.45:
        return text.lower()
    if r < 0.85:
        return text.title()
    if r < 0.93:
        return text[:1].upper() + text[1:]
    return text.upper()


def _playlist_name(rng: np.random.Generator, main: int, second: int) -> str:
    words = _GROUPS[main].words
    w = words[int(rng.integers(len(words)))]
    # The second word sometimes comes from the second taste: "workout edm", "country & throwback".
    pool = _GROUPS[second].words if rng.random() < 0.3 else words
    v = pool[int(rng.integers(len(pool)))]
    if v == w:
        v = "mix"
    template = _NAME_TEMPLATES[int(rng.integers(len(_NAME_TEMPLATES)))]
    name = template.format(w=w, v=v, n=int(rng.integers(1, 6)), y=int(rng.integers(2010, 2018)))
    return _case(rng, name)


def _sample(rng: np.random.Generator, cdf: np.ndarray, ids: np.ndarray | None, n: int) -> np.ndarray:
    idx = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    idx = np.minimum(idx, len(cdf) - 1)
    return idx if ids is None else ids[idx]


def _first_occurrences(seq: np.ndarray) -> np.ndarray:
    """``seq`` without repeats, each value where it first appears."""
    _, first = np.unique(seq, return_index=True)
    return seq[np.sort(first)]


def _playlist_tracks(
    rng: np.random.Generator, cat: _Catalogue, length: int, main: int, second: int
) -> np.ndarray:
    """``length`` distinct track ids: picks from the main and second taste and global hits, with runs."""
    # Per-playlist taste mix: ~80% main group on average, the rest second group and global hits.
    p_main = rng.beta(8.0, 2.0)
    # Sources: main taste, second taste, global hits, and deep cuts (any track of the main taste, uniformly).
    source_cdf = np.cumsum(np.array([p_main, 0.75 * (1.0 - p_main), 0.25 * (1.0 - p_main), 0.0]) * (1 - _DEEP_CUTS)
                           + np.array([0.0, 0.0, 0.0, _DEEP_CUTS]))
    p_run = rng.uniform(*_RUN_P)  # some curators add whole albums, others single tracks
    pools = ((cat.group_cdf[main], cat.group_tracks[main]), (cat.group_cdf[second], cat.group_tracks[second]),
             (cat.global_cdf, None))

    chosen = np.empty(0, dtype=np.int64)
    for _round in range(6):
        need = length - len(chosen)
        if need <= 0:
            break
        m = need + 8
        src = np.searchsorted(source_cdf, rng.random(m) * source_cdf[-1], side="right")
        cand = np.empty(m, dtype=np.int64)
        for s, (cdf, ids) in enumerate(pools):
            mask = src == s
            if mask.any():
                cand[mask] = _sample(rng, cdf, ids, int(mask.sum()))
        deep = src == len(pools)
        if deep.any():
            cand[deep] = pools[0][1][rng.integers(0, len(pools[0][1]), size=int(deep.sum()))]
        # Runs: after a pick, the next tracks of its album, or other tracks by its artist.
        run_len = np.where(rng.random(m) < p_run, rng.geometric(_RUN_GEOM, size=m), 0)
        run_album = rng.random(m) < 0.6
        owner = np.repeat(np.arange(m), 1 + run_len)
        step = np.arange(len(owner)) - np.repeat(np.cumsum(1 + run_len) - 1 - run_len, 1 + run_len)
        t = cand[owner]
        album = cat.track_album[t]
        lo, hi = cat.album_track_start[album], cat.album_track_start[album + 1]
        in_album = lo + (t - lo + step) % (hi - lo)
        artist = cat.track_artist[t]
        lo, hi = cat.artist_track_start[artist], cat.artist_track_start[artist + 1]
        by_artist = lo + (rng.random(len(owner)) * (hi - lo)).astype(np.int64)
        seq = np.where(step == 0, t, np.where(run_album[owner], in_album, by_artist))
        chosen = _first_occurrences(np.concatenate([chosen, seq]))[:length]
    if len(chosen) < length:
        # Tiny catalogues can run out of distinct tracks in a group; top up uniformly.
        rest = np.setdiff1d(rng.permutation(cat.n_tracks)[: 4 * length], chosen)
        chosen = np.concatenate([chosen, rest[: length - len(chosen)]])
    return chosen


def _with_repeats(rng: np.random.Generator, ids: np.ndarray) -> np.ndarray:
    """Some curators add a track twice: about 1.4 % of entries and 38 % of playlists, as in the real sample."""
    n = len(ids)
    repeats = min(n - 1, int(rng.poisson(_REPEAT_RATE * n * rng.gamma(_REPEAT_SHAPE, 1.0 / _REPEAT_SHAPE))))
    if repeats <= 0:
        return ids
    kept = ids[: n - repeats]
    out = kept.tolist()
    for _ in range(repeats):
        # A copy of an earlier entry, somewhere after it.
        src = int(rng.integers(len(out)))
        out.insert(int(rng.integers(src + 1, len(out) + 1)), out[src])
    return np.asarray(out, dtype=np.int64)


def _length(rng: np.random.Generator) -> int:
    """Tracks in a playlist: a gamma law truncated to the MPD's 5..250 (fitted to the real sample's deciles)."""
    for _ in range(8):
        n = round(rng.gamma(_LEN_SHAPE, _LEN_SCALE))
        if _MIN_LEN <= n <= _MAX_LEN:
            return n
    return int(np.clip(n, _MIN_LEN, _MAX_LEN))


def _track_json(cat: _Catalogue, t: int) -> str:
    """A track's JSON object after its ``pos`` (``"artist_name": ... }``), rendered once and cached.

    Written by hand, not by ``json.dumps``: every name comes from the vocabularies above, which hold no
    character JSON would escape (checked at import by ``_check_vocabulary``).
    """
    cache = cat.name_cache
    text = cache.get(t)
    if text is None:
        if len(cache) >= _NAME_CACHE_MAX:
            cache.clear()
        b = int(cat.track_album[t])
        a = int(cat.track_artist[t])
        album = cache.get(-1 - b)  # album names are shared by their tracks: cached under negative keys
        if album is None:
            album = cache[-1 - b] = _album_name(cat, b)
        text = cache[t] = (
            f'"artist_name": "{cat.artist_names[a]}", "track_uri": "spotify:track:{cat.track_uris[t].decode()}", '
            f'"artist_uri": "spotify:artist:{cat.artist_uris[a].decode()}", "track_name": "{_track_name(cat, t)}", '
            f'"album_uri": "spotify:album:{cat.album_uris[b].decode()}", "duration_ms": {int(cat.track_duration[t])}, '
            f'"album_name": "{album}"}}'
        )
    return text


def _check_vocabulary() -> None:
    words = [*_TITLE_WORDS, *_FIRST, *_LAST, *_RAP_PREFIX, *_RAP_NAME, *_DJ_PREFIX, *_DJ_NAME, *_LATIN_FIRST,
             *_LATIN_LAST, *_BAND_ADJ, *_BAND_NOUN, *_JAZZ_SUFFIX]
    words += [w for g in _GROUPS for w in g.title_words]
    bad = [w for w in words if json.dumps(w) != f'"{w}"']
    if bad:
        raise ValueError(f"demo vocabulary words that JSON would escape: {bad}")


_check_vocabulary()


def _playlist(pid: int, seed: int, cat: _Catalogue, main: int, second: int) -> tuple[str, np.ndarray]:
    """One playlist as MPD JSON text (what ``json.dumps`` of its dict gives) and its track ids, in order."""
    rng = np.random.default_rng([seed, _STREAM_PLAYLIST, pid])
    length = _length(rng)
    ids = _with_repeats(rng, _playlist_tracks(rng, cat, length, main, second))

    # Recent playlists dominate the MPD; timestamps are whole days.
    age = rng.exponential(1.6 * 365 * _DAY)
    modified_at = int(max(_T_START, _T_END - age)) // _DAY * _DAY
    # Followers: ~75% only the owner, the rest a heavy (Pareto) tail.
    followers = 1 if rng.random() < 0.75 else 1 + int(rng.pareto(1.1) * 3)
    # Longer playlists took more editing sessions.
    edits = max(1, int(rng.poisson(2.0 + 0.12 * len(ids) * rng.lognormal(0.0, 0.5))))

    head: dict = {"name": _playlist_name(rng, main, second)}
    head["collaborative"] = "true" if rng.random() < 0.023 else "false"
    head["pid"] = pid
    head["modified_at"] = modified_at
    head["num_tracks"] = len(ids)
    head["num_albums"] = len(np.unique(cat.track_album[ids]))
    head["num_followers"] = followers
    tail: dict = {"num_edits": edits}
    tail["duration_ms"] = int(cat.track_duration[ids].sum())
    tail["num_artists"] = len(np.unique(cat.track_artist[ids]))
    if rng.random() < 0.1:
        words = _GROUPS[main].words
        w, v = (words[int(i)] for i in rng.choice(len(words), size=2, replace=False))
        tail["description"] = _DESC_TEMPLATES[int(rng.integers(len(_DESC_TEMPLATES)))].format(w=w, v=v)
    cache = cat.name_cache
    rendered = [cache.get(t) or _track_json(cat, t) for t in ids.tolist()]
    tracks = ", ".join(f'{{"pos": {pos}, {text}' for pos, text in enumerate(rendered))
    return f'{json.dumps(head)[:-1]}, "tracks": [{tracks}], {json.dumps(tail)[1:]}', ids


def _generated_on(seed: int) -> str:
    # Deterministic stand-in for the MPD's wall-clock stamp, in the same format.
    base = _dt.datetime(2017, 12, 3, 8, 41, 42, 57563)
    return str(base + _dt.timedelta(seconds=seed % (365 * _DAY)))


def write_demo_slices(
    out_dir: str | Path,
    *,
    playlists: int,
    seed: int = 0,
    slice_size: int = 1000,
    show_progress: bool = False,
    stats: dict[str, int] | None = None,
) -> list[Path]:
    """Write synthetic MPD slices ``mpd.slice.{start}-{start + slice_size - 1}.json`` to ``out_dir``.

    Playlists get pids ``0 .. playlists - 1``; the last slice may hold fewer than ``slice_size``
    playlists but keeps the full range in its name, as the MPD naming scheme implies. The same
    ``(playlists, seed)`` always gives byte-identical files. Only one slice is held in memory.

    Args:
        out_dir: Directory to write into (created if missing; existing slices are overwritten).
        playlists: Number of playlists, at least 1.
        seed: Non-negative seed; every URI, name and count derives from it.
        slice_size: Playlists per file, at least 1.
        show_progress: Show a tqdm progress bar over playlists.
        stats: If given, filled with ``files``, ``playlists``, ``tracks`` (playlist entries),
            ``distinct_tracks``, ``distinct_artists``, ``distinct_albums``, ``catalogue_tracks``,
            ``catalogue_artists``.

    Returns:
        The paths written, in pid order.
    """
    if playlists < 1:
        raise ValueError(f"--playlists must be at least 1, got {playlists}")
    if slice_size < 1:
        raise ValueError(f"--slice-size must be at least 1, got {slice_size}")
    if seed < 0:
        raise ValueError(f"--seed must be 0 or more, got {seed}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cat = _build_catalogue(playlists, seed)
    main, second = _playlist_groups(playlists, seed)
    used = np.zeros(cat.n_tracks, dtype=bool)
    entries = 0
    generated_on = _generated_on(seed)

    bar = None
    if show_progress:
        bar = tqdm(total=playlists, unit="playlist", desc="demo playlists")

    paths: list[Path] = []
    try:
        for start in range(0, playlists, slice_size):
            end = start + slice_size - 1
            stop = min(start + slice_size, playlists)
            batch = []
            for pid in range(start, stop):
                p, ids = _playlist(pid, seed, cat, int(main[pid]), int(second[pid]))
                batch.append(p)
                entries += len(ids)
                used[ids] = True
                if bar is not None:
                    bar.update(1)
            path = out / f"mpd.slice.{start}-{end}.json"
            info = {"generated_on": generated_on, "slice": f"{start}-{end}", "version": VERSION, "seed": seed}
            # Write-then-rename so an interrupted run never leaves a truncated slice behind. The playlists are
            # JSON text already (each track's object is rendered once): the same bytes json.dumps would give.
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(f'{{"info": {json.dumps(info)}, "playlists": [{", ".join(batch)}]}}')
            os.replace(tmp, path)
            paths.append(path)
    finally:
        if bar is not None:
            bar.close()

    if stats is not None:
        stats.update(
            files=len(paths),
            playlists=playlists,
            tracks=entries,
            distinct_tracks=int(used.sum()),
            distinct_artists=len(np.unique(cat.track_artist[used])),
            distinct_albums=len(np.unique(cat.track_album[used])),
            catalogue_tracks=cat.n_tracks,
            catalogue_artists=len(cat.artist_names),
        )
    return paths
