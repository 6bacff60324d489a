"""Overview: what the store holds, how the recent ingests went, which model serves and the last weekly refresh.

The counts come from the catalogue statistics document (``ingestion.selectors.catalogue_stats``), recomputed after
each MPD ingest and by the weekly refresh, so a page view never counts a large collection; events stored since
that document was computed are added live through the ``ts`` index.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, dcc, html

from ingestion.selectors import event_count, ingest_run_list
from ranker.training.selectors import live_version, model_get
from recsys_site.jobs import run_list

from ..cache import cached
from ..components import empty_figure, graph, page, stat_cards, styled, table, table_data, unique_labels
from .catalogue import stats_cached

PATH = "/"
TITLE = "Overview"
RUN_LIMIT = 20
PROBLEMS_PER_RUN = 5  # a run stores up to 500 problems; the page names the first few of each
KINDS = {"all": "all runs", "mpd": "MPD playlists", "triplets": "listening triplets"}
RUN_COLUMNS = ("started", "kind", "status", "seconds", "new", "updated", "unchanged", "rejected", "problems", "paths")
PROBLEM_COLUMNS = ("run started", "file", "pid", "line", "reason")
COUNT_LABELS = (("playlists", "Playlists"), ("tracks", "Tracks"), ("artists", "Artists"), ("users", "Users"),
                ("events", "Events"), ("playlist_tracks", "Playlist-track rows"), ("listens", "Listens"),
                ("friendships", "Friendships"))

# The statistics document changes at most once per ingest or refresh (cached once for both pages); events arrive
# all the time.
_events = cached(10)(event_count)


def layout(kind: str = "all", **_: Any) -> html.Div:
    kind = kind if kind in KINDS else "all"
    stats = stats_cached()
    runs = _runs(kind)
    counts = overview_counts(stats)
    return page(
        TITLE,
        "What the store holds, how the recent ingestion runs went, which model serves and when the weekly "
        "refresh last ran.",
        stat_cards((label, counts[key]) for key, label in COUNT_LABELS),
        html.P(_stats_note(stats, runs), className="note", id="overview-stats-note"),
        html.Div([html.Div(model_panel(), id="overview-model"), html.Div(refresh_panel(), id="overview-refresh")],
                 className="row"),
        html.H3("Ingestion runs"),
        html.Div([dcc.RadioItems(id="overview-kind", options=[{"label": v, "value": k} for k, v in KINDS.items()],
                                 value=kind, inline=True)], className="controls"),
        graph(runs_figure(runs), id="overview-runs-chart", main=True),
        table(run_rows(runs), RUN_COLUMNS, id="overview-runs-table", page_size=10),
        html.H3("Problems in these runs"),
        html.Div(problems_view(runs), id="overview-problems"),
    )


def register(app: Dash) -> None:
    app.callback(Output("overview-runs-chart", "figure"), Output("overview-runs-table", "rowData"),
                 Output("overview-problems", "children"), Input("overview-kind", "value"),
                 prevent_initial_call=True)(runs_view)  # the layout already holds the first view


def runs_view(kind: str | None) -> tuple[go.Figure, list[dict[str, Any]], Any]:
    """The runs chart, table rows and problems for one kind of ingestion run (``"all"``, ``"mpd"``, ``"triplets"``)."""
    runs = _runs(kind if kind in KINDS else "all")
    return styled(runs_figure(runs)), table_data(run_rows(runs), RUN_COLUMNS), problems_view(runs)


def _runs(kind: str) -> list[dict[str, Any]]:
    # Small collection, read fresh on every view so a finished ingest shows at once.
    return ingest_run_list(limit=RUN_LIMIT, kind=None if kind == "all" else kind, problems=PROBLEMS_PER_RUN)


# --- counts ------------------------------------------------------------------------------------------------------

def overview_counts(stats: dict[str, Any] | None) -> dict[str, int]:
    """The store's counts from the statistics document, events live."""
    counts = dict.fromkeys((key for key, _ in COUNT_LABELS), 0)
    counts.update((stats or {}).get("counts") or {})
    counts["events"] = _events()
    return counts


