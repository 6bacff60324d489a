"""Issue 15 (8): anonymous playlist search is bounded: pages stop at PLAYLIST_SEARCH_MAX_ROWS rows (400 naming the
limit), and no request counts the whole catalogue: the total is estimated (no search) or counted up to the limit."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.commands import store_commands

pytestmark = pytest.mark.django_db


def test_search_pages_are_capped_and_counts_bounded(demo_store, settings):
    from tests.conftest import DEMO_PLAYLISTS

    settings.PLAYLIST_SEARCH_MAX_ROWS = 100
    api = APIClient()
    too_deep = api.get("/api/v1/playlists", {"page": 6, "page_size": 20})  # rows 101-120
    assert too_deep.status_code == 400
    assert "100" in str(too_deep.json()["fields"]["page"]) and "PLAYLIST_SEARCH_MAX_ROWS" in str(too_deep.json())
    assert api.get("/api/v1/playlists", {"page": 5, "page_size": 20}).status_code == 200  # the last allowed page

    with store_commands() as commands:
        everything = api.get("/api/v1/playlists", {"page": 1, "page_size": 20}).json()
    assert everything["count"] == DEMO_PLAYLISTS and everything["count_is"] == "estimated"
    assert commands.on("playlists", "aggregate") == [], commands.counts()  # no count_documents of the catalogue
    assert all("query" not in cmd for cmd in commands.on("playlists", "count"))

    # A search that matches more than the limit is counted up to the limit only.
    settings.PLAYLIST_SEARCH_MAX_ROWS = 5
    from collections import Counter

    first = Counter(d["name_norm"][:1] for d in demo_store["playlists"].find({}, {"name_norm": 1})
                    if d.get("name_norm")).most_common(1)[0][0]
    with store_commands() as commands:
        some = api.get("/api/v1/playlists", {"search": first, "page": 1, "page_size": 5}).json()
    counts = commands.on("playlists", "aggregate")
    assert len(counts) == 1 and {"$limit": 5} in counts[0]["pipeline"], counts
    assert (some["count"], some["count_is"]) == (5, "at_least")
    narrow = api.get("/api/v1/playlists", {"search": some["results"][0]["name"], "page_size": 5}).json()
    assert narrow["count_is"] == "exact" and 1 <= narrow["count"] < 5
