"""Reading and validating MPD slice files. Pure functions: no database, no Django.

A *source* is one slice: a ``mpd.slice.*.json`` file, or such a member of the official
``spotify_million_playlist_dataset.zip`` read in place. Each source is read whole (memory is bounded
by one slice), hashed, decoded, and every playlist is validated on its own so one bad playlist
never stops its file.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ownership import owner_of_mpd_playlist

SLICE_GLOB = "mpd.slice.*.json"
_SLICE_RE = re.compile(r"(?:^|/)mpd\.slice\.(\d+)-(\d+)\.json$")
# Anchored with ``\Z``, not ``$``: ``$`` also matches before a final newline, so ``.match`` would accept
# "spotify:track:…\n" (the OpenAPI schema shows ``\Z`` as ``$``). Use ``fullmatch`` all the same.
URI_RE = {
    kind: re.compile(rf"^spotify:{kind}:[0-9A-Za-z]{{22}}\Z") for kind in ("track", "artist", "album")
}
MAX_INT64 = (1 << 63) - 1  # MongoDB's integers are signed 64-bit: a larger one cannot be stored at all
# Pids from here up belong to playlists created through the API (``ingestion.services.user_playlist_create``); an
# MPD file's pid must be below, so that it can never replace one of them.
API_PID_START = 1_000_000_000
_OPTIONAL_INTS = ("num_followers", "num_edits", "duration_ms", "num_artists", "num_albums", "num_tracks",
                  "modified_at")  # fmt: skip


@dataclass(frozen=True)
class Source:
    """One slice to read: ``name`` is what error messages show (``path`` or ``archive.zip!member``)."""

    name: str
    path: Path
    member: str | None = None

    def read(self) -> bytes:
        if self.member is None:
            return self.path.read_bytes()
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(self.member)


@dataclass(frozen=True)
class Problem:
    """Something rejected: where (file, pid or line) and why."""

    file: str
    reason: str
    pid: int | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.pid is not None:
            where += f": pid {self.pid}"
        if self.line is not None:
            where += f": line {self.line}"
        return f"{where}: {self.reason}"

    def to_doc(self) -> dict[str, Any]:
        # A pid too large for MongoDB is kept as text, so that the run that rejects it can still be recorded.
        pid = self.pid if self.pid is None or -MAX_INT64 - 1 <= self.pid <= MAX_INT64 else str(self.pid)
        return {"file": self.file, "pid": pid, "line": self.line, "reason": self.reason}


class SliceError(ValueError):
    """The whole file is unusable (unreadable, truncated, not an MPD slice)."""


def _slice_order(name: str) -> tuple[int, str]:
    match = _SLICE_RE.search(name)
    return (int(match.group(1)) if match else 1 << 62, name)


def iter_sources(paths: list[str | Path]) -> Iterator[Source | Problem]:
    """Expand each PATH (slice file, folder, or MPD zip) into sources, in pid order within each PATH.

    A PATH that does not exist or holds no slice yields a ``Problem`` instead, so the caller can
    report it and go on with the other paths.
    """
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            yield Problem(file=str(path), reason="no such file or folder")
        elif path.is_dir():
            found = sorted(path.rglob(SLICE_GLOB), key=lambda p: _slice_order(p.name))
            if not found:
                yield Problem(file=str(path), reason=f"no {SLICE_GLOB} files in this folder")
            for file in found:
                yield Source(name=str(file), path=file)
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                members = sorted(
                    (m for m in archive.namelist() if _SLICE_RE.search(m)), key=_slice_order
                )
            if not members:
                yield Problem(file=str(path), reason=f"no {SLICE_GLOB} members in this zip")
            for member in members:
                yield Source(name=f"{path}!{member}", path=path, member=member)
        else:
            yield Source(name=str(path), path=path)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_slice(data: bytes, *, name: str) -> list[Any]:
    """The raw ``playlists`` list of a slice, or ``SliceError`` naming the file and position."""
    try:
        doc = json.loads(data)
    except UnicodeDecodeError as exc:
        raise SliceError(f"{name}: not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        ends_early = exc.pos >= len(data.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
        truncated = " (the file ends early: truncated?)" if ends_early else ""
        raise SliceError(f"{name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{truncated}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("playlists"), list):
        raise SliceError(f'{name}: not an MPD slice (expected an object with a "playlists" list)')
    return doc["playlists"]


def normalize_name(name: str) -> str:
    """Lower-case, accent-free, single-spaced playlist name (used to match titles)."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text).split())


def artist_key(artist_uri: str | None, artist_name: str) -> str:
    """Artists are keyed by URI; the trimmed MPD sample has none, so fall back to the folded name."""
    return artist_uri or f"name:{artist_name.strip().lower()}"


class _Invalid(Exception):
    pass


def _require_str(obj: dict, key: str, where: str) -> str:
    if key not in obj or obj[key] is None:
        raise _Invalid(f"{where}{key}: required field missing")
    value = obj[key]
    if not isinstance(value, str):
        raise _Invalid(f"{where}{key}: expected a string, got {type(value).__name__}")
    return value


