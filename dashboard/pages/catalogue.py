"""Catalogue: top tracks and artists, how long playlists are, how many followers and edits they have, and the words
their names use, for every playlist or only those with at least N followers.

Everything comes from the catalogue statistics document (``ingestion.selectors.catalogue_stats``), which holds the
distributions for each followers filter, so moving a control never scans the playlists.
"""

from __future__ import annotations

import bisect
from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, dcc, html

from ingestion.selectors import catalogue_stats

from ..cache import cached
from ..components import empty_figure, graph, page, stat_cards, styled, unique_labels

PATH = "/catalogue"
TITLE = "Catalogue"
TOP_DEFAULT, TOP_MIN, TOP_MAX = 20, 5, 50
NO_DATA = "No playlists yet: ingest MPD slices (`manage.py ingest_mpd PATH`)."
# Followers are heavy-tailed (a handful of playlists have tens of thousands): log-like bins, last one open.
FOLLOWER_BINS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
FIGURES = ("catalogue-length", "catalogue-followers", "catalogue-edits", "catalogue-words", "catalogue-tracks",
           "catalogue-artists")

# Shared with the overview page: while no statistics document is stored, both would otherwise compute it.
stats_cached = cached(60)(catalogue_stats)


def layout(min_followers: str | int = 0, top: str | int = TOP_DEFAULT, **_: Any) -> html.Div:
    stats = stats_cached()
    tiers = _tiers(stats)
    top_n = _clamp(_int(top, TOP_DEFAULT), TOP_MIN, TOP_MAX)
    tier = tier_for(tiers, _int(min_followers, 0))
    summary, length, followers, edits, words, tracks, artists = view(tier["min_followers"] if tier else 0, top_n)
    counts = (stats or {}).get("counts") or {}
    playlists = counts.get("playlists") or 0
    return page(
        TITLE,
        "Top tracks and artists, playlist lengths, followers and edits, and the words playlist names use. The "
        "followers filter applies to the playlist charts; the top-N slider to tracks, artists and words.",
        stat_cards([("Playlists", playlists), ("Tracks", counts.get("tracks") or 0),
                    ("Artists", counts.get("artists") or 0),
                    ("Playlist-track rows", counts.get("playlist_tracks") or 0),
                    ("Mean length", round((counts.get("playlist_tracks") or 0) / playlists, 1) if playlists else 0)]),
        html.P(_stats_note(stats), className="note", id="catalogue-stats-note"),
        html.Div([
            html.Div([html.Label("Playlists", htmlFor="catalogue-min-followers"),
                      dcc.Dropdown(id="catalogue-min-followers", options=tier_options(tiers),
                                   value=tier["min_followers"] if tier else 0, clearable=False)]),
            html.Div([html.Label("Top N tracks, artists and words", htmlFor="catalogue-top-n"),
                      dcc.Slider(id="catalogue-top-n", min=TOP_MIN, max=TOP_MAX, step=5, value=top_n,
                                 marks={n: str(n) for n in range(TOP_MIN, TOP_MAX + 1, 5)})],
                     style={"minWidth": "22rem"}),
        ], className="controls"),
        html.P(summary, className="note", id="catalogue-summary"),
        graph(length, id="catalogue-length", main=True),
        html.Div([graph(followers, id="catalogue-followers"), graph(edits, id="catalogue-edits")], className="row"),
        graph(words, id="catalogue-words", height=460),
        html.Div([graph(tracks, id="catalogue-tracks", height=560), graph(artists, id="catalogue-artists", height=560)],
                 className="row"),
    )


def register(app: Dash) -> None:
    app.callback(Output("catalogue-summary", "children"), *[Output(f, "figure") for f in FIGURES],
                 Input("catalogue-min-followers", "value"), Input("catalogue-top-n", "value"),
                 prevent_initial_call=True)(update)  # the layout already holds the first view


def update(min_followers: int | None, top_n: int | None) -> tuple[Any, ...]:
    """The summary line and the six figures for a followers filter and a top-N (the page's one callback)."""
    summary, *figures = view(min_followers, top_n)
    heights = (360, 360, 360, 460, 560, 560)
    return (summary, *(styled(fig, h) for fig, h in zip(figures, heights, strict=True)))


