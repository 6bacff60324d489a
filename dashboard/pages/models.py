"""Models: every ranker version, its training curves, its evaluation against the baselines, and two versions side
by side.

Everything here comes from the ``models`` registry and the ``evaluations`` reports (a few small documents each:
training records its per-epoch history and metrics in the registry document), so the page reads no model files
and needs no cache. The training jobs evaluate every new version (ADR 0019): its recipe and the one live then,
each retrained on one sampled split, scored on the same cases and compared by the paired bootstrap; the report is
filed under the new version, and the comparison's verdict is on its registry document. ``manage.py evaluate``
files its report under the version live when it ran. A version with neither says so.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, dcc, html
from plotly.subplots import make_subplots

from ranker.evaluation.selectors import (
    PLAYLIST_METRIC_NAMES,
    TRACK_METRIC_NAMES,
    evaluation_for_version,
    evaluation_versions,
    model_metrics,
)
from ranker.training.selectors import live_version, model_get, model_list

from ..components import empty_figure, graph, page, stat_cards, styled, table

PATH = "/models"
TITLE = "Models"
INTRO = ("Every trained ranker version, newest first: its training curves (BPR loss and validation hit rate per "
         "epoch), its RecSys 2018 evaluation beside the baselines, and any two versions compared.")
MAX_VERSIONS = 50
VERSION_COLUMNS = ("version", "status", "created", "epochs", "val_hit_rate_50", "final_loss", "bpr_seconds",
                   "users", "tracks", "evaluated", "r_precision", "ndcg", "against", "r_precision vs live",
                   "ndcg vs live")
COMPARISON_COLUMNS = ("metric", "live recipe", "this version", "diff", "95 % interval", "verdict")
CATEGORY_METRICS = {"r_precision": "R-precision", "r_precision_artist": "R-precision (artist credit)",
                    "ndcg": "NDCG", "ndcg_g": "NDCG (g)", "clicks": "clicks"}
COMPARE_COLUMNS = ("metric", "A", "B", "delta (B − A)", "change")
NO_MODEL = "No model version yet: train one (manage.py train_ranker --promote, or the weekly_refresh job)."


def layout(version: str | None = None, a: str | None = None, b: str | None = None, metric: str = "r_precision",
           **_: Any) -> html.Div:
    docs = model_list(limit=MAX_VERSIONS)
    live = live_version()
    evaluated = evaluation_versions()
    versions = [d["_id"] for d in docs]
    chosen = version if version in versions else (live if live in versions else (versions[0] if versions else None))
    b = b if b in versions else (versions[0] if versions else None)
    a = a if a in versions else next((v for v in versions if v != b), b)
    metric = metric if metric in CATEGORY_METRICS else "r_precision"
    options = [{"label": _label(d, live), "value": d["_id"]} for d in docs]
    live_doc = next((d for d in docs if d["_id"] == live), None)
    stats = [("versions", len(docs)), ("live version", live or "none"),
             ("live val hit rate", ((live_doc or {}).get("metrics") or {}).get("val_hit_rate_50")),
             ("evaluated versions", len(evaluated & set(versions)))]
    empty = [html.P(NO_MODEL, id="models-empty", className="note")] if not docs else []
    return page(
        TITLE, INTRO,
        stat_cards(stats),
        *empty,
        html.Div([
            html.Label("Version", htmlFor="models-version"),
            dcc.Dropdown(id="models-version", options=options, value=chosen, clearable=False,
                         placeholder="no version yet", style={"minWidth": "28rem"}),
            html.Label("Per-category metric", htmlFor="models-eval-metric"),
            dcc.Dropdown(id="models-eval-metric", value=metric, clearable=False, style={"minWidth": "16rem"},
                         options=[{"label": label, "value": key} for key, label in CATEGORY_METRICS.items()]),
        ], className="controls"),
        graph(curves_figure(chosen), id="models-curves", main=True, height=380),
        html.Div(version_detail(chosen, metric), id="models-detail"),
        html.H3("All versions"),
        table(version_rows(docs, live, evaluated), VERSION_COLUMNS, id="models-table", page_size=10),
        html.H3("Compare two versions"),
        html.Div([
            html.Label("A", htmlFor="models-compare-a"),
            dcc.Dropdown(id="models-compare-a", options=options, value=a, clearable=False,
                         style={"minWidth": "24rem"}),
            html.Label("B", htmlFor="models-compare-b"),
            dcc.Dropdown(id="models-compare-b", options=options, value=b, clearable=False,
                         style={"minWidth": "24rem"}),
        ], className="controls"),
        html.Div(compare_view(a, b), id="models-compare"),
    )


def register(app: Dash) -> None:
    app.callback(Output("models-curves", "figure"), Output("models-detail", "children"),
                 Input("models-version", "value"), Input("models-eval-metric", "value"))(version_view)
    app.callback(Output("models-compare", "children"), Input("models-compare-a", "value"),
                 Input("models-compare-b", "value"))(compare_view)


# -- callbacks --------------------------------------------------------------------------------------------------

def version_view(version: str | None, metric: str | None = "r_precision") -> tuple[go.Figure, Any]:
    """The chosen version's training curves and its details (summary, evaluation tables)."""
    return styled(curves_figure(version), 380), version_detail(version, metric or "r_precision")