def _optional_int(obj: dict, key: str, where: str = "") -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"{where}{key}: expected an integer, got {type(value).__name__} {value!r:.40}")
    if value < 0:
        raise _Invalid(f"{where}{key}: must not be negative, got {value}")
    if value > MAX_INT64:
        raise _Invalid(f"{where}{key}: {value} is too large (more than 2**63 - 1)")
    return value


def _optional_uri(obj: dict, key: str, kind: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not URI_RE[kind].fullmatch(value):
        raise _Invalid(f"{where}{key}: malformed URI {value!r:.60} (expected spotify:{kind}: + 22 base62 characters)")
    return value


def _track(raw: Any, index: int) -> dict[str, Any]:
    where = f"tracks[{index}]."
    if not isinstance(raw, dict):
        raise _Invalid(f"tracks[{index}]: expected an object, got {type(raw).__name__}")
    uri = _require_str(raw, "track_uri", where)
    if not URI_RE["track"].fullmatch(uri):
        raise _Invalid(f"{where}track_uri: malformed URI {uri!r:.60} (expected spotify:track: + 22 base62 characters)")
    name = _require_str(raw, "track_name", where)
    artist_name = _require_str(raw, "artist_name", where)
    artist_uri = _optional_uri(raw, "artist_uri", "artist", where)
    track: dict[str, Any] = {
        "uri": uri,
        "name": name,
        "artist_name": artist_name,
        "artist_key": artist_key(artist_uri, artist_name),
    }
    if artist_uri:
        track["artist_uri"] = artist_uri
    album_uri = _optional_uri(raw, "album_uri", "album", where)
    if album_uri:
        track["album_uri"] = album_uri
    if raw.get("album_name") is not None:
        track["album_name"] = _require_str(raw, "album_name", where)
    duration = _optional_int(raw, "duration_ms", where)
    if duration is not None:
        track["duration_ms"] = duration
    return track


def content_hash(playlist: dict[str, Any]) -> str:
    """A stable fingerprint of what a playlist says, to tell unchanged from updated on re-ingestion."""
    body = {k: v for k, v in playlist.items() if k not in ("source", "content_hash")}
    return hashlib.sha1(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def validate_playlist(raw: Any, *, file: str, index: int) -> dict[str, Any] | Problem:
    """A normalised playlist document, or the ``Problem`` that rejects it (with file, pid and field)."""
    pid = raw.get("pid") if isinstance(raw, dict) else None
    pid_for_report = pid if isinstance(pid, int) and not isinstance(pid, bool) else None
    try:
        if not isinstance(raw, dict):
            raise _Invalid(f"playlists[{index}]: expected an object, got {type(raw).__name__}")
        if "pid" not in raw or raw["pid"] is None:
            raise _Invalid(f"playlists[{index}]: pid: required field missing")
        if pid_for_report is None:
            raise _Invalid(f"playlists[{index}]: pid: expected an integer, got {type(pid).__name__} {pid!r:.40}")
        if pid < 0:
            raise _Invalid(f"pid: must not be negative, got {pid}")
        if pid >= API_PID_START:
            raise _Invalid(f"pid: {pid} is not an MPD pid: pids from {API_PID_START:,} up are reserved for playlists "
                           f"created through the API (an MPD pid is 0 to {API_PID_START - 1:,})")
        name = _require_str(raw, "name", "")
        if "tracks" not in raw or raw["tracks"] is None:
            raise _Invalid("tracks: required field missing")
        if not isinstance(raw["tracks"], list):
            raise _Invalid(f"tracks: expected a list, got {type(raw['tracks']).__name__}")
        tracks = [_track(t, i) for i, t in enumerate(raw["tracks"])]
        doc: dict[str, Any] = {
            "_id": pid,
            "pid": pid,
            "name": name,
            "name_norm": normalize_name(name),
            "owner": owner_of_mpd_playlist(pid),
            "origin": "mpd",
            "tracks": tracks,
            "num_tracks": len(tracks),
        }
        for key in _OPTIONAL_INTS:
            value = _optional_int(raw, key)
            if value is not None and key != "num_tracks":
                doc[key] = value
        declared = _optional_int(raw, "num_tracks")
        if declared is not None and declared != len(tracks):
            raise _Invalid(f"num_tracks: says {declared} but the playlist lists {len(tracks)} tracks")
        if raw.get("description") is not None:
            doc["description"] = _require_str(raw, "description", "")
        collaborative = raw.get("collaborative")
        if collaborative is not None:
            if isinstance(collaborative, bool):
                doc["collaborative"] = collaborative
            elif collaborative in ("true", "false"):
                doc["collaborative"] = collaborative == "true"
            else:
                raise _Invalid(f'collaborative: expected "true", "false" or a boolean, got {collaborative!r:.20}')
    except _Invalid as exc:
        return Problem(file=file, pid=pid_for_report, reason=str(exc))
    doc["content_hash"] = content_hash(doc)
    return doc