def view(min_followers: int | None, top_n: int | None) -> tuple[Any, ...]:
    """(summary, length, followers, edits, words, tracks, artists) for playlists with at least ``min_followers``
    followers (the largest stored filter not above it) and the ``top_n`` tracks, artists and words."""
    stats = stats_cached()
    tiers = _tiers(stats)
    top_n = _clamp(_int(top_n, TOP_DEFAULT), TOP_MIN, TOP_MAX)
    tier = tier_for(tiers, _int(min_followers, 0))
    if tier is None or not tier["playlists"]:
        return (NO_DATA, *(empty_figure(NO_DATA) for _ in FIGURES))
    return (_summary(tier, tiers[0]), length_figure(tier), followers_figure(tier), edits_figure(tier),
            words_figure(tier, top_n), tracks_figure(stats["top_tracks"], top_n),
            artists_figure(stats["top_artists"], top_n))


# --- filters -----------------------------------------------------------------------------------------------------

def _tiers(stats: dict[str, Any] | None) -> list[dict[str, Any]]:
    return sorted((stats or {}).get("tiers") or [], key=lambda t: t["min_followers"])


def tier_for(tiers: list[dict[str, Any]], min_followers: int) -> dict[str, Any] | None:
    """The stored filter for "at least ``min_followers`` followers": the largest threshold not above it."""
    if not tiers:
        return None
    index = bisect.bisect_right([t["min_followers"] for t in tiers], max(min_followers, 0)) - 1
    return tiers[max(index, 0)]