def compare_view(a: str | None, b: str | None) -> Any:
    """Versions ``a`` and ``b`` side by side: each number, and B − A."""
    if not a or not b:
        return html.P("Two versions are needed to compare: train another one.", className="note")
    if a == b:
        return html.P(f"A and B are both {a}: pick two different versions.", className="note")
    rows = compare_rows(a, b)
    if not rows:
        return html.P(f"Unknown version {a if model_get(version=a) is None else b}.", className="note")
    shown = [{**row, **{key: "—" for key in ("A", "B", "delta (B − A)", "change") if row[key] is None}}
             for row in rows]
    return html.Div([table(shown, COMPARE_COLUMNS, id="models-compare-table", page_size=30),
                     html.P("— : the version has no such number (no evaluation recorded for it, or trained before "
                            "the figure was kept).", className="note")])


# -- views ------------------------------------------------------------------------------------------------------

def compare_rows(a: str, b: str) -> list[dict[str, Any]]:
    """One row per metric: ``A``, ``B``, ``delta (B − A)`` and the relative ``change`` (None where either is
    missing); empty when either version is unknown."""
    left, right = model_metrics(version=a), model_metrics(version=b)
    if not left or not right:
        return []
    rows = []
    for name in left:
        x, y = left[name], right.get(name)
        both = x is not None and y is not None
        delta = (y - x) if both else None
        change = f"{delta / x:+.1%}" if both and x else None
        rows.append({"metric": name, "A": x, "B": y, "delta (B − A)": delta, "change": change})
    return rows


def curves_figure(version: str | None) -> go.Figure:
    """BPR's loss and validation hit rate per epoch, as training recorded them in the registry."""
    if not version:
        return empty_figure(NO_MODEL)
    doc = model_get(version=version)
    if doc is None:
        return empty_figure(f"No model version {version}.")
    history = doc.get("history") or []
    if not history:
        return empty_figure(f"Version {version} has no per-epoch history (it was trained before training "
                            "recorded one).")
    val_k = ((doc.get("metrics") or {}).get("val_k")) or 50
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1)
    epochs = [h["epoch"] for h in history]
    fig.add_scatter(x=epochs, y=[h["loss"] for h in history], mode="lines+markers", name="loss", row=1, col=1)
    validated = [h for h in history if h.get("val_hit_rate_50") is not None]
    fig.add_scatter(x=[h["epoch"] for h in validated], y=[h["val_hit_rate_50"] for h in validated],
                    mode="lines+markers", name="validation hit rate", row=1, col=2)
    best = (doc.get("metrics") or {}).get("val_hit_rate_50")
    if best is not None:
        fig.add_hline(y=best, line_dash="dot", row=1, col=2, annotation_text=f"kept: {best:.4f}")
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="BPR training loss", row=1, col=1)
    fig.update_yaxes(title_text=f"validation hit rate @ {val_k}", row=1, col=2)
    fig.update_layout(title=f"Training curves of {version} ({doc.get('status')}): loss and validation per epoch",
                      showlegend=False)
    return fig


