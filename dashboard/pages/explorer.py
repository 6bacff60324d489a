"""Recommendations explorer: what the API would answer, for a user or for a playlist being made.

For a user: their playlist picks, each with its explanation, and their track picks, from the same service
functions the API views call (``ranker.picks.serve_playlist_picks`` and ``serve_track_picks``: the picks cache,
precomputed picks, the user's A/B variant), so the explorer shows exactly what a music app gets. For seed tracks
and/or a playlist name: the continuation (``serve_continuation``), with the seeds the model does not know reported;
seed tracks are found by title or artist with type-ahead (``ingestion.selectors.track_lookup``) or pasted as URIs.
Mood search shows what ``GET /api/v1/search`` answers (``ranker.picks.search.search``, the same call).

An analyst's look is not an exposure: the explorer asks with ``record=False``, so it never enters the served log
or the A/B results.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, ctx, dcc, html, no_update

from ingestion.mpd import URI_RE
from ingestion.selectors import track_get, track_lookup, track_summaries, user_get
from ranker.picks.search import TYPES, SearchError, search
from ranker.picks.serve import serve_continuation, serve_playlist_picks, serve_track_picks

from ..components import empty_figure, graph, page, styled, table
from .buddies import search_callback, search_options

PATH = "/explorer"
TITLE = "Recommendations"
DEFAULT_K = 10
MAX_K = 100
CHART_HEIGHT = 420
# The explanation ("why") says it all in words; the columns beside it are the parts one sorts or filters by.
PLAYLIST_COLUMNS = ("rank", "pid", "name", "score", "why", "buddy", "shared_artists", "new_share")
TRACK_COLUMNS = ("rank", "uri", "track", "artist", "score")
LOOKUP_LIMIT = 20  # type-ahead options per keystroke
MOOD_K = 10
MOOD_COLUMNS = {"tracks": ("rank", "track", "artist", "score", "why", "uri"),
                "playlists": ("rank", "name", "owner", "score", "why", "pid")}
ORIGIN_COLOURS = {"a buddy's playlist": "#2563eb", "near the user's taste": "#10b981",
                  "most followed (no taste known)": "#9aa5b1"}


def layout(user: str | None = None, **_: Any) -> html.Div:
    user = (user or "").strip()
    results, figure = user_view(user, DEFAULT_K) if user else (
        html.P("Pick a user, or give seed tracks and/or a playlist name and press Continue.", className="note"),
        empty_figure("Pick a user or give seed tracks to see picks."))
    return page("Recommendations explorer",
                "What the API returns: a user's playlist picks with their explanations and their track picks, or "
                "the tracks that continue a playlist from its seed tracks and name. Type a user id and press Enter, "
                "or search by user id or playlist name.",
                html.Div([
                    dcc.Input(id="explorer-user", type="text", value=user, debounce=True,
                              placeholder="user id, e.g. mpd:123, then Enter", style={"width": "18rem"}),
                    dcc.Dropdown(id="explorer-search", options=search_options(None, user or None), value=user or None,
                                 searchable=True, clearable=True, placeholder="search a user id or a playlist name",
                                 style={"minWidth": "26rem"}),
                    html.Label(["picks ", dcc.Input(id="explorer-k", type="number", value=DEFAULT_K, min=1,
                                                    max=MAX_K, step=1, style={"width": "5rem"})]),
                ], className="controls"),
                html.Details([
                    html.Summary("Continue a playlist: seed tracks and/or a name"),
                    html.Div([
                        dcc.Dropdown(id="explorer-track-lookup", options=[], value=[], multi=True, searchable=True,
                                     placeholder="find seed tracks: type a title or an artist",
                                     style={"minWidth": "34rem"}),
                    ], className="controls"),
                    html.Div([
                        dcc.Textarea(id="explorer-seeds", placeholder="or paste spotify:track:… one per line",
                                     style={"width": "34rem", "height": "7rem"}),
                        dcc.Input(id="explorer-name", type="text", placeholder="playlist name, e.g. road trip",
                                  debounce=True, style={"width": "18rem"}),
                        html.Button("Continue", id="explorer-continue", n_clicks=0),
                    ], className="controls"),
                ], open=True),
                html.Details([
                    html.Summary("Mood search: playlists or tracks for free text"),
                    html.Div([
                        dcc.Input(id="explorer-mood", type="text", debounce=True, maxLength=200,
                                  placeholder="e.g. rainy day sad songs, then Enter", style={"width": "24rem"}),
                        dcc.RadioItems(id="explorer-mood-type", options=list(TYPES), value="tracks", inline=True),
                        html.Button("Search", id="explorer-mood-search", n_clicks=0),
                    ], className="controls"),
                    html.Div(id="explorer-mood-results"),
                ], open=True),
                graph(figure, id="explorer-chart", main=True, height=CHART_HEIGHT),
                html.Div(results, id="explorer-results"))


def register(app: Dash) -> None:
    app.callback(Output("explorer-search", "options"), Input("explorer-search", "search_value"),
                 State("explorer-search", "value"))(search_callback)
    app.callback(Output("explorer-user", "value"), Input("explorer-search", "value"), prevent_initial_call=True)(
        lambda selected: selected or "")
    app.callback(Output("explorer-track-lookup", "options"), Input("explorer-track-lookup", "search_value"),
                 State("explorer-track-lookup", "value"))(lookup_callback)
    app.callback(Output("explorer-results", "children"), Output("explorer-chart", "figure"),
                 Input("explorer-user", "value"), Input("explorer-continue", "n_clicks"),
                 Input("explorer-name", "n_submit"), State("explorer-seeds", "value"), State("explorer-name", "value"),
                 State("explorer-k", "value"), State("explorer-track-lookup", "value"), prevent_initial_call=True)(
        lambda user, _clicks, _submit, seeds, name, k, picked: explore(ctx.triggered_id, user, seeds, name, k,
                                                                        picked))
    app.callback(Output("explorer-mood-results", "children"), Input("explorer-mood", "value"),
                 Input("explorer-mood-search", "n_clicks"), Input("explorer-mood-type", "value"),
                 State("explorer-mood", "value"), prevent_initial_call=True)(
        lambda _typed, _clicks, kind, text: mood_view(text, kind))


def explore(trigger: str | None, user: str | None, seeds: str | None, name: str | None,
            k: Any, picked: list[str] | None = None) -> tuple[Any, go.Figure]:
    """The results and main chart for what changed: the user box, or the continuation inputs (``picked``: the seed
    tracks chosen in the type-ahead, before those pasted)."""
    k = _k(k)
    if trigger in ("explorer-continue", "explorer-name"):
        results, figure = continuation_view("\n".join([*(picked or []), seeds or ""]), name, k)
    else:
        results, figure = user_view((user or "").strip(), k)
    return results, styled(figure, CHART_HEIGHT)


def _k(k: Any) -> int:
    try:
        return max(1, min(MAX_K, int(k)))
    except (TypeError, ValueError):
        return DEFAULT_K


# -- a user's picks ---------------------------------------------------------------------------------------------------

def user_picks(user: str, k: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(playlist picks, track picks) exactly as ``GET /api/v1/users/<user>/playlists/recommended?k=`` and
    ``…/tracks/recommended?k=`` answer them (same service calls)."""
    # An analyst's look is not an exposure: kept out of the served log and the A/B results.
    return serve_playlist_picks(user=user, k=k, record=False), serve_track_picks(user=user, k=k, record=False)