def tier_options(tiers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not tiers:
        return [{"label": "all playlists (none yet)", "value": 0}]
    return [{"label": (f"all playlists ({t['playlists']:,})" if not t["min_followers"]
                       else f"with ≥ {t['min_followers']:,} followers ({t['playlists']:,})"),
             "value": t["min_followers"]} for t in tiers]


def _summary(tier: dict[str, Any], everything: dict[str, Any]) -> str:
    share = tier["playlists"] / everything["playlists"] if everything["playlists"] else 0
    who = "all playlists" if not tier["min_followers"] else f"playlists with ≥ {tier['min_followers']:,} followers"
    return (f"{tier['playlists']:,} {who} ({share:.1%} of {everything['playlists']:,}): "
            f"{tier['playlist_tracks']:,} playlist-track rows, median length {_median(tier['length'])}, "
            f"median followers {_median(tier['followers'])}, median edits {_median(tier['edits'])}.")


def _stats_note(stats: dict[str, Any] | None) -> str:
    if not stats or not stats.get("stored"):
        return ("No statistics document is stored yet, so these were computed for this view; the next MPD ingest or "
                "weekly refresh stores them, or now: python manage.py ingest_mpd --stats.")
    return (f"Statistics computed {stats['computed_at']:%Y-%m-%d %H:%M} UTC in {stats.get('seconds', 0):.1f} s; "
            "recomputed after each MPD ingest and by the weekly refresh.")


# --- figures -----------------------------------------------------------------------------------------------------

def length_figure(tier: dict[str, Any]) -> go.Figure:
    """Playlists per length (number of tracks)."""
    fig = go.Figure()
    fig.add_bar(x=[v for v, _ in tier["length"]], y=[n for _, n in tier["length"]], marker_color="#2f80ed",
                hovertemplate="%{x} tracks: %{y} playlists<extra></extra>")
    return fig.update_layout(title=f"Playlist length ({_who(tier)})", xaxis_title="tracks in the playlist",
                             yaxis_title="playlists", bargap=0.05)


def followers_figure(tier: dict[str, Any]) -> go.Figure:
    """Playlists per followers bin (log-like bins)."""
    if not tier["followers"]:
        return empty_figure("No follower counts in these playlists.")
    counts = [0] * len(FOLLOWER_BINS)
    for value, n in tier["followers"]:
        counts[bisect.bisect_right(FOLLOWER_BINS, value) - 1] += n
    labels = [_bin_label(i) for i in range(len(FOLLOWER_BINS))]
    first = next(i for i, n in enumerate(counts) if n)
    last = max(i for i, n in enumerate(counts) if n)
    fig = go.Figure()
    fig.add_bar(x=labels[first:last + 1], y=counts[first:last + 1], marker_color="#27ae60",
                hovertemplate="%{x} followers: %{y} playlists<extra></extra>")
    return fig.update_layout(title=f"Followers ({_who(tier)})", xaxis_title="followers", yaxis_title="playlists")


def edits_figure(tier: dict[str, Any]) -> go.Figure:
    """Playlists per number of edits."""
    if not tier["edits"]:
        return empty_figure("No edit counts in these playlists.")
    fig = go.Figure()
    fig.add_bar(x=[v for v, _ in tier["edits"]], y=[n for _, n in tier["edits"]], marker_color="#f2994a",
                hovertemplate="%{x} edits: %{y} playlists<extra></extra>")
    return fig.update_layout(title=f"Edits ({_who(tier)})", xaxis_title="edits", yaxis_title="playlists", bargap=0.05)


def words_figure(tier: dict[str, Any], top_n: int) -> go.Figure:
    """The ``top_n`` words of playlist names, by playlists whose name uses them (common stop words left out)."""
    words = tier["words"][:top_n]
    if not words:
        return empty_figure("No words in these playlists' names.")
    fig = go.Figure()
    fig.add_bar(x=[w for w, _ in words], y=[n for _, n in words], marker_color="#9b51e0",
                hovertemplate="%{x}: %{y} playlists<extra></extra>")
    return fig.update_layout(title=f"Top {len(words)} words in playlist names ({_who(tier)})",
                             yaxis_title="playlists whose name has it", xaxis_tickangle=-45)


def tracks_figure(tracks: list[dict[str, Any]], top_n: int) -> go.Figure:
    """The ``top_n`` tracks by playlists holding them, the most common at the top."""
    rows = tracks[:top_n]
    if not rows:
        return empty_figure("No tracks yet.")
    labels = unique_labels([f"{t.get('name')} — {t.get('artist_name')}" for t in rows])
    fig = go.Figure()
    fig.add_bar(y=labels[::-1], x=[t["num_playlists"] for t in rows][::-1], orientation="h", marker_color="#2d9cdb",
                customdata=[t["uri"] for t in rows][::-1],
                hovertemplate="%{y}<br>in %{x} playlists<br>%{customdata}<extra></extra>")
    return fig.update_layout(title=f"Top {len(rows)} tracks", xaxis_title="playlists holding the track",
                             margin={"l": 260})


def artists_figure(artists: list[dict[str, Any]], top_n: int) -> go.Figure:
    """The ``top_n`` artists by appearances of their tracks in playlists, the most common at the top."""
    rows = artists[:top_n]
    if not rows:
        return empty_figure("No artists yet.")
    labels = unique_labels([a.get("name") or a["artist_key"] for a in rows])
    fig = go.Figure()
    fig.add_bar(y=labels[::-1], x=[a["playlist_tracks"] for a in rows][::-1], orientation="h",
                marker_color="#eb5757", customdata=[a["num_tracks"] for a in rows][::-1],
                hovertemplate="%{y}<br>%{x} playlist entries<br>%{customdata} distinct tracks<extra></extra>")
    return fig.update_layout(title=f"Top {len(rows)} artists", margin={"l": 180},
                             xaxis_title="playlist entries of their tracks (playlists × tracks)")


# --- helpers -----------------------------------------------------------------------------------------------------

def _who(tier: dict[str, Any]) -> str:
    return "all playlists" if not tier["min_followers"] else f"≥ {tier['min_followers']:,} followers"


def _bin_label(index: int) -> str:
    low = FOLLOWER_BINS[index]
    if index + 1 == len(FOLLOWER_BINS):
        return f"{low:,}+"
    high = FOLLOWER_BINS[index + 1] - 1
    return f"{low:,}" if high == low else f"{low:,}–{high:,}"


def _median(pairs: list[list[int]]) -> int | None:
    """The median value of ``[value, count]`` pairs sorted by value (the lower middle for an even total)."""
    total = sum(n for _, n in pairs)
    if not total:
        return None
    seen = 0
    for value, n in pairs:
        seen += n
        if seen * 2 >= total:
            return value
    return pairs[-1][0]


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _clamp(value: int, low: int, high: int) -> int:
    return min(max(value, low), high)