def version_detail(version: str | None, metric: str = "r_precision") -> Any:
    """What the version is (status, data, parameters) and its evaluation tables, or why there are none."""
    if not version:
        return html.P(NO_MODEL, className="note")
    doc = model_get(version=version)
    if doc is None:
        return html.P(f"No model version {version}.", className="note")
    metrics = doc.get("metrics") or {}
    data = doc.get("data") or {}
    params = doc.get("params") or {}
    status = doc.get("status")
    summary = html.Div([
        html.H3(f"Version {version}: {status}{' (serving now)' if status == 'live' else ''}"),
        stat_cards([("val hit rate @50", metrics.get("val_hit_rate_50")), ("BPR epochs", metrics.get("epochs")),
                    ("BPR seconds", metrics.get("seconds")), ("users", data.get("users")),
                    ("tracks", data.get("items")), ("positives", data.get("positives"))]),
        html.P(f"{doc.get('recommender') or 'blend'}: knn × {params.get('knn_weight')}, als × "
               f"{params.get('als_weight')}, bpr × {params.get('bpr_weight')}; bpr {params.get('bpr')}; "
               f"als {params.get('als')}; device {doc.get('device')}.", className="note"),
    ])
    return html.Div([summary, evaluation_view(version, metric)])


def evaluation_view(version: str, metric: str = "r_precision") -> Any:
    report = evaluation_for_version(version=version)
    if report is None:
        return html.P(f"No evaluation recorded for version {version}: the training jobs evaluate every new version "
                      "unless EVAL_SAMPLE_PLAYLISTS is 0, and manage.py evaluate scores the live one on the RecSys "
                      "2018 categories.", className="note", id="models-no-evaluation")
    split = report.get("split") or {}
    overall, categories, playlists = evaluation_tables(report, metric)
    return html.Div([
        html.H3("Evaluation"),
        html.P(f"Recorded {_when(report.get('created_at'))}: {split.get('test_size')} test playlists "
               f"over {len(split.get('categories') or [])} categories (split seed {split.get('seed')}, "
               f"{split.get('playlists')} playlists), 500 picks each; every method retrained on the training part. "
               f"{_methods_note(report)}", className="note"),
        *comparison_view(report),
        html.H4("Track picks, overall"),
        table(overall, ("method", *TRACK_METRIC_NAMES, "train_s"), id="models-eval-overall"),
        html.H4(f"{CATEGORY_METRICS.get(metric, metric)} per seed category"),
        table(categories, ("category", *[row["method"] for row in overall]), id="models-eval-categories"),
        *([html.H4("Playlist picks (10 per user)"),
           table(playlists, ("method", *PLAYLIST_METRIC_NAMES), id="models-eval-playlists")] if playlists else []),
    ])


def _methods_note(report: dict[str, Any]) -> str:
    served = report.get("served")
    if report.get("kind") != "version":
        return f"Served: {served}; the others are its parts and the baselines."
    note = (f"The playlists were sampled from the store; {served} is the served recipe with this version's "
            "parameters")
    live = report.get("live_version")
    return f"{note}, live the same recipe with those of {live}, the version live then." if live else f"{note}."


def comparison_view(report: dict[str, Any]) -> list[Any]:
    """The like-for-like comparison with the live recipe, when the report has one: nothing otherwise."""
    rows = comparison_rows(report.get("comparison") or {})
    if not rows:
        return []
    return [html.H4(f"Against the live version {report.get('live_version')}, on the same test playlists"),
            table(rows, COMPARISON_COLUMNS, id="models-eval-comparison"),
            html.P("diff: this version − the live recipe, mean over the test playlists; the 95 % interval is the "
                   "paired bootstrap over those playlists. A version whose interval lies wholly below zero is not "
                   "promoted unless forced.", className="note")]


