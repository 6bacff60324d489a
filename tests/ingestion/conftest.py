from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest

_B62 = string.digits + string.ascii_letters


def uri(kind: str, seed: int) -> str:
    rng = random.Random(f"{kind}{seed}")
    return f"spotify:{kind}:" + "".join(rng.choice(_B62) for _ in range(22))


def make_playlist(pid: int, track_ids: list[int], name: str | None = None, **extra) -> dict:
    tracks = [
        {"track_uri": uri("track", t), "track_name": f"Song {t}", "artist_name": f"Artist {t % 7}"}
        for t in track_ids
    ]
    return {"pid": pid, "name": name or f"list {pid}", "num_tracks": len(tracks), "tracks": tracks, **extra}


def write_slice(folder: Path, start: int, playlists: list, raw: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"mpd.slice.{start}-{start + 999}.json"
    path.write_text(raw if raw is not None else json.dumps({"info": {"slice": f"{start}-{start + 999}"},
                                                              "playlists": playlists}))
    return path


@pytest.fixture
def slice_writer(tmp_path):
    def _write(start: int, playlists: list, raw: str | None = None, folder: str = "mpd") -> Path:
        return write_slice(tmp_path / folder, start, playlists, raw)

    return _write
