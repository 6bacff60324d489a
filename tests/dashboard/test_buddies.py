"""The Buddies page against the real servers and a trained model: buddies as the selectors serve them, the taste map
(stored by buddies_compute, or computed when absent), the user controls and the HetRec result."""

from __future__ import annotations

from io import StringIO
from typing import Any

import numpy as np
import pytest

from dashboard.components import MAIN_CHART, _fmt
from dashboard.pages import buddies as page
from tests.dashboard.layout import find, rows_of, text_of

CLUSTER_TRACES = "cluster"  # every trace that is not one of the overlays below is a cluster's points
OVERLAYS = {"buddies", "selected user", "buddy links"}


def traces(figure) -> dict[str, Any]:
    return {t.name: t for t in figure.data}


def cluster_points(figure) -> tuple[list[str], dict[str, tuple[float, float]]]:
    users, where = [], {}
    for t in figure.data:
        if t.name not in OVERLAYS:
            users += list(t.customdata)
            where.update({u: (x, y) for u, x, y in zip(t.customdata, t.x, t.y, strict=True)})
    return users, where


def users_with_vectors(live) -> list[str]:
    from ranker.recommenders.vectors import taste_vectors

    vectors = taste_vectors(live.item_vectors(), live.user_items)
    return [str(u) for u in live.user_ids[vectors.any(axis=1)]]


@pytest.fixture
def user(live) -> str:
    """A paired user with many liked tracks (so they share some with their buddies)."""
    from pairing.selectors import buddies_for_user

    sizes = live.user_items.getnnz(axis=1)
    for row in np.argsort(-sizes, kind="stable"):
        candidate = str(live.user_ids[row])
        if buddies_for_user(user=candidate):
            return candidate
    raise AssertionError("no paired user")


def test_buddies_shown_are_the_selectors_with_their_evidence(live, user):
    from ingestion.selectors import user_liked_tracks
    from pairing.selectors import buddies_for_user

    expected = buddies_for_user(user=user, k=page.K)
    assert len(expected) == page.K
    content = page.layout(user=user)
    rows = rows_of(find(content, "buddies-table"))
    assert [r["buddy"] for r in rows] == [b["user"] for b in expected]
    assert [r["similarity"] for r in rows] == [_fmt(b["similarity"]) for b in expected]
    assert [r["shared_tracks"] for r in rows] == [_fmt(b["shared_tracks"]) for b in expected]
    assert [r["shared_artists"] for r in rows] == [_fmt(b["shared_artists"]) for b in expected]
    # The shared tracks named are really liked by both, and there are some wherever the count says so.
    raw = page.buddies_rows(user, expected)
    mine = set(user_liked_tracks(user=user))
    shared = page.buddies_shared_tracks(user=user, buddies=[b["user"] for b in expected], limit=page.TRACKS_SHOWN)
    for buddy, row in zip(expected, raw, strict=True):
        uris = shared[buddy["user"]]
        assert len(uris) == min(buddy["shared_tracks"], page.TRACKS_SHOWN)
        assert set(uris) <= mine & set(user_liked_tracks(user=buddy["user"]))
        assert (row["some_shared_tracks"] != "") == (buddy["shared_tracks"] > 0)
    assert any(b["shared_tracks"] > 0 for b in expected)
    assert user in text_of(find(content, "buddies-summary"))


def test_map_has_every_user_once_and_highlights_the_user_and_buddies(live, user):
    from pairing.selectors import buddies_for_user

    content = page.layout(user=user)
    graph = find(content, "buddies-map")
    assert graph.className == MAIN_CHART
    figure = graph.figure
    users, where = cluster_points(figure)
    assert sorted(users) == sorted(users_with_vectors(live))  # one point per user with a taste vector
    named = traces(figure)
    assert list(named["selected user"].customdata) == [user]
    assert (named["selected user"].x[0], named["selected user"].y[0]) == where[user]
    buddies = [b["user"] for b in buddies_for_user(user=user, k=page.K)]
    assert list(named["buddies"].customdata) == buddies
    assert [(x, y) for x, y in zip(named["buddies"].x, named["buddies"].y, strict=True)] == [where[b] for b in buddies]
    clusters = [t for t in figure.data if t.name not in OVERLAYS]
    assert len(clusters) >= 2 and "computed now" not in figure.layout.title.text
    # No user chosen: the map alone.
    bare = find(page.layout(), "buddies-map").figure
    assert not OVERLAYS & set(traces(bare)) and sorted(cluster_points(bare)[0]) == sorted(users)


