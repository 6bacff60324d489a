#!/usr/bin/env python
"""One model version on disk and through the store: the current layout against the previous one, in one run.

    .venv/bin/python bench/artifacts.py [--data ../shared/data/mpd-real] [--json PATH]

Trains the served blend once on the MPD files (read without a database, as ``bench/train.py`` does) with the
served factor sizes (ALS 128, BPR 64) but few iterations: sizes do not depend on how long it trained. Then:

1. ``format 1``: the layout before model versions went to GridFS, written here as that code wrote it (every string
   array fixed-width, the training matrix in ``data.npz``, in item-kNN's ``.npz`` and again as ``playlists.npz``,
   the title index whole);
2. ``format 2``: ``RankerModel.save`` (the matrix once, strings as UTF-8, the title index rebuilt at load).

For each: bytes per file, the ratio to (training matrix + factors), save and load seconds. For format 2 also the
upload to an embedded SecantusDB (``ranker.training.artifacts.upload``), the full check of the stored bytes
that promotion does (``verify_stored``) and the fetch into an empty ``MODEL_DIR`` (another machine). Table to
stdout, JSON to ``var/bench/artifacts.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mpd-real"
DEFAULT_JSON = REPO / "var" / "bench" / "artifacts.json"
PARAMS = {"als": {"iterations": 3}, "bpr": {"epochs": 5, "validation_users": 500, "eval_every": 5}}


def save_format_1(model: Any, root: Path) -> Path:
    """What ``RankerModel.save`` wrote before this change (kept here only as the peer)."""
    import numpy as np

    path = root / "ranker" / model.version
    path.mkdir(parents=True)
    m, p = model.user_items, model.playlist_items
    np.savez(path / "data.npz", user_ids=model.user_ids, item_ids=model.item_ids, indptr=m.indptr,
             indices=m.indices, shape=np.asarray(m.shape), item_artist=model.item_artist,
             item_artist_name=model.item_artist_name, popularity=model.popularity)
    np.savez(path / "playlists.npz", ids=model.playlist_ids, owners=model.playlist_owners, indptr=p.indptr,
             indices=p.indices, shape=np.asarray(p.shape))
    np.savez(path / "titles.npz", **model.titles.get_state())
    for n, (part, _) in enumerate(model.recommender.components):
        part.save(path / f"recommender.{n}.{part.name}")  # the base save: item-kNN writes its matrix
    (path / "recommender.json").write_text(json.dumps({"class": "blend", "components": [
        {"file": f"recommender.{n}.{part.name}", "weight": w}
        for n, (part, w) in enumerate(model.recommender.components)]}))
    (path / "meta.json").write_text(json.dumps(model.meta | {"version": model.version}))
    return path


def sizes(path: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted(path.iterdir()) if f.is_file()}


def timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - started, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"bench/artifacts.py: no MPD data at {args.data}\n  the real sample lives in ../shared/data/mpd-real "
                 "beside the repository; pass --data PATH")
    _common.setup_django("recsys_site.settings.test")
    import numpy as np
    from django.conf import settings
    from train import load_playlists  # bench/train.py: the MPD files into Playlists, no database

    from ranker.recommenders.title import TitleIndex
    from ranker.training import artifacts
    from ranker.training.artifacts import RankerModel, new_version
    from ranker.training.data import Interactions
    from ranker.training.served import make_served
    from recsys_site.embedded import free_port, mongo_server
    from recsys_site.mongo import close_clients

    playlists, _ = load_playlists(args.data)
    interactions = Interactions.build(playlists=playlists)
    recommender = make_served(PARAMS)
    _, fit_seconds = timed(lambda: recommender.fit(interactions.positives))
    playlist_items = playlists.matrix()
    model = RankerModel(
        version=new_version(), user_ids=interactions.user_ids, item_ids=interactions.item_ids,
        user_items=interactions.positives, item_artist=playlists.item_artist,
        item_artist_name=playlists.item_artist_name, recommender=recommender,
        titles=TitleIndex().fit(playlists.names, playlist_items),
        popularity=np.asarray(interactions.positives.sum(axis=0)).ravel().astype(np.float32),
        playlist_ids=playlists.pids, playlist_items=playlist_items,
        playlist_owners=np.asarray(playlists.owners, dtype=str), playlist_names=playlists.names,
        meta={"kind": "ranker", "params": PARAMS})
    m = model.user_items
    matrix = m.indptr.nbytes + m.indices.nbytes
    factors = sum(a.nbytes for part, _ in recommender.components if part.name in ("als", "bpr")
                  for a in part.get_state().values())
    out: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "machine": _common.machine_facts("pymongo"),
                           "data": {"playlists": len(playlists), "users": m.shape[0], "tracks": m.shape[1],
                                    "positives": int(m.nnz), "fit_seconds": fit_seconds},
                           "matrix_bytes": matrix, "factor_bytes": factors, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = mongo_server(tmp / "var", free_port())
        settings.MONGO_URI, settings.MONGO_DB = server.start(), "bench_artifacts"
        close_clients()
        try:
            old_path, old_save = timed(lambda: save_format_1(model, tmp / "old"))
            _, old_load = timed(lambda: RankerModel.load(model.version, tmp / "old"))
            new_path, new_save = timed(lambda: model.save(tmp / "a"))
            _, new_load = timed(lambda: RankerModel.load(model.version, tmp / "a"))
            _, upload = timed(lambda: artifacts.upload(model.version, tmp / "a"))
            _, verify = timed(lambda: artifacts.verify_stored(model.version))
            _, fetch = timed(lambda: artifacts.fetch(model.version, tmp / "b"))
            for name, path, save, load in (("format 1", old_path, old_save, old_load),
                                           ("format 2", new_path, new_save, new_load)):
                files = sizes(path)
                out["formats"][name] = {"files": files, "bytes": sum(files.values()),
                                        "ratio": round(sum(files.values()) / (matrix + factors), 3),
                                        "save_seconds": save, "load_seconds": load}
            out["formats"]["format 2"] |= {"upload_seconds": upload, "verify_seconds": verify,
                                           "fetch_seconds": fetch}
        finally:
            close_clients()
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    _common.write_json(args.json, out)
    d = out["data"]
    print(f"{d['playlists']:,} playlists, {d['users']:,} users × {d['tracks']:,} tracks, {d['positives']:,} "
          f"positives; training matrix {matrix / 1e6:.1f} MB, factors {factors / 1e6:.1f} MB")
    old, new = out["formats"]["format 1"], out["formats"]["format 2"]
    names = sorted(set(old["files"]) | set(new["files"]))
    print("\n| file | format 1 MB | format 2 MB |\n| --- | ---: | ---: |")
    for name in names:
        cells = [f"{f['files'][name] / 1e6:.2f}" if name in f["files"] else "—" for f in (old, new)]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    print(f"| **total** | **{old['bytes'] / 1e6:.1f}** | **{new['bytes'] / 1e6:.1f}** |")
    print(f"| ÷ (matrix + factors) | {old['ratio']:.2f} | {new['ratio']:.2f} |")
    print(f"| save s | {old['save_seconds']} | {new['save_seconds']} |")
    print(f"| load s (local) | {old['load_seconds']} | {new['load_seconds']} |")
    print(f"\nformat 2 through the store (SecantusDB): upload {new['upload_seconds']} s, verify every stored byte "
          f"{new['verify_seconds']} s, fetch into an empty MODEL_DIR {new['fetch_seconds']} s")
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