def _stats_note(stats: dict[str, Any] | None, runs: list[dict[str, Any]]) -> str:
    if not stats or not stats.get("stored"):
        return ("No statistics document is stored yet, so these counts were computed for this view; the next MPD "
                "ingest or weekly refresh stores them.")
    computed = _aware(stats["computed_at"])
    note = (f"Counts as of {computed:%Y-%m-%d %H:%M} UTC ({_age(computed)} ago), recomputed after each MPD ingest "
            "and by the weekly refresh; events are counted live.")
    # A triplet ingest does not recompute the statistics (an MPD ingest does): say when one changed the store since.
    if any(r.get("finished_at") and _aware(r["finished_at"]) > computed and _changed(r.get("summary") or {})
           for r in runs):
        note += " An ingestion run that changed the store finished after that: some counts lag until the next refresh."
    return note


def _changed(summary: dict[str, Any]) -> bool:
    return any(int(v or 0) > 0 for k, v in summary.items()
               if k in ("new", "updated") or k.endswith(("_new", "_updated", "_removed")))


# --- the live model and the weekly refresh -----------------------------------------------------------------------

def model_panel() -> html.Div:
    """The live model version, since when it serves, when it was trained and its validation metrics."""
    version = live_version()
    if version is None:
        return html.Div([html.H3("Live model"), html.P("No model is live yet: run the weekly refresh (Jobs) or "
                                                       "`manage.py train_ranker --promote`.", className="note")])
    doc = model_get(version=version) or {}
    promoted, created = doc.get("promoted_at"), doc.get("created_at")
    metrics = {k: v for k, v in (doc.get("metrics") or {}).items() if not isinstance(v, dict | list)}
    lines = [html.Strong(version, id="overview-model-version")]
    if promoted:
        lines.append(html.Div(f"live since {_aware(promoted):%Y-%m-%d %H:%M} UTC ({_age(promoted)} ago)",
                              id="overview-model-age"))
    if created:
        lines.append(html.Div(f"trained {_aware(created):%Y-%m-%d %H:%M} UTC ({_age(created)} ago)"
                              + (f" on {doc['device']}" if doc.get("device") else "")))
    if doc.get("data"):
        lines.append(html.Div("data: " + ", ".join(f"{k} {v:,}" for k, v in doc["data"].items()
                                                    if isinstance(v, int))))
    if metrics:
        lines.append(html.Div("validation: " + ", ".join(f"{k} {_num(v)}" for k, v in metrics.items()),
                              className="note"))
    return html.Div([html.H3("Live model"), *lines])


def refresh_panel() -> html.Div:
    """The last weekly refresh: status, when, how long, and its error or message."""
    runs = run_list(job="weekly_refresh", limit=1)
    if not runs:
        return html.Div([html.H3("Weekly refresh"),
                         html.P("The weekly refresh has not run yet.", className="note", id="overview-refresh-status",
                                **{"data-status": "never"})])
    run = runs[0]
    when = run.get("finished_at") or run.get("started_at") or run.get("queued_at")
    verb = "finished" if run.get("finished_at") else "started" if run.get("started_at") else "queued"
    lines: list[Any] = [
        html.Strong(f"{run['status']}", id="overview-refresh-status", **{"data-status": run["status"]}),
        html.Span(f" run {run['_id'][:8]}, {verb} {_aware(when):%Y-%m-%d %H:%M} UTC ({_age(when)} ago)"
                  if when else f" run {run['_id'][:8]}"),
    ]
    if run.get("duration_s") is not None:
        lines.append(html.Div(f"took {run['duration_s']:,.0f} s"))
    steps = ", ".join(f"{s['name']} {s.get('status')}" for s in run.get("steps", []))
    if steps:
        lines.append(html.Div(f"steps: {steps}", className="note"))
    if run.get("error"):
        lines.append(html.Pre(run["error"], className="error"))
    elif run.get("message"):
        lines.append(html.Div(run["message"], className="note"))
    return html.Div([html.H3("Weekly refresh"), *lines])


