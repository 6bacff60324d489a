"""Jobs: every run with its status, progress, duration, metrics and errors; staff start a job and watch it run.

The page polls the run documents every two seconds (``dcc.Interval``), so a started refresh is seen moving through
its steps to "succeeded" without a reload.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html

from recsys_site.jobs import JobRefused, job_start, run_get, run_list

from ..auth import USER_KEY
from ..components import empty_figure, graph, page, styled, table, table_data

PATH = "/jobs"
TITLE = "Jobs"
POLL_MS = 2000
JOBS = ("weekly_refresh", "train_ranker", "compute_buddies", "precompute_picks")
COLUMNS = ("run", "job", "status", "progress", "message", "trigger", "queued", "duration_s", "model_version")


def layout(**_: Any) -> html.Div:
    rows, figure, current = runs_view()
    return page(TITLE, "Job runs, newest first. Starting a job queues it on the Celery workers; this page follows it.",
                html.Div([
                    dcc.Dropdown(id="jobs-name", options=[{"label": j, "value": j} for j in JOBS],
                                 value="weekly_refresh", clearable=False),
                    html.Button("Start", id="jobs-start", n_clicks=0),
                    html.Div(id="jobs-start-message", className="note"),
                ], className="controls"),
                html.Div(current, id="jobs-current"),
                graph(figure, id="jobs-chart", main=True, height=320),
                table(rows, COLUMNS, id="jobs-table", page_size=10),
                html.H3("Run details"),
                dcc.Dropdown(id="jobs-run", options=_run_options(rows), value=rows[0]["run_id"] if rows else None,
                             placeholder="pick a run"),
                html.Div(id="jobs-detail"),
                dcc.Interval(id="jobs-poll", interval=POLL_MS))


def register(app: Dash) -> None:
    app.callback(Output("jobs-start-message", "children"), Input("jobs-start", "n_clicks"), State("jobs-name", "value"),
                 prevent_initial_call=True)(_start_from_request)
    app.callback(Output("jobs-table", "rowData"), Output("jobs-chart", "figure"), Output("jobs-current", "children"),
                 Output("jobs-run", "options"), Input("jobs-poll", "n_intervals"), prevent_initial_call=True)(poll)
    app.callback(Output("jobs-detail", "children"), Input("jobs-run", "value"), Input("jobs-poll", "n_intervals"))(
        lambda run_id, _n: run_detail(run_id))


def _start_from_request(n_clicks: int, job: str) -> str:
    from flask import request  # lazy: Dash's Flask: only this path needs it

    return start(n_clicks, job, user=request.environ.get(USER_KEY, "staff"))


def start(n_clicks: int | None, job: str, *, user: str) -> str:
    """Start ``job`` on the workers; the message says which run was queued, or why none was."""
    if not n_clicks:
        return ""
    try:
        run = job_start(name=job, trigger=f"dashboard:{user}")
    except JobRefused as exc:
        return f"Not started: {job} is already running as run {exc.run_id[:8]}."
    except Exception as exc:  # the broker down, say: tell the analyst, the run is marked failed by job_start
        return f"Could not start {job}: {type(exc).__name__}: {exc}"
    return f"Started {job} as run {run['_id'][:8]} ({run['status']})."


def runs_view(limit: int = 30) -> tuple[list[dict[str, Any]], go.Figure, Any]:
    """The runs table rows, the step-duration chart and a line on the newest run."""
    runs = run_list(limit=limit)
    rows = [_row(run) for run in runs]
    current = _current(runs[0]) if runs else html.P("No job has run yet.", className="note")
    return rows, _durations_figure(runs), current


def poll(_n: int | None) -> tuple[list[dict[str, Any]], go.Figure, Any, list[dict[str, str]]]:
    """Everything on the page that a running job changes (the interval fires this every two seconds)."""
    rows, figure, current = runs_view()
    return table_data(rows, COLUMNS), styled(figure, 320), current, _run_options(rows)


def run_detail(run_id: str | None) -> Any:
    """Steps (status, seconds, metrics), the last log lines and any error of one run."""
    run = run_get(run_id=run_id) if run_id else None
    if run is None:
        return html.P("Pick a run above." if not run_id else f"No run {run_id}.", className="note")
    steps = [{"step": s["name"], "queue": s.get("queue"), "status": s.get("status"), "progress": s.get("progress"),
              "seconds": s.get("duration_s"), "metrics": _short(s.get("metrics"))} for s in run.get("steps", [])]
    parts: list[Any] = [table(steps, ("step", "queue", "status", "progress", "seconds", "metrics"), page_size=10)]
    if run.get("error"):
        parts.append(html.Pre(run["error"], className="error"))
    if run.get("traceback"):
        parts.append(html.Details([html.Summary("traceback"), html.Pre(run["traceback"])]))
    parts.append(html.Details([html.Summary(f"log ({len(run.get('log', []))} lines)"),
                               html.Pre("\n".join(run.get("log", [])))], open=True))
    return html.Div(parts)


def _run_options(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"label": f"{r['run']} {r['job']} ({r['status']})", "value": r["run_id"]} for r in rows]


def _row(run: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run["_id"], "run": run["_id"][:8], "job": run["job"], "status": run["status"],
            "progress": round(float(run.get("progress") or 0), 1), "message": run.get("error") or run.get("message"),
            "trigger": run.get("trigger"), "queued": run.get("queued_at"), "duration_s": _duration(run),
            "model_version": run.get("model_version")}


def _duration(run: dict[str, Any]) -> float | None:
    if run.get("duration_s") is not None:
        return run["duration_s"]
    began = run.get("started_at")
    if began is None:
        return None
    began = began if began.tzinfo else began.replace(tzinfo=UTC)
    return round((datetime.now(UTC) - began).total_seconds(), 1)


def _current(run: dict[str, Any]) -> html.Div:
    progress = float(run.get("progress") or 0)
    return html.Div([
        html.Strong(f"Newest run {run['_id'][:8]} ({run['job']}): {run['status']}", id="jobs-current-status",
                    **{"data-status": run["status"]}),
        html.Progress(value=str(progress), max="100", style={"width": "20rem", "margin": "0 1rem"}),
        html.Span(f"{progress:.0f}% {run.get('message') or ''}"),
    ])


def _durations_figure(runs: list[dict[str, Any]]) -> go.Figure:
    """Seconds per step of each run (newest at the top), so a slow step stands out."""
    if not runs:
        return empty_figure("No job runs yet: start one above.")
    labels = [f"{r['_id'][:8]} {r['job']} ({r['status']})" for r in runs][::-1]
    fig = go.Figure()
    steps = list(dict.fromkeys(s["name"] for r in runs for s in r.get("steps", [])))  # in the jobs' own order
    for step in steps:
        seconds = [next((s.get("duration_s") or 0 for s in r.get("steps", []) if s["name"] == step), 0)
                   for r in runs][::-1]
        fig.add_bar(y=labels, x=seconds, name=step, orientation="h")
    fig.update_layout(barmode="stack", title="Seconds per step", xaxis_title="seconds")
    return fig


def _short(metrics: dict[str, Any] | None, limit: int = 8) -> str:
    if not metrics:
        return ""
    items = [f"{k}: {v}" for k, v in metrics.items() if not isinstance(v, dict | list)][:limit]
    return ", ".join(items)
