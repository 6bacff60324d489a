"""Buddies: who is paired with whom. Pick a user to see their taste buddies (similarity, shared artists and
tracks) and where they sit on the taste map; the HetRec result says whether buddies find real friends.

The taste map (PCA of the taste vectors, coloured by k-means taste cluster) is computed by ``buddies_compute``,
the weekly job's step, and only read here; when none is stored it is computed once and cached (``_computed_map``).
A user is chosen by typing an id into ``buddies-user`` and pressing Enter, by the search box (user ids and
playlist names, searched on the server), or by clicking a point on the map.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, ctx, dcc, html, no_update

from ingestion.selectors import playlist_search, playlist_summaries, track_get, user_get
from pairing.selectors import (
    buddies_for_user,
    buddies_shared_tracks,
    buddies_state,
    buddies_user_search,
    hetrec_result_latest,
    taste_map_get,
    taste_map_positions,
)
from pairing.taste_map import TasteMap, taste_map_compute
from ranker.training.selectors import live_model

from ..cache import cached
from ..components import empty_figure, graph, page, stat_cards, styled, table

PATH = "/buddies"
TITLE = "Buddies"
K = 10  # buddies shown, as the API's default
TRACKS_SHOWN = 3
SEARCH_LIMIT = 10
MAP_HEIGHT = 560
COLUMNS = ("rank", "buddy", "playlists", "similarity", "shared_tracks", "shared_artists_count", "shared_artists",
           "some_shared_tracks")
HETREC_ROWS = (("BPR taste buddies", "friend_recall"), ("raw cosine (no model)", "raw_cosine"),
               ("most active users", "most_active"), ("random users", "random"))


def layout(user: str | None = None, **_: Any) -> html.Div:
    user = (user or "").strip()
    detail, figure = show_user(user)
    return page(TITLE, "Each user's taste buddies: the users whose taste vectors (the mean of their liked tracks' "
                       "BPR vectors) are nearest, with what they share. Type a user id and press Enter, search by "
                       "user id or playlist name, or click a point on the map.",
                stat_cards(_state_stats()),
                html.Div([
                    dcc.Input(id="buddies-user", type="text", value=user, debounce=True,
                              placeholder="user id, e.g. mpd:123, then Enter", style={"width": "18rem"}),
                    dcc.Dropdown(id="buddies-search", options=search_options(None, user or None),
                                 value=user or None, searchable=True, clearable=True,
                                 placeholder="search a user id or a playlist name", style={"minWidth": "26rem"}),
                ], className="controls"),
                graph(figure, id="buddies-map", main=True, height=MAP_HEIGHT),
                html.Div(detail, id="buddies-detail"),
                html.H3("Buddies against real friendships (HetRec Last.fm)"),
                html.Div(hetrec_view(), id="buddies-hetrec"))


def register(app: Dash) -> None:
    app.callback(Output("buddies-search", "options"), Input("buddies-search", "search_value"),
                 State("buddies-search", "value"))(search_callback)
    app.callback(Output("buddies-user", "value"), Input("buddies-search", "value"), Input("buddies-map", "clickData"),
                 prevent_initial_call=True)(lambda selected, click: picked_user(selected, click, ctx.triggered_id))
    app.callback(Output("buddies-detail", "children"), Output("buddies-map", "figure"), Input("buddies-user", "value"),
                 prevent_initial_call=True)(show_user_callback)


# -- choosing a user ------------------------------------------------------------------------------------------------

def search_options(search: str | None, value: str | None = None) -> list[dict[str, str]]:
    """Dropdown options for the text typed so far: paired users whose id starts with it, then (unless it looks
    like a user id, "source:…") the owners of playlists whose name starts with it, labelled with the playlist;
    the chosen ``value`` always stays listed."""
    options: dict[str, str] = {}
    if value:
        options[value] = value
    text = (search or "").strip()
    if text:
        for user in buddies_user_search(prefix=text, limit=SEARCH_LIMIT):
            options.setdefault(user, user)
    if text and ":" not in text:
        docs, _total = playlist_search(text=text, page_size=SEARCH_LIMIT)
        for doc in docs:
            if doc.get("owner"):
                options.setdefault(doc["owner"], f"{doc['owner']} · {doc.get('name')}")
    # "search" keeps a server match listed whatever the browser's own filter makes of the label.
    return [{"label": label, "value": user, "search": f"{label} {text}"} for user, label in options.items()]


def search_callback(search: str | None, value: str | None) -> Any:
    """The options for a search; nothing changes when the search box empties (as it does once a choice is made),
    so the chosen option stays among the options and the dropdown keeps showing it."""
    if not (search or "").strip():
        return no_update
    return search_options(search, value)


def picked_user(selected: str | None, click: dict[str, Any] | None, trigger: str | None) -> Any:
    """The user id to show: the search box's choice or the clicked point's user, whichever changed."""
    if trigger == "buddies-map":
        points = (click or {}).get("points") or []
        user = points[0].get("customdata") if points else None
        if isinstance(user, list):
            user = user[0] if user else None
        return user or no_update
    return selected or no_update


def show_user_callback(user: str | None) -> tuple[Any, go.Figure]:
    detail, figure = show_user((user or "").strip())
    return detail, styled(figure, MAP_HEIGHT)


# -- one user's buddies -----------------------------------------------------------------------------------------------

def show_user(user: str) -> tuple[Any, go.Figure]:
    """The user's buddies (or why there are none) and the taste map with them highlighted."""
    tmap = taste_map()
    if not user:
        return html.P("Pick a user above to see their buddies.", className="note"), map_figure(tmap)
    buddies = buddies_for_user(user=user, k=K)
    if buddies is None:
        if user_get(user=user) is None:
            message = (f"Unknown user {user!r}: no such user in the store (an MPD playlist's owner is "
                       f"mpd:<pid>).")
        else:
            message = (f"{user} has no buddies yet: they are not in the live model's training data (new since "
                       f"the last training) or have no liked tracks, or buddies were never computed.")
        return html.P(message, id="buddies-message", className="error"), map_figure(tmap)
    rows = buddies_rows(user, buddies)
    positions = _positions(tmap, [user, *(b["user"] for b in buddies)])
    place = positions.get(user)
    where = ""
    if place and tmap is not None:
        where = f" · taste cluster {place[2]}: {_cluster_name(tmap, place[2])}"
    mine = _playlists_of([user]).get(user, [])
    summary = html.P([html.Strong(user), f" · playlists: {', '.join(mine) or 'none known'}{where} · ",
                      dcc.Link("their recommendations", href=f"/dashboard/explorer?user={user}")],
                     id="buddies-summary")
    detail = html.Div([summary, table(rows, COLUMNS, id="buddies-table", page_size=K)])
    return detail, map_figure(tmap, user=user, buddies=[b["user"] for b in buddies], positions=positions)