# --- ingestion runs ----------------------------------------------------------------------------------------------

def _rows_of(summary: dict[str, Any], what: str) -> int:
    """Rows a run wrote by outcome (``new``, ``updated``, ``unchanged``): playlists for MPD runs, listens plus
    friendships for triplet runs."""
    if what in summary:
        return int(summary.get(what) or 0)
    return int(summary.get(f"listens_{what}") or 0) + int(summary.get(f"friendships_{what}") or 0)


def run_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        summary = run.get("summary") or {}
        rows.append({"started": run.get("started_at"), "kind": run.get("kind"), "status": run.get("status"),
                     "seconds": summary.get("seconds"), "new": _rows_of(summary, "new"),
                     "updated": _rows_of(summary, "updated"), "unchanged": _rows_of(summary, "unchanged"),
                     "rejected": int(summary.get("rejected") or 0), "problems": int(run.get("problem_count") or 0),
                     "paths": ", ".join(run.get("paths") or [])})
    return rows


def runs_figure(runs: list[dict[str, Any]]) -> go.Figure:
    """Rows per run by outcome (stacked), with rejected rows and problems on a second axis, oldest run first."""
    if not runs:
        return empty_figure("No ingestion runs yet: run `manage.py ingest_mpd PATH` (`make run` loads demo data).")
    rows = run_rows(runs)[::-1]
    labels = [f"{_aware(r['started']):%m-%d %H:%M:%S} {r['kind']} ({r['status']})" if r["started"] else r["kind"]
              for r in rows]
    labels = unique_labels(labels, "{label} #{n}")  # two runs in the same second stay two bars
    fig = go.Figure()
    for key, color in (("new", "#2f80ed"), ("updated", "#f2994a"), ("unchanged", "#bdbdbd")):
        fig.add_bar(x=labels, y=[r[key] for r in rows], name=key, marker_color=color)
    fig.add_scatter(x=labels, y=[r["rejected"] for r in rows], name="rejected", yaxis="y2", mode="lines+markers",
                    marker={"color": "#b42318", "symbol": "x", "size": 10}, line={"dash": "dot"})
    fig.add_scatter(x=labels, y=[r["problems"] for r in rows], name="problems", yaxis="y2", mode="markers",
                    marker={"color": "#6b2d5c", "size": 8})
    fig.update_layout(barmode="stack", title="Rows per ingestion run (playlists; listens and friendships for triplets)",
                      yaxis={"title": "rows"},
                      yaxis2={"title": "rejected / problems", "overlaying": "y", "side": "right",
                              "rangemode": "tozero", "showgrid": False},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def problems_view(runs: list[dict[str, Any]]) -> Any:
    """The first stored problems of each run (file, pid or line, reason), or a line saying there were none."""
    rows, more = [], 0
    for run in runs:
        problems = run.get("problems") or []
        more += max(int(run.get("problem_count") or 0) - len(problems), 0)
        for problem in problems:
            rows.append({"run started": run.get("started_at"), "file": PurePath(problem.get("file") or "").name,
                         "pid": problem.get("pid"), "line": problem.get("line"), "reason": problem.get("reason")})
    if not rows:
        return html.P("No problems in these runs.", className="note")
    parts: list[Any] = [table(rows, PROBLEM_COLUMNS, id="overview-problems-table", page_size=10)]
    if more:
        parts.append(html.P(f"{more:,} more problems are in the runs' documents (the first {PROBLEMS_PER_RUN} of "
                            "each run are shown).", className="note"))
    return html.Div(parts)


# --- formatting --------------------------------------------------------------------------------------------------

def _aware(value: datetime) -> datetime:
    # Some servers hand back naive datetimes; everything is stored in UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _age(value: datetime) -> str:
    seconds = max((datetime.now(UTC) - _aware(value)).total_seconds(), 0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
