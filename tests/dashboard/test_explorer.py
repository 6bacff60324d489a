"""The Recommendations explorer against the real servers and a trained model: what it shows is what the API answers
(playlist picks with their explanations, track picks, continuation with unknown seeds reported)."""

from __future__ import annotations

import pytest

from dashboard.components import MAIN_CHART, _fmt
from dashboard.pages import explorer as page
from tests.conftest import app_client
from tests.dashboard.layout import find, rows_of, text_of

pytestmark = pytest.mark.django_db

BOGUS = "spotify:track:" + "Z" * 22
PROVENANCE = ("model_version", "variant", "experiment", "source")


def forget(user: str) -> None:
    """Drop the user's cached picks, so the next caller computes them again instead of reading the other's."""
    from ranker.picks import cache

    cache.forget_user(user)
    cache.clear_local()


@pytest.fixture(autouse=True)
def rerank_experiment(settings):
    """An experiment whose variant re-weights playlist picks (the default experiment, ``playlist_ranker``, needs a
    trained playlist ranker to rank otherwise)."""
    settings.EXPERIMENTS = {"playlist_rerank": {"applies_to": ["playlists"], "variants": {
        "control": {"weight": 0.5}, "discovery": {"weight": 0.5, "playlist_weights": {"discovery": 0.6,
                                                                                      "familiarity": 0.1}}}}}


@pytest.fixture
def api():
    """A first-party app's client: it reads every user's picks, as the dashboard's explorer shows them."""
    return app_client("picks:read")


@pytest.fixture
def discovery_user(live) -> tuple[str, list[str]]:
    """A user with ten or more tracks in the A/B variant that re-weights playlist picks (so a page that skipped the
    serving path and called the recommender with default weights would show other picks)."""
    from ranker.experiments.assign import assign

    sizes = live.user_items.getnnz(axis=1)
    for row in (sizes >= 10).nonzero()[0]:
        user = str(live.user_ids[row])
        if assign(user=user, experiment="playlist_rerank") == "discovery":
            return user, live.item_ids[live.user_items[row].indices].tolist()
    raise AssertionError("no discovery user")


def test_user_picks_are_what_the_api_returns(api, live, discovery_user):
    user, _ = discovery_user
    forget(user)
    results, figure = page.user_view(user, 6)
    forget(user)
    playlists = api.get(f"/api/v1/users/{user}/playlists/recommended", {"k": 6}).json()
    tracks = api.get(f"/api/v1/users/{user}/tracks/recommended", {"k": 6}).json()
    assert playlists["variant"] == "discovery" and len(playlists["playlists"]) == 6 and len(tracks["tracks"]) == 6
    shown = rows_of(find(results, "explorer-playlists"))
    assert [r["pid"] for r in shown] == [_fmt(p["pid"]) for p in playlists["playlists"]]
    assert [r["score"] for r in shown] == [_fmt(p["score"]) for p in playlists["playlists"]]
    assert [r["buddy"] for r in shown] == [p["why"].get("buddy") for p in playlists["playlists"]]
    assert [r["shared_artists"] for r in shown] == [_fmt(p["why"].get("shared_artists") or [])
                                                    for p in playlists["playlists"]]
    assert all(r["why"] for r in shown) and any(p["why"].get("buddy") for p in playlists["playlists"])
    shown_tracks = rows_of(find(results, "explorer-tracks"))
    assert [r["uri"] for r in shown_tracks] == [t["uri"] for t in tracks["tracks"]]
    assert [r["score"] for r in shown_tracks] == [_fmt(t["score"]) for t in tracks["tracks"]]
    info = text_of(find(results, "explorer-playlists-info"))
    assert "variant discovery" in info and playlists["model_version"] in info
    # The main chart: one bar per playlist pick, its score, coloured by where it comes from.
    bars = {pid: x for t in figure.data for pid, x in zip(t.customdata, t.x, strict=True)}
    assert bars == {p["pid"]: p["score"] for p in playlists["playlists"]}
    assert {t.name for t in figure.data} <= set(page.ORIGIN_COLOURS)
    # The raw answers too, field by field (rec_id is new for every list served).
    forget(user)
    mine_playlists, mine_tracks = page.user_picks(user, 6)
    for mine, theirs, key in ((mine_playlists, playlists, "playlists"), (mine_tracks, tracks, "tracks")):
        assert mine[key] == theirs[key]
        assert {f: mine.get(f) for f in PROVENANCE} == {f: theirs.get(f) for f in PROVENANCE}


def test_layout_with_a_user_and_the_bound_callback(live, discovery_user):
    user, _ = discovery_user
    content = page.layout(user=user)
    chart = find(content, "explorer-chart")
    assert chart.className == MAIN_CHART and len(chart.figure.data) >= 1
    assert find(content, "explorer-user").value == user and find(content, "explorer-playlists") is not None
    results, figure = page.explore("explorer-user", f" {user} ", "", "", "3")
    assert len(rows_of(find(results, "explorer-playlists"))) == 3
    assert len(rows_of(find(results, "explorer-tracks"))) == 3
    assert sum(len(t.x) for t in figure.data) == 3
    assert page._k("nonsense") == page.DEFAULT_K and page._k(10_000) == page.MAX_K
    empty = page.layout()
    assert "Pick a user" in text_of(find(empty, "explorer-results")) and find(empty, "explorer-chart") is not None


def test_unknown_user_gets_a_clear_message(live):
    results, figure = page.explore("explorer-user", "nobody:1", None, None, 10)
    assert "Unknown user 'nobody:1'" in text_of(results) and find(results, "explorer-playlists") is None
    assert "Unknown user" in figure.layout.annotations[0].text