def user_view(user: str, k: int) -> tuple[Any, go.Figure]:
    if not user:
        return html.P("Pick a user above.", className="note"), empty_figure("Pick a user to see their picks.")
    if user_get(user=user) is None:
        message = f"Unknown user {user!r}: no such user in the store (an MPD playlist's owner is mpd:<pid>)."
        return html.P(message, id="explorer-message", className="error"), empty_figure(message)
    playlists, tracks = user_picks(user, k)
    results = html.Div([
        html.P([html.Strong(user), " · ", dcc.Link("their buddies", href=f"/dashboard/buddies?user={user}")],
               id="explorer-summary"),
        html.H3("Playlist picks"),
        _provenance(playlists, "explorer-playlists-info"),
        table(playlist_rows(playlists), PLAYLIST_COLUMNS, id="explorer-playlists", page_size=k),
        html.H3("Track picks"),
        _provenance(tracks, "explorer-tracks-info"),
        table(track_rows(tracks["tracks"]), TRACK_COLUMNS, id="explorer-tracks", page_size=k),
    ])
    return results, playlists_figure(user, playlists)


def _provenance(picks: dict[str, Any], id: str) -> html.P:
    experiment = f"experiment {picks['experiment']}, variant {picks['variant']}" if picks.get("experiment") \
        else f"variant {picks.get('variant')}"
    return html.P(f"source: {picks.get('source')} · model {picks.get('model_version')} · {experiment} · "
                  f"{'from the picks cache' if picks.get('cached') else 'computed for this request'} · "
                  f"rec_id {picks.get('rec_id')}", id=id, className="note")


def origin(why: dict[str, Any]) -> str:
    """Where a playlist pick comes from, read from its ``why``."""
    if why.get("most_followed"):
        return "most followed (no taste known)"
    return "a buddy's playlist" if why.get("buddy") else "near the user's taste"


