"""Listening triplets, parsed: the EchoNest Taste Profile and the HetRec 2011 Last.fm files.

Pure functions, no database access (the service that stores them is ``ingestion.listens``). Files are streamed
line by line (they can be GBs): each line is decoded on its own (UTF-8, falling back to ISO-8859-1), validated, and
turned into a document or a ``Problem`` naming the file, the line and the field. A HetRec file's header line is
checked first; a wrong header rejects the whole file.

Documents (``_id`` is deterministic, so re-ingesting converges):

* ``listens``: ``{_id: "user|item", user, item, kind, weight, source, run_id}``
* ``friendships``: ``{_id: "user|friend", user, friend, source, run_id}`` (directed, as listed)
* ``listen_items``: ``{_id: item, name, url, kind, source, run_id}`` (names from HetRec ``artists.dat``)

``source`` is ``"<format>:<file basename>"``, e.g. ``"hetrec:user_artists.dat"``; ``run_id`` is the run
that last wrote the row.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .mpd import Problem

FORMATS = ("tasteprofile", "hetrec")
HASH_CHUNK = 1 << 20
MAX_INT64 = (1 << 63) - 1
_SHOW = 40


# --- parsing (pure) ----------------------------------------------------------------------------------------------
class HeaderError(ValueError):
    """The file's header line is not the one its format requires: the whole file is rejected."""


@dataclass(frozen=True)
class Role:
    """What one kind of file holds: its header (None: no header line), target collection and parser."""

    name: str
    target: str  # "listens", "friendships" or "items"
    header: tuple[str, ...] | None
    parse: Callable[[str], dict[str, Any] | str]

    @property
    def header_line(self) -> str:
        return "\t".join(self.header or ())


def _show(value: str) -> str:
    return repr(value if len(value) <= _SHOW else value[:_SHOW] + "...")


_UINT = re.compile(r"[0-9]+")
_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_SPACE = re.compile(r"\s")


def _fields(text: str, n: int) -> list[str] | str:
    parts = text.split("\t")
    if len(parts) != n:
        return f"expected {n} tab-separated fields, got {len(parts)}"
    return parts


def _uint(name: str, value: str, *, positive: bool = False) -> int | str:
    kind = "a positive integer" if positive else "a non-negative integer"
    if not _UINT.fullmatch(value):
        return f"{name}: expected {kind}, got {_show(value)}"
    number = int(value)
    if positive and number == 0:
        return f"{name}: expected {kind}, got {_show(value)}"
    if number > MAX_INT64:
        return f"{name}: {_show(value)} is too large (more than 2**63 - 1)"
    return number


def parse_tasteprofile(text: str) -> dict[str, Any] | str:
    """``user<TAB>song<TAB>count`` -> a listen, or the reason the line is rejected."""
    parts = _fields(text, 3)
    if isinstance(parts, str):
        return parts
    user, song, count = parts
    if not _HEX40.fullmatch(user):
        return f"user: expected a 40-character hex id, got {_show(user)}"
    if not song:
        return "song: empty"
    if _SPACE.search(song):
        return f"song: expected an id without whitespace, got {_show(song)}"
    weight = _uint("count", count, positive=True)
    if isinstance(weight, str):
        return weight
    return listen_doc(f"tp:{user.lower()}", f"echonest:song:{song}", "song", weight)


def parse_user_artist(text: str) -> dict[str, Any] | str:
    """HetRec ``userID<TAB>artistID<TAB>weight`` -> a listen."""
    parts = _fields(text, 3)
    if isinstance(parts, str):
        return parts
    values = [_uint(name, value) for name, value in zip(("userID", "artistID", "weight"), parts, strict=True)]
    for value in values:
        if isinstance(value, str):
            return value
    user, artist, weight = values
    return listen_doc(f"lastfm:{user}", f"lastfm:artist:{artist}", "artist", weight)


def parse_user_friend(text: str) -> dict[str, Any] | str:
    """HetRec ``userID<TAB>friendID`` -> a declared (directed) friendship."""
    parts = _fields(text, 2)
    if isinstance(parts, str):
        return parts
    values = [_uint(name, value) for name, value in zip(("userID", "friendID"), parts, strict=True)]
    for value in values:
        if isinstance(value, str):
            return value
    user, friend = values
    if user == friend:
        return f"friendID: same as userID ({user})"
    return friendship_doc(f"lastfm:{user}", f"lastfm:{friend}")


def parse_artist(text: str) -> dict[str, Any] | str:
    """HetRec ``id<TAB>name<TAB>url<TAB>pictureURL`` -> an item name."""
    parts = _fields(text, 4)
    if isinstance(parts, str):
        return parts
    artist = _uint("id", parts[0])
    if isinstance(artist, str):
        return artist
    if not parts[1].strip():
        return "name: empty"
    return {"_id": f"lastfm:artist:{artist}", "name": parts[1], "url": parts[2], "kind": "artist"}