def buddies_rows(user: str, buddies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per buddy, best first: the stored evidence plus the buddy's playlists and a few shared tracks."""
    ids = [b["user"] for b in buddies]
    shared = buddies_shared_tracks(user=user, buddies=ids, limit=TRACKS_SHOWN)
    playlists = _playlists_of(ids)
    return [{"rank": n, "buddy": b["user"], "playlists": ", ".join(playlists.get(b["user"], [])),
             "similarity": b["similarity"], "shared_tracks": b.get("shared_tracks"),
             "shared_artists_count": b.get("shared_artists_count"), "shared_artists": b.get("shared_artists", []),
             "some_shared_tracks": "; ".join(_track_label(uri) for uri in shared.get(b["user"], []))}
            for n, b in enumerate(buddies, start=1)]


def _track_label(uri: str) -> str:
    doc = track_get(uri=uri) or {}
    return f"{doc['name']} — {doc.get('artist_name', '?')}" if doc.get("name") else uri


def _playlists_of(users: list[str]) -> dict[str, list[str]]:
    """Names of the playlists each user made, as the live model knows them (an MPD user made exactly one)."""
    model = live_model()
    if model is None:
        return {}
    owned = _owner_pids(model.version)
    pids = {u: owned.get(u, [])[:3] for u in users}
    names = playlist_summaries(pids=[p for ps in pids.values() for p in ps])
    return {u: [str(names.get(p, {}).get("name") or p) for p in ps] for u, ps in pids.items()}


@cached(3600, maxsize=4)
def _owner_pids(version: str) -> dict[str, list[int]]:
    """owner → pids of the live model ``version`` (built once: a scan of every playlist row)."""
    model = live_model()
    out: dict[str, list[int]] = {}
    if model is None or model.version != version:
        return out
    for pid, owner in zip(model.playlist_ids.tolist(), model.playlist_owners.tolist(), strict=True):
        out.setdefault(str(owner), []).append(int(pid))
    return out


# -- the taste map ----------------------------------------------------------------------------------------------------

def taste_map() -> TasteMap | None:
    """The stored map (made by the weekly job), else one computed from the live model now and cached; None when
    there is no live model with taste vectors."""
    stored = _stored_map()
    if stored is not None:
        return stored
    model = live_model()
    if model is None or model.bpr is None:
        return None
    return _computed_map(model.version)


@cached(60, maxsize=2)
def _stored_map() -> TasteMap | None:
    return taste_map_get()


@cached(3600, maxsize=2)
def _computed_map(version: str) -> TasteMap | None:
    model = live_model()
    if model is None or model.version != version or model.bpr is None:
        return None
    return taste_map_compute(model=model)


def _positions(tmap: TasteMap | None, users: list[str]) -> dict[str, tuple[float, float, int]]:
    if tmap is None:
        return {}
    if tmap.positions is not None:
        return {u: tmap.positions[u] for u in users if u in tmap.positions}
    return taste_map_positions(users=users)


def _cluster_name(tmap: TasteMap, cluster: int) -> str:
    return tmap.cluster_names[cluster] if cluster < len(tmap.cluster_names) else f"cluster {cluster}"


def map_figure(tmap: TasteMap | None, *, user: str | None = None, buddies: list[str] | None = None,
               positions: dict[str, tuple[float, float, int]] | None = None) -> go.Figure:
    """Every sampled user as a point coloured by taste cluster; the chosen ``user`` (trace "selected user") and
    their ``buddies`` (trace "buddies"), placed from ``positions``, drawn on top and joined by lines."""
    if tmap is None or not tmap.users:
        return empty_figure("No taste map yet: train a model and compute buddies (manage.py compute_buddies).")
    fig = go.Figure()
    by_cluster: dict[int, list[int]] = {}
    for i, c in enumerate(tmap.cluster):
        by_cluster.setdefault(c, []).append(i)
    for c in sorted(by_cluster):
        idx = by_cluster[c]
        fig.add_trace(go.Scattergl(
            x=[tmap.x[i] for i in idx], y=[tmap.y[i] for i in idx], mode="markers",
            name=f"{c} · {_cluster_name(tmap, c)}"[:60], customdata=[tmap.users[i] for i in idx],
            marker={"size": 5, "opacity": 0.55}, hovertemplate="%{customdata}<extra>cluster " + str(c) + "</extra>"))
    positions = positions or {}
    placed = [b for b in buddies or [] if b in positions]
    if user and user in positions:
        ux, uy, _ = positions[user]
        lines_x: list[float | None] = []
        lines_y: list[float | None] = []
        for b in placed:
            lines_x += [ux, positions[b][0], None]
            lines_y += [uy, positions[b][1], None]
        if placed:
            fig.add_trace(go.Scatter(x=lines_x, y=lines_y, mode="lines", name="buddy links", hoverinfo="skip",
                                     line={"color": "rgba(30,30,30,0.35)", "width": 1}))
    if placed:
        fig.add_trace(go.Scatter(x=[positions[b][0] for b in placed], y=[positions[b][1] for b in placed],
                                 mode="markers", name="buddies", customdata=placed,
                                 marker={"size": 11, "color": "#f59e0b", "line": {"color": "#1f2933", "width": 1.5}},
                                 hovertemplate="buddy %{customdata}<extra></extra>"))
    if user and user in positions:
        fig.add_trace(go.Scatter(x=[positions[user][0]], y=[positions[user][1]], mode="markers",
                                 name="selected user", customdata=[user],
                                 marker={"size": 18, "symbol": "star", "color": "#dc2626",
                                         "line": {"color": "#1f2933", "width": 1.5}},
                                 hovertemplate="%{customdata} (selected)<extra></extra>"))
    elif user:
        fig.add_annotation(text=f"{user} has no place on the map (no taste vector)", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=1.02)
    shown = len(tmap.users)
    sample = f"{shown:,} users" if shown == tmap.total_users else f"a sample of {shown:,} of {tmap.total_users:,} users"
    variance = sum(tmap.explained_variance)
    fig.update_layout(
        title=f"Taste map: {sample}, PCA of taste vectors ({variance:.0%} of variance), "
              f"{len(tmap.cluster_sizes)} k-means taste clusters" + (" (computed now)" if tmap.source == "computed"
                                                                     else ""),
        xaxis_title="PC 1", yaxis_title="PC 2", legend={"itemsizing": "constant"})
    return fig


# -- state and the HetRec evaluation ----------------------------------------------------------------------------------

def _state_stats() -> list[tuple[str, Any]]:
    state = buddies_state()
    if state is None:
        return [("buddies", "not computed yet")]
    stats: list[tuple[str, Any]] = [("users paired", state.get("written")), ("buddies per user", state.get("k")),
                                    ("search", state.get("method")), ("model version", state.get("model_version")),
                                    ("computed", state.get("computed_at"))]
    if state.get("map"):
        stats.append(("taste clusters", state["map"].get("clusters")))
    return stats


def hetrec_view() -> Any:
    """The latest friend recall@K of buddies on HetRec Last.fm against baselines, or "not run yet"."""
    latest = hetrec_result_latest()
    if latest is None:
        return html.P(["HetRec friendship recall: not run yet. Run ",
                       html.Code("manage.py evaluate_pairing --hetrec DIR"), " to measure it."],
                      id="buddies-hetrec-status", className="note")
    result = latest["result"]
    k = result.get("k")
    rows = [(label, result[key]) for label, key in HETREC_ROWS if result.get(key) is not None]
    fig = go.Figure(go.Bar(x=[v for _, v in rows], y=[label for label, _ in rows], orientation="h",
                           marker={"color": ["#2563eb"] + ["#9aa5b1"] * (len(rows) - 1)}))
    fig.update_layout(title=f"Friend recall@{k}: share of declared friends among the top {k} buddies",
                      xaxis_title=f"friend recall@{k}", yaxis={"autorange": "reversed"})
    return html.Div([
        html.P(f"Last run {latest['created_at']:%Y-%m-%d %H:%M} UTC on {latest.get('dataset')}: "
               f"{result.get('users_with_friends', 0):,} users with friends of {result.get('users', 0):,}.",
               id="buddies-hetrec-status", className="note"),
        stat_cards([(f"friend recall@{k}", result.get("friend_recall")), ("random", result.get("random")),
                    ("most active", result.get("most_active")),
                    ("lift over random", f"{result['lift_over_random']}x" if result.get("lift_over_random") else "–")]),
        graph(fig, id="buddies-hetrec-chart", height=260),
    ])