def explain(why: dict[str, Any]) -> str:
    """A playlist pick's ``why`` in words."""
    if why.get("most_followed"):
        return f"one of the most followed playlists ({why.get('followers') or 0:,} followers): no taste known yet"
    parts = []
    if why.get("buddy"):
        parts.append(f"made by taste buddy {why['buddy']} (similarity {why.get('buddy_similarity') or 0:.2f})")
    else:
        parts.append("close to the user's taste vector")
    if why.get("shared_artists"):
        parts.append("artists they know: " + ", ".join(why["shared_artists"][:3]))
    if why.get("new_share") is not None:
        parts.append(f"{why['new_share']:.0%} of its tracks new to them")
    return "; ".join(parts)


def playlist_rows(picks: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for n, p in enumerate(picks["playlists"], start=1):
        why = p.get("why") or {}
        rows.append({"rank": n, "pid": p["pid"], "name": p.get("name"), "owner": p.get("owner"), "score": p["score"],
                     "why": explain(why), "buddy": why.get("buddy"), "buddy_similarity": why.get("buddy_similarity"),
                     "shared_artists": why.get("shared_artists") or [], "new_share": why.get("new_share"),
                     "known_artist_share": why.get("known_artist_share"), "affinity": why.get("affinity")})
    return rows


def track_rows(tracks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for n, t in enumerate(tracks, start=1):
        doc = track_get(uri=t["uri"]) or {}
        rows.append({"rank": n, "uri": t["uri"], "track": doc.get("name"), "artist": doc.get("artist_name"),
                     "score": t["score"]})
    return rows


def playlists_figure(user: str, picks: dict[str, Any]) -> go.Figure:
    """The score of each playlist pick, best at the top, coloured by where it comes from."""
    if not picks["playlists"]:
        return empty_figure(f"No playlist picks for {user}.")
    fig = go.Figure()
    labels = [f"{n}. {p.get('name') or p['pid']} ({p['pid']})" for n, p in enumerate(picks["playlists"], start=1)]
    for kind, colour in ORIGIN_COLOURS.items():
        idx = [i for i, p in enumerate(picks["playlists"]) if origin(p.get("why") or {}) == kind]
        if idx:
            fig.add_bar(x=[picks["playlists"][i]["score"] for i in idx], y=[labels[i] for i in idx], orientation="h",
                        name=kind, marker_color=colour, customdata=[picks["playlists"][i]["pid"] for i in idx])
    fig.update_layout(title=f"Playlist picks for {user}: score, and where each comes from ({picks['source']})",
                      xaxis_title="score", yaxis={"categoryorder": "array", "categoryarray": labels[::-1]},
                      barmode="overlay")
    return fig


# -- continuing a playlist --------------------------------------------------------------------------------------------

def track_options(search: str | None, chosen: list[str] | None = None) -> list[dict[str, str]]:
    """Type-ahead options: the chosen tracks (kept, so the dropdown still shows them), then the tracks whose title or
    artist starts with the text typed (``track_lookup``: bounded, most-held first). Label "title — artist"."""
    chosen = list(chosen or [])
    docs = track_summaries(uris=chosen) if chosen else {}
    options = {uri: _track_label(docs.get(uri, {"_id": uri})) for uri in chosen}
    for doc in track_lookup(text=search or "", limit=LOOKUP_LIMIT):
        options.setdefault(doc["_id"], _track_label(doc))
    # "search" keeps a server match listed whatever the browser's own filter makes of the label.
    return [{"label": label, "value": uri, "search": f"{label} {search or ''}"} for uri, label in options.items()]


def _track_label(doc: dict[str, Any]) -> str:
    if not doc.get("name"):
        return str(doc["_id"])
    held = doc.get("num_playlists")
    return f"{doc['name']} — {doc.get('artist_name') or '?'}" + (f" ({held:,} playlists)" if held else "")


def lookup_callback(search: str | None, chosen: list[str] | None) -> Any:
    """New options as the analyst types; none while the box is empty (as it is right after a choice)."""
    if not (search or "").strip():
        return no_update
    return track_options(search, chosen)


def parse_seeds(text: str | None) -> tuple[list[str], list[str]]:
    """(well-formed spotify:track URIs, malformed lines) of a textarea, one URI per line (commas work too)."""
    good: list[str] = []
    bad: list[str] = []
    for raw in (text or "").replace(",", "\n").splitlines():
        line = raw.strip()
        if line:
            (good if URI_RE["track"].match(line) else bad).append(line)
    return good, bad


def continuation(seeds: list[str], name: str | None, k: int) -> dict[str, Any]:
    """What ``POST /api/v1/recommendations/continuation`` answers for these seeds, name and k."""
    return serve_continuation(name=name, seed_tracks=seeds, k=k)


def continuation_view(seeds_text: str | None, name: str | None, k: int) -> tuple[Any, go.Figure]:
    seeds, malformed = parse_seeds(seeds_text)
    name = (name or "").strip() or None
    notes: list[Any] = []
    if malformed:
        notes.append(html.P(f"Not spotify:track URIs, left out (the API would refuse them): {', '.join(malformed)}",
                            id="explorer-malformed", className="error"))
    if not seeds and not name:
        message = "Give seed tracks (spotify:track URIs), a playlist name, or both."
        return html.Div([*notes, html.P(message, id="explorer-message", className="error")]), empty_figure(message)
    picks = continuation(seeds, name, k)
    rows = track_rows(picks["tracks"])
    unknown = picks["unknown_seeds"]
    known = [s for s in seeds if s not in set(unknown)]
    notes.append(html.P(f"Unknown seeds (not in the live model, ignored): {', '.join(unknown)}" if unknown
                        else "Every seed is known to the model.", id="explorer-unknown",
                        className="error" if unknown else "note"))
    results = html.Div([
        *notes,
        html.P(f"{len(known)} known seed track(s): " + "; ".join(_label(s) for s in known[:10])
               + (" …" if len(known) > 10 else ""), className="note") if known else None,
        html.H3("Tracks that continue the playlist"),
        _provenance(picks, "explorer-continuation-info"),
        table(rows, TRACK_COLUMNS, id="explorer-continuation", page_size=k),
    ])
    return results, continuation_figure(picks, name, rows)


def _label(uri: str) -> str:
    doc = track_get(uri=uri) or {}
    return f"{doc['name']} — {doc.get('artist_name')}" if doc.get("name") else uri


def continuation_figure(picks: dict[str, Any], name: str | None, rows: list[dict[str, Any]]) -> go.Figure:
    """The score of each continuation track, best at the top."""
    if not picks["tracks"]:
        return empty_figure("No continuation.")
    labels = [f"{r['rank']}. {r['track'] or r['uri']} — {r['artist'] or '?'}"[:70] for r in rows]
    fig = go.Figure(go.Bar(x=[t["score"] for t in picks["tracks"]], y=labels, orientation="h",
                           customdata=[t["uri"] for t in picks["tracks"]], name=picks["source"]))
    title = f"Continuation{f' of “{name}”' if name else ''}: score of each track (source: {picks['source']})"
    fig.update_layout(title=title, xaxis_title="score", yaxis={"autorange": "reversed"})
    return fig


# -- mood search ------------------------------------------------------------------------------------------------------

def explain_match(kind: str, why: dict[str, Any]) -> str:
    """A search result's ``why`` in words."""
    parts = [f"similarity {why.get('similarity') or 0:.2f}"]
    if why.get("matched"):
        parts.append("matched " + ", ".join(f"“{m}”" for m in why["matched"][:5]))
    if kind == "tracks" and why.get("playlists"):
        parts.append("in " + ", ".join(f"“{p.get('name')}”" for p in why["playlists"]))
    return "; ".join(parts)


def mood_rows(found: dict[str, Any]) -> list[dict[str, Any]]:
    kind = found["type"]
    return [{"rank": n, "uri": r.get("uri"), "pid": r.get("pid"), "name": r.get("name"), "track": r.get("name"),
             "artist": r.get("artist"), "owner": r.get("owner"), "score": r["score"],
             "why": explain_match(kind, r.get("why") or {})} for n, r in enumerate(found["results"], start=1)]


def mood_view(text: str | None, kind: str | None, k: int = MOOD_K) -> Any:
    """What ``GET /api/v1/search?q=text&type=kind&k=k`` answers, as a table (or the 400's message)."""
    if not (text or "").strip():
        return html.P("Type a mood, a genre, an occasion…", id="explorer-mood-message", className="note")
    try:
        found = search(q=text, kind=kind or "tracks", k=k)
    except SearchError as exc:
        return html.P(f"{exc.param}: {exc}", id="explorer-mood-message", className="error")
    if not found["results"]:
        why = "the live model has no text model" if found["source"] == "none" else "no known word or n-gram"
        return html.P(f"Nothing for “{found['query']}”: {why}.", id="explorer-mood-message", className="note")
    return html.Div([
        html.P(f"{len(found['results'])} {found['type']} for “{found['query']}” · model {found['model_version']}",
               id="explorer-mood-info", className="note"),
        table(mood_rows(found), MOOD_COLUMNS[found["type"]], id="explorer-mood-table", page_size=k),
    ])