def listen_doc(user: str, item: str, kind: str, weight: int) -> dict[str, Any]:
    return {"_id": f"{user}|{item}", "user": user, "item": item, "kind": kind, "weight": weight}


def friendship_doc(user: str, friend: str) -> dict[str, Any]:
    return {"_id": f"{user}|{friend}", "user": user, "friend": friend}


ROLES = {
    "tasteprofile": Role("tasteprofile", "listens", None, parse_tasteprofile),
    "user_artists": Role("user_artists", "listens", ("userID", "artistID", "weight"), parse_user_artist),
    "user_friends": Role("user_friends", "friendships", ("userID", "friendID"), parse_user_friend),
    "artists": Role("artists", "items", ("id", "name", "url", "pictureURL"), parse_artist),
}
HETREC_FILES = {"user_artists.dat": "user_artists", "user_friends.dat": "user_friends", "artists.dat": "artists"}
HETREC_REQUIRED = ("user_artists.dat", "user_friends.dat")


@dataclass(frozen=True)
class TripletFile:
    """One file to ingest: ``name`` is what messages show, ``source`` what its stored rows carry."""

    path: Path
    fmt: str
    role: Role

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def source(self) -> str:
        return f"{self.fmt}:{self.path.name}"


def decode_line(raw: bytes) -> str:
    """One line without its line end (LF or CRLF), UTF-8 or else ISO-8859-1 (which decodes any byte)."""
    raw = raw.rstrip(b"\r\n")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for each line, numbered from 1, read lazily."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            yield number, decode_line(raw)


def first_line(path: Path) -> str | None:
    with open(path, "rb") as fh:
        raw = fh.readline()
    return decode_line(raw).lstrip("\ufeff") if raw else None


def sha256_file(path: Path, progress: Callable[[int], Any] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest()


def parse_file(path: Path, role: Role) -> Iterator[tuple[int, dict[str, Any]] | Problem]:
    """Stream ``(line number, document)`` for good lines and a ``Problem`` for each bad one.

    Raises ``HeaderError`` before yielding anything if the format has a header and the file's is wrong,
    and ``OSError`` if the file cannot be read. Empty lines are skipped.
    """
    lines = read_lines(path)
    if role.header is not None:
        first = next(lines, None)
        got = first[1].lstrip("\ufeff") if first else None
        if got != role.header_line:
            seen = "an empty file" if got is None else _show(got)
            raise HeaderError(f"wrong header: expected {role.header_line!r} (the HetRec {role.name}.dat header), "
                              f"got {seen}")
    for number, text in lines:
        if not text:
            continue
        result = role.parse(text)
        if isinstance(result, str):
            yield Problem(file=str(path), line=number, reason=result)
        else:
            yield number, result


def _hetrec_role(path: Path) -> Role | None:
    if path.name in HETREC_FILES:
        return ROLES[HETREC_FILES[path.name]]
    try:
        header = first_line(path)
    except OSError:
        return None
    return next((r for r in ROLES.values() if r.header is not None and r.header_line == header), None)


def expand_paths(paths: list[str | Path], fmt: str) -> Iterator[TripletFile | Problem]:
    """Each PATH as the files to read, or a ``Problem`` for a PATH that cannot be used.

    ``tasteprofile``: a file, or a folder (every ``*.txt`` in it). ``hetrec``: the dataset's folder
    (``user_artists.dat``, ``user_friends.dat``, and ``artists.dat`` if present) or one of those files.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            yield Problem(file=str(path), reason="no such file or folder")
        elif fmt == "tasteprofile":
            files = sorted(p for p in path.glob("*.txt") if p.is_file()) if path.is_dir() else [path]
            if not files:
                yield Problem(file=str(path), reason="no *.txt triplet files in this folder")
            for p in files:
                yield TripletFile(p, fmt, ROLES["tasteprofile"])
        elif path.is_dir():
            for name in HETREC_REQUIRED:
                if not (path / name).is_file():
                    yield Problem(file=str(path / name), reason="missing: a HetRec folder holds "
                                  f"{' and '.join(HETREC_REQUIRED)}")
            for name, role in HETREC_FILES.items():
                if (path / name).is_file():
                    yield TripletFile(path / name, fmt, ROLES[role])
        else:
            role = _hetrec_role(path)
            if role is None:
                yield Problem(file=str(path), reason="not a HetRec file: expected user_artists.dat, user_friends.dat "
                              "or artists.dat (or a file with one of their headers)")
            else:
                yield TripletFile(path, fmt, role)