def test_continuation_reports_unknown_and_malformed_seeds_and_equals_the_api(api, live, discovery_user):
    _, tracks = discovery_user
    seeds = "\n".join([*tracks[:3], BOGUS, "", "not-a-uri"])
    results, figure = page.explore("explorer-continue", None, seeds, "road trip", 15)
    unknown = text_of(find(results, "explorer-unknown"))
    assert BOGUS in unknown and not any(t in unknown for t in tracks[:3])
    assert "not-a-uri" in text_of(find(results, "explorer-malformed"))
    body = api.post("/api/v1/recommendations/continuation",
                    {"name": "road trip", "seed_tracks": [*tracks[:3], BOGUS], "k": 15}, format="json").json()
    assert body["unknown_seeds"] == [BOGUS]
    shown = rows_of(find(results, "explorer-continuation"))
    assert [r["uri"] for r in shown] == [t["uri"] for t in body["tracks"]]
    assert [r["score"] for r in shown] == [_fmt(t["score"]) for t in body["tracks"]]
    assert list(figure.data[0].customdata) == [t["uri"] for t in body["tracks"]]
    assert not {r["uri"] for r in shown} & set(tracks[:3])
    # All seeds known: said so; a name alone works (Enter in the name box); nothing at all is refused.
    known, _ = page.explore("explorer-continue", None, "\n".join(tracks[:2]), "", 5)
    assert "Every seed is known" in text_of(find(known, "explorer-unknown"))
    named, _ = page.explore("explorer-name", None, "", "road trip", 5)
    assert len(rows_of(find(named, "explorer-continuation"))) == 5
    nothing, figure = page.explore("explorer-continue", None, "not-a-uri", " ", 5)
    assert "Give seed tracks" in text_of(nothing) and "not-a-uri" in text_of(find(nothing, "explorer-malformed"))
    assert page.parse_seeds(f" {BOGUS} ,{tracks[0]}\nx") == ([BOGUS, tracks[0]], ["x"])


def test_looking_at_a_users_picks_is_not_logged_as_served(live):
    from dashboard.pages import explorer
    from ranker.experiments.served_log import SERVED_LOG
    from ranker.picks.serve import serve_playlist_picks
    from recsys_site.mongo import get_db

    user = str(live.user_ids[3])
    SERVED_LOG.flush()
    before = get_db()["served"].count_documents({"user": user})
    explorer.user_picks(user, 5)
    SERVED_LOG.flush()
    assert get_db()["served"].count_documents({"user": user}) == before
    serve_playlist_picks(user=user, k=5)  # the API's own call is logged: the count above could have moved
    SERVED_LOG.flush()
    assert get_db()["served"].count_documents({"user": user}) == before + 1


def test_seed_tracks_are_found_by_title_or_artist_and_kept_once_chosen(live):
    from ingestion.selectors import track_get

    uri = str(live.item_ids[int(live.popularity.argmax())])  # a track the model knows well
    doc = track_get(uri=uri)
    by_title = page.track_options(doc["name"][:3].lower())
    assert uri in {o["value"] for o in by_title} or len(by_title) == page.LOOKUP_LIMIT
    by_artist = page.track_options(doc["artist_name"])
    assert uri in {o["value"] for o in by_artist}
    label = next(o["label"] for o in by_artist if o["value"] == uri)
    assert doc["name"] in label and doc["artist_name"] in label
    kept = page.track_options("zzzz-nothing", [uri])
    assert [o["value"] for o in kept] == [uri] and kept[0]["label"] == label
    assert page.lookup_callback("", [uri]) is page.no_update and page.lookup_callback("x", None) == []


def test_continuation_from_tracks_chosen_in_the_type_ahead_equals_the_api(api, live):
    uri = str(live.item_ids[int(live.popularity.argmax())])
    results, _ = page.explore("explorer-continue", None, None, "", 8, [uri])
    body = api.post("/api/v1/recommendations/continuation", {"seed_tracks": [uri], "k": 8}, format="json").json()
    shown = rows_of(find(results, "explorer-continuation"))
    assert [r["uri"] for r in shown] == [t["uri"] for t in body["tracks"]] and uri not in {r["uri"] for r in shown}
    assert "Every seed is known" in text_of(find(results, "explorer-unknown"))


@pytest.mark.parametrize("kind, key", [("tracks", "uri"), ("playlists", "pid")])
def test_mood_search_shows_what_the_search_api_answers(live, kind, key):
    from rest_framework.test import APIClient

    names = [str(n) for n in live.playlist_names if n]
    query = max(set(names), key=names.count)
    shown = page.mood_view(query, kind, 6)
    body = APIClient().get("/api/v1/search", {"q": query, "type": kind, "k": 6}).json()
    rows = rows_of(find(shown, "explorer-mood-table"))
    assert body["results"] and [r[key] for r in rows] == [_fmt(r[key]) for r in body["results"]]
    assert all("similarity" in r["why"] for r in rows)
    assert query in text_of(find(shown, "explorer-mood-info"))
    assert "q:" in text_of(page.mood_view("x" * 500, kind))  # the API's 400, in words
    assert "Type a mood" in text_of(page.mood_view("  ", kind))


def test_the_layout_has_the_lookup_and_the_mood_box(live):
    content = page.layout()
    assert find(content, "explorer-track-lookup").multi is True
    assert find(content, "explorer-mood") is not None and find(content, "explorer-mood-type").value == "tracks"
