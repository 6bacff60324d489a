"""Model versions in the store (GridFS bucket ``model_files``) with each machine's ``MODEL_DIR`` as a cache.

"Machine A" and "machine B" are two ``MODEL_DIR``s over the same real SecantusDB store: what A saves and uploads,
B loads into its empty directory; a partial or corrupted upload is never registered or promoted; a web process
that cannot load the live version answers 503 with Retry-After; a version holds its training matrix once.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import FAST

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def machine_a(demo_store, tmp_path_factory):
    """A version trained, saved and uploaded on machine A (its own MODEL_DIR), registered, not promoted."""
    from django.conf import settings

    from ranker.training.services import ranker_train

    previous = settings.MODEL_DIR
    settings.MODEL_DIR = tmp_path_factory.mktemp("machine-a")
    model = ranker_train(params=FAST)
    yield {"model": model, "dir": settings.MODEL_DIR}
    settings.MODEL_DIR = previous


@pytest.fixture
def machine_b(settings, tmp_path):
    """Another machine: an empty MODEL_DIR over the same store."""
    settings.MODEL_DIR = tmp_path / "machine-b"
    return settings.MODEL_DIR


def _copy(model, machine_dir):
    """The trained model saved (and uploaded) again under a new version id, on the machine of ``machine_dir``."""
    from ranker.training.artifacts import new_version, upload

    copy = dataclasses.replace(model, version=new_version(), _user_index=None, _item_index=None, _space=None,
                               _playlist_row=None, _owner_rows=None)
    copy.save(machine_dir)
    upload(copy.version, machine_dir)
    return copy


def _dir_bytes(path):
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _same_model(a, b):
    for name in ("user_ids", "item_ids", "item_artist", "item_artist_name", "popularity", "playlist_ids",
                 "playlist_owners"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.user_items != b.user_items).nnz == 0
    assert (a.playlist_items != b.playlist_items).nnz == 0 and a.playlist_items.shape == b.playlist_items.shape
    assert a.titles.names == b.titles.names and (a.titles.word_items != b.titles.word_items).nnz == 0
    users = np.arange(min(40, len(a.user_ids)))
    ids_a, scores_a = a.recommender.recommend(users, a.user_items[users], k=20)
    ids_b, scores_b = b.recommender.recommend(users, b.user_items[users], k=20)
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_allclose(scores_a, scores_b, rtol=1e-6)


def _stored_files(db, version):
    docs = db["model_files.files"].find({"metadata.version": version})
    return {doc["filename"].split("/", 1)[1]: doc for doc in docs}


def test_a_version_saved_on_machine_a_loads_on_machine_b(machine_a, machine_b):
    from ranker.training.artifacts import RankerModel

    model = machine_a["model"]
    assert not (machine_b / "ranker" / model.version).exists()
    loaded = RankerModel.load(model.version)
    _same_model(model, loaded)
    fetched = machine_b / "ranker" / model.version
    local = machine_a["dir"] / "ranker" / model.version
    assert sorted(p.name for p in fetched.iterdir()) == sorted(p.name for p in local.iterdir())
    assert all((fetched / p.name).read_bytes() == p.read_bytes() for p in local.iterdir())
    assert not [p for p in fetched.parent.iterdir() if p.name.startswith(".tmp-")]


def test_promotion_on_a_fresh_machine_serves_the_stored_version(machine_a, machine_b, store_db):
    from ranker.training.selectors import live_model, live_model_clear, live_version, model_get
    from ranker.training.services import model_promote, model_register

    copy = _copy(machine_a["model"], machine_a["dir"])
    model_register(model=copy, path="elsewhere")
    assert model_get(version=copy.version)["files"]["count"] == len(
        json.loads((machine_a["dir"] / "ranker" / copy.version / "manifest.json").read_text())["files"])
    model_promote(version=copy.version, force=True)  # on machine B: its MODEL_DIR is empty
    assert live_version() == copy.version
    live_model_clear()
    _same_model(copy, live_model())
    assert (machine_b / "ranker" / copy.version / "meta.json").exists()


def test_an_upload_cut_short_is_neither_registered_nor_promoted(machine_a, machine_b, store_db, settings):
    from ranker.training.artifacts import ModelUnavailable, RankerModel, check_uploaded
    from ranker.training.selectors import live_version
    from ranker.training.services import model_files_cleanup, model_promote, model_register

    copy = _copy(machine_a["model"], machine_a["dir"])
    files = _stored_files(store_db, copy.version)
    # What an upload killed before its last file leaves: every file but the manifest.
    from gridfs import GridFSBucket

    GridFSBucket(store_db, bucket_name="model_files").delete(files["manifest.json"]["_id"])
    with pytest.raises(ModelUnavailable, match="not in the store whole"):
        check_uploaded(copy.version)
    with pytest.raises(ModelUnavailable, match="not in the store whole"):
        model_register(model=copy, path="x")
    assert store_db["models"].find_one({"_id": copy.version}) is None
    # Even registered behind the service's back, it cannot go live, forced or not, nor load on machine B.
    store_db["models"].insert_one({"_id": copy.version, "kind": "ranker", "status": "candidate",
                                   "metrics": {"val_hit_rate_50": 1.0}})
    before = live_version()
    with pytest.raises(ModelUnavailable):
        model_promote(version=copy.version, force=True)
    assert live_version() == before
    with pytest.raises(ModelUnavailable):
        RankerModel.load(copy.version)
    assert not (machine_b / "ranker" / copy.version).exists()
    # The cleanup leaves a young partial upload alone (it may still be going), and removes it once a day old.
    settings.MODEL_DIR = machine_a["dir"]
    model_files_cleanup(keep={copy.version})
    assert _stored_files(store_db, copy.version)
    from datetime import UTC, datetime, timedelta

    store_db["model_files.files"].update_many({"metadata.version": copy.version},
                                              {"$set": {"uploadDate": datetime.now(UTC) - timedelta(days=2)}})
    removed = model_files_cleanup(keep={copy.version})  # kept as a version, yet a partial upload goes
    assert f"{copy.version} (partial upload)" in removed
    assert not _stored_files(store_db, copy.version)
    assert store_db["model_files.chunks"].count_documents({"files_id": files["data.npz"]["_id"]}) == 0


def test_a_missing_file_keeps_a_version_from_registration(machine_a, store_db):
    from gridfs import GridFSBucket

    from ranker.training.artifacts import ModelUnavailable
    from ranker.training.services import model_register

    copy = _copy(machine_a["model"], machine_a["dir"])
    GridFSBucket(store_db, bucket_name="model_files").delete(_stored_files(store_db, copy.version)["data.npz"]["_id"])
    with pytest.raises(ModelUnavailable, match="data.npz is missing from the store"):
        model_register(model=copy, path="x")


def test_a_corrupted_upload_is_never_promoted(machine_a, machine_b, store_db):
    from ranker.training.artifacts import ModelUnavailable, RankerModel
    from ranker.training.selectors import live_version
    from ranker.training.services import model_promote, model_register

    copy = _copy(machine_a["model"], machine_a["dir"])
    model_register(model=copy, path="x")
    data = _stored_files(store_db, copy.version)["data.npz"]
    chunk = store_db["model_files.chunks"].find_one({"files_id": data["_id"], "n": 0})
    flipped = bytes(b ^ 0xFF for b in chunk["data"][:64]) + chunk["data"][64:]  # same length: only a hash can tell
    store_db["model_files.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": flipped}})
    before = live_version()
    with pytest.raises(ModelUnavailable, match="data.npz in the store does not match its manifest"):
        model_promote(version=copy.version, force=True)
    assert live_version() == before and store_db["models"].find_one({"_id": copy.version})["status"] == "candidate"
    with pytest.raises(ModelUnavailable, match="does not match"):
        RankerModel.load(copy.version)  # machine B: nothing half-fetched is left as a version
    assert not (machine_b / "ranker" / copy.version).exists()
    assert not [p for p in (machine_b / "ranker").iterdir() if p.name.startswith(".tmp-")]


def test_an_unloadable_live_model_answers_503_with_retry_after(machine_a, machine_b, store_db, settings):
    from rest_framework.test import APIClient

    from ranker.training.selectors import live_model_clear
    from ranker.training.services import model_promote, model_register

    copy = _copy(machine_a["model"], machine_a["dir"])
    model_register(model=copy, path="x")
    settings.MODEL_DIR = machine_a["dir"]
    model_promote(version=copy.version, force=True)  # on machine A, whole and checked
    settings.MODEL_DIR = machine_b
    seeds = copy.item_ids[copy.user_items[0].indices[:3]].tolist()
    body = {"name": "road trip", "seed_tracks": seeds, "k": 10}
    settings.MODEL_POLL_SECONDS = 0
    # Then its stored files are lost, and a web process on machine B (empty cache) has to load it.
    store_db["model_files.chunks"].delete_many(
        {"files_id": {"$in": [d["_id"] for d in _stored_files(store_db, copy.version).values()]}})
    live_model_clear()
    api = APIClient()
    for _ in range(2):  # the first load fails, and so does the retry after the poll interval
        response = api.post("/api/v1/recommendations/continuation", body, format="json")
        assert response.status_code == 503, response.content
        assert response["Retry-After"].isdigit() and int(response["Retry-After"]) > 0
        assert response.json()["code"] == "model_unavailable" and response.json()["message"]
    # The version's files come back (machine A still has them): the next request is served.
    from ranker.training.artifacts import delete_stored, upload

    delete_stored(copy.version)
    upload(copy.version, machine_a["dir"])
    response = api.post("/api/v1/recommendations/continuation", body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["model_version"] == copy.version and len(response.json()["tracks"]) == 10
    live_model_clear()


def test_a_version_stores_its_training_matrix_once(machine_a):
    """On disk: ≤ 1.2 × (the training matrix + the factors), measured; the matrix is in data.npz alone. The text model
    (text.npz, ADR 0017) is counted apart: no larger than its own arrays, so it holds no copy of the matrix."""
    model = machine_a["model"]
    path = machine_a["dir"] / "ranker" / model.version
    matrix = model.user_items.indptr.nbytes + model.user_items.indices.nbytes
    factors = sum(array.nbytes for part, _ in model.recommender.components if part.name in ("als", "bpr")
                  for array in part.get_state().values())
    text = (path / "text.npz").stat().st_size
    assert text <= sum(a.nbytes for a in model.text.get_state().values())
    total = _dir_bytes(path) - text
    assert total <= 1.2 * (matrix + factors), (total, matrix, factors)
    knn = json.loads((path / "recommender.0.json").read_text())
    assert knn["class"] == "itemknn" and knn["training_matrix"] and not (path / "recommender.0.npz").exists()
    with np.load(path / "playlists.npz") as p:  # every demo playlist is its pseudo-user's row
        assert len(p["own_indices"]) == 0 and (p["user_row"] >= 0).all()


def _tiny_model(version="v-test"):
    """Owners with two playlists, an unknown owner and a user with no playlist; non-ASCII and empty strings."""
    from ranker.recommenders import Blend, ItemKNN
    from ranker.recommenders.title import TitleIndex
    from ranker.training.artifacts import RankerModel

    user_ids = np.asarray(["mpd:1", "anna", "björk-fan", "mpd:4"], dtype=str)
    item_ids = np.asarray([f"spotify:track:{i:022d}" for i in range(6)], dtype=str)
    user_items = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [0, 1, 1, 1, 0, 1], [0, 0, 0, 0, 1, 1],
                                         [1, 0, 0, 1, 0, 0]], dtype=np.float32))
    names = ["chill", "日本 mix", "", "road trip", "chill"]
    playlist_items = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 0, 1],
                                             [1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=np.float32))
    return RankerModel(
        version=version, user_ids=user_ids, item_ids=item_ids, user_items=user_items,
        item_artist=np.asarray(["name:beyoncé", "", "name:日本", "a", "b", "c"], dtype=str),
        item_artist_name=np.asarray(["Beyoncé", "", "日本のバンド", "A", "B", "Sigur Rós"], dtype=str),
        recommender=Blend(components=[(ItemKNN().fit(user_items), 1.0)]),
        titles=TitleIndex().fit(names, playlist_items), popularity=np.asarray(user_items.sum(axis=0)).ravel(),
        playlist_ids=np.asarray([1, 2, 3, 4, 5]), playlist_items=playlist_items,
        playlist_owners=np.asarray(["mpd:1", "anna", "anna", "mpd:4", "nobody"], dtype=str), playlist_names=names,
        meta={"metrics": {"val_hit_rate_50": 0.5}})


def test_playlists_that_are_not_their_owners_row_and_any_strings_round_trip(tmp_path):
    from ranker.training.artifacts import RankerModel

    model = _tiny_model()
    path = model.save(tmp_path)
    loaded = RankerModel.load("v-test", tmp_path)
    _same_model(model, loaded)
    with np.load(path / "playlists.npz") as p:
        np.testing.assert_array_equal(p["user_row"], [0, -1, -1, 3, -1])  # anna's row is neither playlist
    assert loaded.playlist_names.tolist() == model.playlist_names


def test_an_upload_that_fails_half_way_leaves_no_registrable_version(store, settings, tmp_path):
    """A real upload that breaks after some files (one is gone from the disk): no manifest, no registration."""
    from ranker.training.artifacts import ModelUnavailable, upload
    from ranker.training.services import model_register

    settings.MODEL_DIR = tmp_path
    model = _tiny_model("20260101T000000Z-halfup")
    path = model.save()
    (path / "recommender.json").unlink()  # sorted after data.npz, manifest order: the upload dies midway
    with pytest.raises(FileNotFoundError):
        upload(model.version)
    stored = _stored_files(store, model.version)
    assert "data.npz" in stored and "manifest.json" not in stored
    with pytest.raises(ModelUnavailable, match="not in the store whole"):
        model_register(model=model, path=str(path))


def test_two_processes_fetching_at_once_both_get_the_whole_version(store, settings, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from ranker.training.artifacts import RankerModel, fetch, upload

    model = _tiny_model("20260101T000000Z-racing")
    model.save(tmp_path / "a")
    upload(model.version, tmp_path / "a")
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: fetch(model.version, tmp_path / "b"), range(4)))
    assert len(set(paths)) == 1
    assert sorted(p.name for p in (tmp_path / "b" / "ranker").iterdir()) == [model.version]  # no .tmp-* left
    _same_model(model, RankerModel.load(model.version, tmp_path / "b"))


def test_cleanup_keeps_the_live_the_previous_the_pinned_and_the_young_versions(store, settings, tmp_path):
    from datetime import timedelta

    from ranker.training.artifacts import stored_versions, upload
    from ranker.training.selectors import live_model_clear, model_get
    from ranker.training.services import model_files_cleanup, model_promote, model_register

    settings.MODEL_DIR = tmp_path
    versions = [f"2026010{i}T000000Z-aaaaaa" for i in range(5)]
    for version in versions:
        model = _tiny_model(version)
        model.save()
        upload(version)
        model_register(model=model, path="x")
    (tmp_path / "ranker" / "not-a-version").mkdir()  # a stray directory in the cache: judged by its age
    model_promote(version=versions[1], force=True)
    model_promote(version=versions[0], force=True)  # live: versions[0], the rollback: versions[1]
    live_model_clear()
    assert model_files_cleanup(keep={versions[2]}) == []  # every version was registered seconds ago
    removed = model_files_cleanup(keep={versions[2]}, min_age=timedelta(0))
    assert sorted(removed) == sorted([versions[3], versions[4], "not-a-version"])
    assert stored_versions() == set(versions[:3])
    assert sorted(p.name for p in (tmp_path / "ranker").iterdir()) == versions[:3]
    assert [model_get(version=v)["status"] for v in versions] == ["live", "retired", "candidate", "deleted", "deleted"]


def test_a_version_from_before_the_store_still_loads(tmp_path):
    """Format 1 (fixed-width strings, the matrix in item-kNN and playlists.npz, titles.npz) is read as before."""
    from ranker.recommenders import Blend, ItemKNN
    from ranker.recommenders.title import TitleIndex
    from ranker.training.artifacts import RankerModel

    user_items = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))
    names = ["a b", "b"]
    path = tmp_path / "ranker" / "old"
    path.mkdir(parents=True)
    np.savez(path / "data.npz", user_ids=np.asarray(["mpd:1", "mpd:2"]), item_ids=np.asarray(["x", "y", "z"]),
             indptr=user_items.indptr, indices=user_items.indices, shape=np.asarray(user_items.shape),
             item_artist=np.asarray(["p", "q", "r"]), item_artist_name=np.asarray(["P", "Q", "R"]),
             popularity=np.asarray([1, 2, 1], dtype=np.float32))
    np.savez(path / "playlists.npz", ids=np.asarray([1, 2]), owners=np.asarray(["mpd:1", "mpd:2"]),
             indptr=user_items.indptr, indices=user_items.indices, shape=np.asarray(user_items.shape))
    np.savez(path / "titles.npz", **TitleIndex().fit(names, user_items).get_state())
    Blend(components=[(ItemKNN().fit(user_items), 1.0)]).save(path / "recommender")
    (path / "meta.json").write_text("{}")
    loaded = RankerModel.load("old", tmp_path)
    assert loaded.playlist_owners.tolist() == ["mpd:1", "mpd:2"] and loaded.titles.names == {"a b": 0, "b": 1}
    assert (loaded.playlist_items != user_items).nnz == 0
    assert loaded.recommender.recommend(0, user_items, k=1)[0].tolist() == [2]


@pytest.fixture
def store_db(demo_store):
    return demo_store


def test_item_knn_saved_without_its_matrix_says_what_it_needs(tmp_path):
    from ranker.recommenders import ItemKNN

    matrix = _tiny_model().user_items
    ItemKNN().fit(matrix).save(tmp_path / "knn", training_matrix=matrix)
    assert not (tmp_path / "knn.npz").exists()
    with pytest.raises(ValueError, match=r"knn\.json: itemknn was saved without its training matrix"):
        ItemKNN.load(tmp_path / "knn")
    with pytest.raises(ValueError, match=r"knn\.json: itemknn was fitted on a \(4, 6\) matrix"):
        ItemKNN.load(tmp_path / "knn", training_matrix=matrix[:2])
    other = sp.csr_matrix(np.eye(4, 6, dtype=np.float32))
    ItemKNN().fit(other).save(tmp_path / "alone", training_matrix=matrix)  # not the caller's matrix: saved whole
    assert (tmp_path / "alone.npz").exists()
    assert (ItemKNN.load(tmp_path / "alone").matrix_ != other).nnz == 0