def test_map_is_stored_by_buddies_compute_and_computed_only_when_absent(live, user):
    from pairing import collections as c
    from pairing.selectors import taste_map_get
    from recsys_site.mongo import get_db

    stored = taste_map_get()
    assert stored is not None and stored.source == "stored" and stored.model_version == live.version
    assert stored.total_users == len(stored.users) == len(users_with_vectors(live))
    assert len(stored.cluster_names) == len(stored.cluster_sizes) and sum(stored.cluster_sizes) == stored.total_users
    db = get_db()
    assert "user_1" in db[c.BUDDIES].index_information()  # the user search's index survives the swap
    db[c.TASTE_MAP].rename("taste_map_aside")
    try:
        page._stored_map.cache_clear()
        assert taste_map_get() is None
        figure = page.show_user(user)[1]
        assert "computed now" in figure.layout.title.text
        users, where = cluster_points(figure)
        # The fallback computes the same map the job stored (same data, same seed).
        assert sorted(users) == sorted(stored.users)
        for u, x, y in list(zip(stored.users, stored.x, stored.y, strict=True))[:50]:
            assert where[u] == pytest.approx((x, y), abs=1e-3)
        assert list(traces(figure)["selected user"].customdata) == [user]
    finally:
        db["taste_map_aside"].rename(c.TASTE_MAP)
        page._stored_map.cache_clear()


def test_a_sampled_map_still_places_the_chosen_user(live, user):
    from pairing.selectors import taste_map_get, taste_map_positions
    from pairing.services import buddies_compute

    everyone = len(users_with_vectors(live))
    try:
        buddies_compute(k=10, map_sample=40, random_state=5)
        sampled = taste_map_get()
        assert len(sampled.users) == 40 and sampled.total_users == everyone
        outside = next(u for u in users_with_vectors(live) if u not in set(sampled.users))
        figure = page.show_user(outside)[1]
        users, _ = cluster_points(figure)
        assert len(users) == 40 and outside not in users
        assert list(traces(figure)["selected user"].customdata) == [outside]
        x, y, _cluster = taste_map_positions(users=[outside])[outside]
        assert (traces(figure)["selected user"].x[0], traces(figure)["selected user"].y[0]) == (x, y)
        assert f"a sample of 40 of {everyone:,} users" in figure.layout.title.text
    finally:
        buddies_compute(k=10)
        page._stored_map.cache_clear()


def test_unknown_and_unpaired_users_get_a_clear_message(live):
    from ingestion.services import user_create

    detail, figure = page.show_user("nobody:1")
    assert "Unknown user 'nobody:1'" in text_of(detail) and find(detail, "buddies-table") is None
    assert not OVERLAYS & set(traces(figure))
    fresh = user_create(name="dash-newcomer")
    detail, _ = page.show_user(fresh)
    assert f"{fresh} has no buddies yet" in text_of(detail)
    assert "Pick a user" in text_of(page.show_user("")[0])


def test_user_controls(live, user):
    from ingestion.selectors import playlist_get, playlist_search

    # By user id: the id itself comes first (nothing shorter starts with it), then ids that continue it.
    options = page.search_options(user, None)
    assert options[0]["value"] == user
    prefix = user[:5]
    assert all(o["value"].startswith(prefix) for o in page.search_options(prefix, None))
    # By playlist name: the owners of the playlists so called are offered, labelled with the playlist.
    name = playlist_get(pid=int(user.split(":")[1]))["name"]
    docs, total = playlist_search(text=name, page_size=page.SEARCH_LIMIT)
    assert total >= 1
    by_name = {o["value"]: o["label"] for o in page.search_options(name, None)}
    assert all(by_name.get(d["owner"]) == f"{d['owner']} · {d['name']}" for d in docs), by_name
    assert page.search_options("zzz-no-such-thing", None) == []
    assert page.search_options(None, user) == [{"label": user, "value": user, "search": f"{user} "}]
    assert page.search_callback(" ", user) is page.no_update  # a choice empties the search: options stay
    assert page.search_callback(user, None) == options
    # Choosing: the search box's value, or the user of a clicked map point.
    assert page.picked_user(user, None, "buddies-search") == user
    click = {"points": [{"x": 0.1, "y": 0.2, "customdata": "mpd:7"}]}
    assert page.picked_user(user, click, "buddies-map") == "mpd:7"
    assert page.picked_user(None, None, "buddies-search") is page.no_update
    detail, figure = page.show_user_callback(f"  {user} ")
    assert find(detail, "buddies-table") is not None
    assert list(traces(figure)["selected user"].customdata) == [user]


def test_hetrec_result_shows_once_recorded(live, tmp_path):
    from django.core.management import call_command

    from pairing.selectors import hetrec_result_latest
    from tests.pairing.test_hetrec import write_hetrec

    before = page.layout()
    assert "not run yet" in text_of(find(before, "buddies-hetrec"))
    assert find(before, "buddies-hetrec-chart") is None
    call_command("evaluate_pairing", "--hetrec", str(write_hetrec(tmp_path / "h")), "--k", "3", "--no-progress",
                 "--seed", "3", stdout=StringIO())
    result = hetrec_result_latest()["result"]
    after = page.layout()
    hetrec = find(after, "buddies-hetrec")
    assert "not run yet" not in text_of(hetrec)
    assert "friend recall@3" in text_of(hetrec) and _fmt(result["friend_recall"]) in text_of(hetrec)
    chart = find(after, "buddies-hetrec-chart").figure
    assert list(chart.data[0].x) == [result[key] for _, key in page.HETREC_ROWS if result.get(key) is not None]
    assert "8 users with friends" in text_of(find(after, "buddies-hetrec-status"))
