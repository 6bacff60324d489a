"""Building blocks the pages share: page frame, stat cards, tables and figures with one look."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import dash_ag_grid as dag
import plotly.graph_objects as go
from dash import dcc, html

MAIN_CHART = "main-chart"  # class of each page's main chart; the browser test waits for it to render
TEMPLATE = "plotly_white"


def page(title: str, intro: str, *children: Any) -> html.Div:
    return html.Div([html.H2(title), html.P(intro, className="intro"), *children], className="page")


def degradation_notice(alerts: Sequence[dict[str, Any]]) -> html.Div | None:
    """The red notice over every page while the degradation watch has a signal past its threshold: one line per open
    alert with its figures (``ranker.watch``); None when nothing is degraded."""
    if not alerts:
        return None
    return html.Div([html.Strong("Degraded: "), *[html.P(_alert_line(a), className="degraded-signal")
                                                   for a in alerts]], className="degraded", role="alert")


def _alert_line(alert: dict[str, Any]) -> str:
    when = f"since {_fmt(alert.get('at'))} UTC"
    value, threshold = alert.get("value"), alert.get("threshold")
    if alert.get("signal") == "follow_through":
        text = (f"online follow-through {value:.2%} ({alert.get('followed', 0):,} of {alert.get('served', 0):,} "
                f"playlist pick lists served in the last {alert.get('window_hours', 0):g} h got a follow) is below "
                f"the threshold {threshold:.2%}, {when}; live model {alert.get('model_version')}.")
    elif alert.get("signal") == "drift":
        text = (f"score drift KL {value:.4f} between model versions {alert.get('model_version')} and "
                f"{alert.get('old_version')} is above the threshold {threshold:.4f}, {when}.")
    else:
        text = f"{alert.get('signal')} {value} past the threshold {threshold}, {when}."
    retrain = alert.get("retrain")
    if retrain:
        text += (f" Retrain started: {retrain['job']} run {retrain['run_id']}." if retrain.get("started") else
                 f" Retrain ({retrain.get('job')}) not started: {retrain.get('reason')}.")
    return text


def stat_cards(stats: Iterable[tuple[str, Any]]) -> html.Div:
    return html.Div([html.Div([html.Div(_fmt(value), className="stat-value"), html.Div(label, className="stat-label")],
                              className="stat") for label, value in stats], className="stats")


def styled(figure: go.Figure, height: int = 360) -> go.Figure:
    """The figure in the dashboard's look (callbacks that return a figure call this too)."""
    return figure.update_layout(template=TEMPLATE, height=height, margin={"l": 50, "r": 20, "t": 50, "b": 40})


def graph(figure: go.Figure, *, id: str | None = None, main: bool = False, height: int = 360) -> dcc.Graph:
    styled(figure, height)
    props: dict[str, Any] = {"figure": figure, "config": {"displaylogo": False},
                             "className": MAIN_CHART if main else ""}
    if id:
        props["id"] = id
    return dcc.Graph(**props)


def empty_figure(message: str) -> go.Figure:
    """A figure that says why there is nothing to plot (no data yet), instead of blank axes."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font={"size": 15}, xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, *, id: str | None = None,
          page_size: int = 15) -> dag.AgGrid:
    """A sortable, filterable, paged grid of ``rows`` (values formatted for reading).

    A callback that refreshes it returns ``table_data(rows, columns)`` to its ``rowData``.
    """
    columns = list(columns or (rows[0].keys() if rows else []))
    props: dict[str, Any] = {
        # Grid fields are positional ("c0", "c1", ...): column names may hold dots, which AG Grid reads as paths.
        "columnDefs": [{"headerName": c, "field": f"c{i}"} for i, c in enumerate(columns)],
        "rowData": table_data(rows, columns),
        "defaultColDef": {"sortable": True, "resizable": True, "filter": True, "wrapText": True, "autoHeight": True},
        "columnSize": "responsiveSizeToFit",
        "dashGridOptions": {"pagination": True, "paginationPageSize": page_size,
                            "paginationPageSizeSelector": False, "domLayout": "autoHeight"},
        "style": {"width": "100%"},
    }
    if id:
        props["id"] = id
    return dag.AgGrid(**props)


def table_data(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    """``rows`` as a ``table``'s ``rowData``, fields positional (callbacks that refresh a table return this)."""
    return [{f"c{i}": _fmt(row.get(c)) for i, c in enumerate(columns)} for row in rows]


def unique_labels(labels: Iterable[str], repeat: str = "{label} ({n})") -> list[str]:
    """``labels`` with each repeat numbered by ``repeat``: Plotly merges equal category labels into one bar."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else repeat.format(label=label, n=seen[label]))
    return out


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, list | tuple):
        return ", ".join(str(_fmt(v)) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return value