def comparison_rows(comparison: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per compared metric: both means, the difference, its interval and what it says."""
    return [{"metric": metric, "live recipe": d.get("a"), "this version": d.get("b"), "diff": _signed(d.get("diff")),
             "95 % interval": _interval(d), "verdict": _verdict(d)} for metric, d in comparison.items()]


def evaluation_tables(report: dict[str, Any], metric: str = "r_precision"
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of the overall table (one per method, the served one first), of the per-category table (the
    ``metric`` of each method, overall last) and of the playlist-picks table (served, then the baseline)."""
    methods = report.get("methods") or {}
    served = report.get("served")
    order = sorted(methods, key=lambda name: name != served)  # the served method first, then as recorded
    names = {m: f"{m} (served)" if m == served else m for m in order}
    overall = [{"method": names[m], **{k: methods[m].get("overall", {}).get(k) for k in TRACK_METRIC_NAMES},
                "train_s": methods[m].get("train_seconds")} for m in order]
    cats = list(dict.fromkeys(c for m in order for c in (methods[m].get("per_category") or {})))
    categories = [{"category": cat, **{names[m]: (methods[m].get("per_category") or {}).get(cat, {}).get(metric)
                                       for m in order}} for cat in cats]
    categories.append({"category": "overall", **{names[m]: methods[m].get("overall", {}).get(metric)
                                                 for m in order}})
    served_pl = report.get("served_playlists") or "buddies"
    pl = report.get("playlists") or {}
    playlists = [{"method": f"{m} (served)" if m == served_pl else m,
                  **{k: pl[m].get(k) for k in PLAYLIST_METRIC_NAMES}}
                 for m in sorted(pl, key=lambda name: name != served_pl)]
    return overall, categories, playlists


def version_rows(docs: list[dict[str, Any]], live: str | None, evaluated: set[str]) -> list[dict[str, Any]]:
    """One row per version; its evaluation figures come from the verdict on its registry document (the weekly
    evaluation's), so the table reads no report."""
    rows = []
    for doc in docs:
        metrics = doc.get("metrics") or {}
        history = doc.get("history") or []
        data = doc.get("data") or {}
        verdict = doc.get("evaluation") or {}
        overall, comparison = verdict.get("overall") or {}, verdict.get("comparison") or {}
        rows.append({"version": doc["_id"], "status": f"{doc.get('status')}{' ★' if doc['_id'] == live else ''}",
                     "created": doc.get("created_at"), "epochs": metrics.get("epochs"),
                     "val_hit_rate_50": metrics.get("val_hit_rate_50"),
                     "final_loss": history[-1]["loss"] if history else None, "bpr_seconds": metrics.get("seconds"),
                     "users": data.get("users"), "tracks": data.get("items"), "evaluated": doc["_id"] in evaluated,
                     "r_precision": overall.get("r_precision"), "ndcg": overall.get("ndcg"),
                     "against": verdict.get("against"),
                     **{f"{m} vs live": _difference(d) for m, d in comparison.items()}})
    return rows


def _label(doc: dict[str, Any], live: str | None) -> str:
    return f"{doc['_id']} ({doc.get('status')}{', serving' if doc['_id'] == live else ''})"


def _signed(value: float | None) -> str | None:
    return None if value is None else f"{value:+.4f}"


def _interval(d: dict[str, Any]) -> str | None:
    if d.get("low") is None or d.get("high") is None:
        return None
    return f"[{d['low']:+.4f}, {d['high']:+.4f}]"


def _verdict(d: dict[str, Any]) -> str:
    if d.get("high") is not None and d["high"] < 0:
        return "worse"
    if d.get("low") is not None and d["low"] > 0:
        return "better"
    return "within noise"


def _difference(d: dict[str, Any]) -> str:
    """A comparison in one cell: the difference, its interval and the verdict."""
    return f"{_signed(d.get('diff'))} {_interval(d)} ({_verdict(d)})"


def _when(moment: Any) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment is not None else "at an unknown time"
