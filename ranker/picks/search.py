"""Mood search: free text ("lo-fi for studying", "rainy day sad songs") → playlists or tracks, each with why.

Both answers come from the live version's text model (``ranker.recommenders.text``): playlists are those whose
names are nearest the text (character n-grams and words, TF-IDF, cosine); tracks are those the nearest-named
playlists hold, plus tracks whose own title or artist matches. ``why`` says which of the query's words and
n-grams matched, the similarity, and for a track the names of the playlists that brought it. The API
(``GET /api/v1/search``) and the dashboard's mood-search box both call ``search``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from ingestion.selectors import playlist_summaries, track_summaries
from ranker.training.artifacts import RankerModel
from ranker.training.selectors import live_model

TYPES = ("playlists", "tracks")
WHY_PLAYLISTS = 3  # names of playlists shown as the reason a track matched


class SearchError(ValueError):
    """A bad parameter; ``param`` names it (the API answers 400 with it)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def check_query(q: Any, kind: Any, k: Any) -> tuple[str, str, int]:
    """The parameters, checked: ``SearchError`` naming the first bad one."""
    if not isinstance(q, str) or not q.strip():
        raise SearchError("q", "give some text to search for")
    if len(q) > settings.SEARCH_MAX_QUERY_CHARS:
        raise SearchError("q", f"at most {settings.SEARCH_MAX_QUERY_CHARS} characters (SEARCH_MAX_QUERY_CHARS)")
    if kind not in TYPES:
        raise SearchError("type", f"one of {', '.join(TYPES)}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= settings.SEARCH_MAX_K:
        raise SearchError("k", f"an integer from 1 to {settings.SEARCH_MAX_K} (SEARCH_MAX_K)")
    return q.strip(), kind, k


def search(*, q: str, kind: str = "tracks", k: int = 10, model: RankerModel | None = None) -> dict[str, Any]:
    """``kind`` is "playlists" or "tracks" (the API's ``type``). Returns ``{"query", "type", "model_version",
    "source", "results"}``; ``source`` is "text" (the text model) or "none" (no live model, or one made before text
    models: no results). ``SearchError`` for a bad parameter."""
    q, kind, k = check_query(q, kind, k)
    model = model or live_model()
    text = model.text if model is not None else None
    out: dict[str, Any] = {"query": q, "type": kind, "model_version": model.version if model else None,
                           "source": "text" if text is not None else "none", "results": []}
    if text is None:
        return out
    if kind == "playlists":
        matches = text.search_playlists(q, k)
        pids = [int(model.playlist_ids[m.index]) for m in matches]
        docs = playlist_summaries(pids=pids)
        for pid, m in zip(pids, matches, strict=True):
            doc = docs.get(pid, {})
            out["results"].append({
                "pid": pid, "name": doc.get("name"), "owner": doc.get("owner"), "score": round(m.score, 4),
                "why": {"similarity": round(m.similarity, 4), "matched": m.shared}})
        return out
    matches, similarities = text.search_tracks(q, k)
    uris = [str(model.item_ids[m.index]) for m in matches]
    holders = {m.index: text.playlists_holding(m.index, similarities, WHY_PLAYLISTS) for m in matches}
    names = playlist_summaries(pids=sorted({int(model.playlist_ids[r]) for rows in holders.values() for r in rows}))
    tracks = track_summaries(uris=uris)
    for uri, m in zip(uris, matches, strict=True):
        doc = tracks.get(uri, {})
        via = [{"pid": int(model.playlist_ids[r]), "name": names.get(int(model.playlist_ids[r]), {}).get("name"),
                "similarity": round(float(similarities[r]), 4)} for r in holders[m.index]]
        out["results"].append({
            "uri": uri, "name": doc.get("name"), "artist": doc.get("artist_name"), "score": round(m.score, 4),
            "why": {"similarity": round(m.similarity, 4), "playlists": via, "matched": m.shared}})
    return out
