"""Engagement: what users do with their picks, from the feedback events joined to the served pick lists.

- Listening time on organic playlist picks (plays whose ``rec_id`` joins a served playlist pick list) against
  track picks and all other listening.
- Skip rate per day (skips ÷ plays and skips, by the event's UTC day, as the A/B results count it) and follow
  rate per day (playlist pick lists served that day that got at least one follow ÷ playlist pick lists served
  that day: a follow is credited to the day its list was served, however late it came).
- A/B results per variant with 95 % confidence intervals (``ranker.experiments.experiment_results``).
- Per-variant daily curves of the chosen experiment (follow-through, listening minutes per user, skip rate), from
  its playlist pick lists served in the last ``VARIANT_WINDOW_DAYS`` days and the plays and skips that answer them;
  a list's follows and plays are credited to the day it was served. Simulated traffic (the credentials of
  ``SIMULATED_CREDENTIALS``, which events and served lists record) can be left out or shown alone.
- Score drift between the two newest model versions: the score histograms training records, and KL(new‖old).

Speed: **cached aggregates**, not an incremental rollup. A page view reads one summary memoised per process for
``CACHE_SECONDS`` (``dashboard.cache.cached``); recomputing it is a handful of server-side ``$group`` queries (events
per day and kind, plays and follows per ``rec_id``) plus an ``_id`` lookup of the pick lists that got feedback, so
the events never travel to the page and are grouped at most once a minute per process, never per view. The A/B
results (which read every served list of the experiment, then its events by ``rec_id``: an index on
``events.rec_id`` keeps that from scanning the events once per hundred lists) are memoised the same way, per
experiment; the drift reads two registry documents. A rollup collection kept current by a job would make the
cold view cheap too, but needs a writer, a schedule and a repair path for late events; at the volumes the API takes
today a minute-old summary is what an analyst needs, and the rollup is the next step if the cold ``$group`` ever
passes a second.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, dcc, html
from django.conf import settings
from plotly.subplots import make_subplots

from ingestion.feedback.selectors import event_daily_counts, event_totals_by_rec, event_totals_for_recs
from ranker.experiments.assign import experiment_results, experiments
from ranker.experiments.selectors import served_daily_counts, served_experiment_lists, served_get_many
from ranker.training.selectors import histogram_version_count, score_drift

from ..cache import cached
from ..components import empty_figure, graph, page, stat_cards, styled, table, table_data

PATH = "/engagement"
TITLE = "Engagement"
INTRO = ("What users do with their picks: listening on organic playlist picks against the rest, skip and follow "
         "rates per day, the A/B experiments with 95 % confidence intervals, and how the served scores drifted "
         "between the last two model versions. Aggregates are at most a minute old.")
CACHE_SECONDS = 60
GROUPS = ("organic playlist picks", "track picks", "other playlists")
AB_COLUMNS = ("variant", "users", "picks_served", "click_through", "click_through_ci", "skip_rate", "skip_rate_ci",
              "listening_minutes_per_user", "listening_minutes_ci", "playlists_served", "follow_through",
              "follow_through_ci", "follow_through_diff", "follow_through_diff_ci", "listening_minutes_diff",
              "listening_minutes_diff_ci")
NO_EVENTS = "No feedback events yet: apps post plays, skips, likes and follows to /api/v1/events."
VARIANT_WINDOW_DAYS = 30  # the per-variant curves cover this many days back
VARIANT_MAX_LISTS = 200_000  # ... and at most this many pick lists (the newest): the page's work stays bounded
TRAFFIC = {"all": "all traffic", "real": "without simulated", "simulated": "simulated only"}
VARIANT_METRICS = (("follow_through", "Follow-through (lists with a follow ÷ playlist lists served)", ".0%"),
                   ("minutes_per_user", "Listening minutes per user", ".1f"),
                   ("skip_rate", "Skip rate (skips ÷ plays and skips)", ".0%"))


def layout(experiment: str | None = None, **_: Any) -> html.Div:
    summary = engagement_summary()
    names = list(experiments())
    chosen = experiment if experiment in names else (names[0] if names else None)
    ab_figure, ab_rows = ab_view(chosen)
    drift_figure, drift_text, kl = drift_view()
    listening = summary["listening"]
    minutes = sum(g["ms_played"] for g in listening.values()) / 60_000
    organic = listening[GROUPS[0]]["ms_played"] / 60_000
    totals = summary["totals"]
    stats = [("events", sum(totals.values())), ("plays", totals.get("play", 0)), ("skips", totals.get("skip", 0)),
             ("follows", totals.get("follow", 0)), ("listening minutes", round(minutes, 1)),
             ("organic share of listening", round(organic / minutes, 4) if minutes else None),
             ("score drift KL(new‖old)", round(kl, 6) if kl is not None else None)]
    empty = [html.P(NO_EVENTS, id="engagement-empty", className="note")] if not totals else []
    return page(
        TITLE, INTRO,
        stat_cards(stats),
        *empty,
        graph(rates_figure(summary), id="engagement-rates", main=True, height=360),
        html.H3("Listening time: organic playlist picks against other listening"),
        graph(listening_figure(summary), id="engagement-listening", height=320),
        table(listening_rows(summary), ("group", "plays", "minutes", "minutes_per_play"),
              id="engagement-listening-table"),
        html.H3("A/B experiments"),
        html.Div([
            html.Label("Experiment", htmlFor="engagement-experiment"),
            dcc.Dropdown(id="engagement-experiment", options=[{"label": n, "value": n} for n in names],
                         value=chosen, clearable=False, placeholder="no experiment configured",
                         style={"minWidth": "20rem"}),
        ], className="controls"),
        graph(ab_figure, id="engagement-ab", height=340),
        table(ab_rows, AB_COLUMNS, id="engagement-ab-table"),
        html.H3("Per variant, day by day"),
        dcc.RadioItems(id="engagement-traffic", options=[{"label": v, "value": k} for k, v in TRAFFIC.items()],
                       value="all", inline=True, className="controls"),
        graph(variant_days_figure(chosen, "all"), id="engagement-variant-days", height=620),
        html.H3("Score drift between the last two model versions"),
        html.P(drift_text, id="engagement-drift-kl", className="note"),
        graph(drift_figure, id="engagement-drift", height=340),
    )


def register(app: Dash) -> None:
    app.callback(Output("engagement-ab", "figure"), Output("engagement-ab-table", "rowData"),
                 Input("engagement-experiment", "value"))(ab_update)
    app.callback(Output("engagement-variant-days", "figure"), Input("engagement-experiment", "value"),
                 Input("engagement-traffic", "value"))(variant_days_update)


# -- callbacks --------------------------------------------------------------------------------------------------

def ab_update(experiment: str | None) -> tuple[go.Figure, list[dict[str, Any]]]:
    """The chosen experiment's results: the figure and the table's data."""
    figure, rows = ab_view(experiment)
    return styled(figure, 340), table_data(rows, AB_COLUMNS)


def variant_days_update(experiment: str | None, traffic: str | None) -> go.Figure:
    """The chosen experiment's per-variant daily curves, for the chosen traffic."""
    return styled(variant_days_figure(experiment, traffic or "all"), 620)


# -- aggregates -------------------------------------------------------------------------------------------------

@cached(CACHE_SECONDS)
def engagement_summary() -> dict[str, Any]:
    """Every engagement aggregate of the page, from grouped queries (see the module docstring)."""
    daily = event_daily_counts()
    plays = event_totals_by_rec(kind="play")
    follows = event_totals_by_rec(kind="follow")
    served = served_get_many(rec_ids=sorted({r for r in (*plays, *follows) if r}))
    listening = {group: {"plays": 0, "ms_played": 0} for group in GROUPS}
    for rec_id, total in plays.items():
        kind = (served.get(rec_id) or {}).get("kind") if rec_id else None
        group = GROUPS[0] if kind == "playlists" else GROUPS[1] if kind == "tracks" else GROUPS[2]
        listening[group]["plays"] += total["events"]
        listening[group]["ms_played"] += total["ms_played"]
    per_day: dict[str, Counter] = {}
    totals: Counter = Counter()
    for row in daily:
        per_day.setdefault(row["day"], Counter())[row["kind"]] += row["events"]
        totals[row["kind"]] += row["events"]
    skip_days = [d for d in sorted(per_day) if per_day[d]["play"] + per_day[d]["skip"]]
    followed = Counter(f"{served[r]['ts']:%Y-%m-%d}" for r in follows
                       if r in served and served[r].get("kind") == "playlists" and served[r].get("ts"))
    lists = served_daily_counts(kind="playlists")
    follow_days = sorted(d for d in lists if lists[d])
    return {
        "totals": dict(totals),
        "listening": listening,
        "skip": {"days": skip_days, "skips": [per_day[d]["skip"] for d in skip_days],
                 "plays": [per_day[d]["play"] for d in skip_days],
                 "rate": [per_day[d]["skip"] / (per_day[d]["play"] + per_day[d]["skip"]) for d in skip_days]},
        "follow": {"days": follow_days, "followed": [followed[d] for d in follow_days],
                   "lists": [lists[d] for d in follow_days],
                   "rate": [followed[d] / lists[d] for d in follow_days]},
    }


@cached(CACHE_SECONDS)
def variant_days(experiment: str, traffic: str = "all") -> dict[str, dict[str, list[Any]]]:
    """Per variant of ``experiment`` and UTC day its playlist pick lists were served: ``lists``, ``followed`` (lists
    with a follow), ``follow_through``, ``users`` (distinct users served), ``minutes_per_user`` (the plays answering
    those lists), ``plays``, ``skips``, ``skip_rate``. ``traffic``: "all", "real" (without
    ``SIMULATED_CREDENTIALS``) or "simulated" (those alone). Two bounded reads: the lists of the last
    ``VARIANT_WINDOW_DAYS`` days (at most ``VARIANT_MAX_LISTS``), and their plays and skips grouped per list."""
    since = datetime.now(UTC) - timedelta(days=VARIANT_WINDOW_DAYS)
    simulated = list(settings.SIMULATED_CREDENTIALS)
    if traffic == "simulated" and not simulated:
        return {}
    lists = served_experiment_lists(experiment=experiment, since=since, limit=VARIANT_MAX_LISTS,
                                    credentials=simulated if traffic != "all" else None, exclude=traffic == "real")
    answers = event_totals_for_recs(rec_ids=[doc["_id"] for doc in lists])
    cells: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"lists": 0, "followed": 0, "users": set(), "ms": 0, "plays": 0, "skips": 0})
    for doc in lists:
        cell = cells[(doc["variant"], f"{doc['ts']:%Y-%m-%d}")]
        mine = answers.get(doc["_id"], {})
        cell["lists"] += 1
        cell["followed"] += bool(doc.get("followed"))
        cell["users"].add(doc["user"])
        cell["plays"] += mine.get("play", {}).get("events", 0)
        cell["ms"] += mine.get("play", {}).get("ms_played", 0)
        cell["skips"] += mine.get("skip", {}).get("events", 0)
    out: dict[str, dict[str, list[Any]]] = {}
    for variant in sorted({v for v, _ in cells}):
        days = sorted(d for v, d in cells if v == variant)
        rows = [cells[(variant, d)] for d in days]
        out[variant] = {
            "days": days, "lists": [r["lists"] for r in rows], "followed": [r["followed"] for r in rows],
            "follow_through": [r["followed"] / r["lists"] for r in rows],
            "users": [len(r["users"]) for r in rows],
            "minutes_per_user": [r["ms"] / 60_000 / len(r["users"]) for r in rows],
            "plays": [r["plays"] for r in rows], "skips": [r["skips"] for r in rows],
            "skip_rate": [r["skips"] / (r["plays"] + r["skips"]) if r["plays"] + r["skips"] else None for r in rows]}
    return out


@cached(CACHE_SECONDS)
def ab_results(name: str) -> dict[str, Any] | None:
    """``experiment_results`` of a configured experiment, memoised (one kept document per variant, flushing this
    process's served log first)."""
    return experiment_results(name=name) if name in experiments() else None


# -- views ------------------------------------------------------------------------------------------------------

def rates_figure(summary: dict[str, Any]) -> go.Figure:
    skip, follow = summary["skip"], summary["follow"]
    if not skip["days"] and not follow["days"]:
        return empty_figure(NO_EVENTS)
    fig = go.Figure()
    fig.add_scatter(x=skip["days"], y=skip["rate"], mode="lines+markers", name="skip rate",
                    customdata=list(zip(skip["skips"], skip["plays"], strict=True)),
                    hovertemplate="%{x}: %{y:.1%} (%{customdata[0]} skips, %{customdata[1]} plays)<extra></extra>")
    fig.add_scatter(x=follow["days"], y=follow["rate"], mode="lines+markers", name="follow rate",
                    customdata=list(zip(follow["followed"], follow["lists"], strict=True)),
                    hovertemplate="%{x}: %{y:.1%} (%{customdata[0]} of %{customdata[1]} playlist pick lists "
                                  "followed)<extra></extra>")
    fig.update_layout(title="Skip rate (of plays and skips) and follow rate (of playlist pick lists served) per day",
                      yaxis_title="share", yaxis_tickformat=".0%", yaxis_rangemode="tozero", xaxis_title="day (UTC)",
                      xaxis_type="category")
    return fig


def listening_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for group, total in summary["listening"].items():
        minutes = total["ms_played"] / 60_000
        rows.append({"group": group, "plays": total["plays"], "minutes": round(minutes, 3),
                     "minutes_per_play": round(minutes / total["plays"], 3) if total["plays"] else None})
    return rows


def listening_figure(summary: dict[str, Any]) -> go.Figure:
    rows = listening_rows(summary)
    if not any(r["plays"] for r in rows):
        return empty_figure("No plays recorded yet.")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Listening minutes", "Minutes per play"))
    groups = [r["group"] for r in rows]
    fig.add_bar(x=groups, y=[r["minutes"] for r in rows], name="minutes", row=1, col=1,
                text=[f"{r['plays']} plays" for r in rows])
    fig.add_bar(x=groups, y=[r["minutes_per_play"] or 0 for r in rows], name="minutes per play", row=1, col=2)
    fig.update_layout(showlegend=False)
    return fig


AB_METRICS = (("click_through", "click_through_ci", "Click-through"), ("skip_rate", "skip_rate_ci", "Skip rate"),
              ("listening_minutes_per_user", "listening_minutes_ci", "Listening minutes per user"),
              ("follow_through", "follow_through_ci", "Follow-through"))


def ab_view(experiment: str | None) -> tuple[go.Figure, list[dict[str, Any]]]:
    """Per variant of ``experiment``: bars of click-through, skip rate and listening minutes per user with their
    95 % intervals as error bars, and the table rows."""
    if not experiment:
        return empty_figure("No A/B experiment is configured (setting EXPERIMENTS)."), []
    results = ab_results(experiment)
    if results is None:
        return empty_figure(f"No experiment {experiment} is configured."), []
    variants = results["variants"]
    rows = [{"variant": name, **values} for name, values in variants.items()]
    if not any(v["picks_served"] for v in variants.values()):
        return empty_figure(f"No pick lists served in experiment {experiment} yet."), rows
    fig = make_subplots(rows=1, cols=len(AB_METRICS),
                        subplot_titles=[f"{title} (95 % CI)" for _, _, title in AB_METRICS])
    names = list(variants)
    for col, (key, ci_key, title) in enumerate(AB_METRICS, start=1):
        values = [variants[n].get(key, 0.0) for n in names]
        cis = [variants[n].get(ci_key) for n in names]
        fig.add_bar(x=names, y=values, name=title, row=1, col=col,
                    error_y={"type": "data", "symmetric": False,
                             "array": [ci[1] - v if ci else 0 for v, ci in zip(values, cis, strict=True)],
                             "arrayminus": [v - ci[0] if ci else 0 for v, ci in zip(values, cis, strict=True)]})
    fig.update_layout(showlegend=False)
    return fig, rows


def variant_days_figure(experiment: str | None, traffic: str = "all") -> go.Figure:
    """Three stacked panels (follow-through, minutes per user, skip rate), one line per variant, by served day."""
    if not experiment or experiment not in experiments():
        return empty_figure("No A/B experiment is configured (setting EXPERIMENTS).")
    curves = variant_days(experiment, traffic)
    if not curves:
        return empty_figure(f"No playlist pick lists served in experiment {experiment} in the last "
                            f"{VARIANT_WINDOW_DAYS} days ({TRAFFIC.get(traffic, traffic)}).")
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=[title for _, title, _ in VARIANT_METRICS])
    colours = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
    for n, (variant, c) in enumerate(curves.items()):
        for row, (key, _, fmt) in enumerate(VARIANT_METRICS, start=1):
            fig.add_scatter(x=c["days"], y=c[key], mode="lines+markers", name=variant, legendgroup=variant,
                            showlegend=row == 1, line={"color": colours[n % len(colours)]}, row=row, col=1,
                            customdata=list(zip(c["lists"], c["followed"], c["users"], c["plays"], c["skips"],
                                                strict=True)),
                            hovertemplate=f"{variant} %{{x}}: %{{y:{fmt}}} (%{{customdata[0]}} lists, "
                                          "%{customdata[1]} followed, %{customdata[2]} users, %{customdata[3]} "
                                          "plays, %{customdata[4]} skips)<extra></extra>")
    fig.update_yaxes(rangemode="tozero")
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(tickformat=".0%", row=3, col=1)
    fig.update_xaxes(type="category")
    fig.update_layout(legend_title_text=f"variant<br>({TRAFFIC.get(traffic, traffic)};<br>by the day<br>"
                                        "lists were served, UTC)")
    return fig


def drift_view() -> tuple[go.Figure, str, float | None]:
    """Both versions' score histograms (share of scores per bin) and a line with KL(new‖old)."""
    drift = score_drift()
    if drift is None:
        have = histogram_version_count()
        text = (f"The drift needs two model versions that recorded a score histogram at training time; "
                f"{have} so far.")
        return empty_figure(text), text, None
    new, old, kl = drift["new"], drift["old"], drift["kl"]
    edges = new["histogram"]["edges"]
    fig = go.Figure()
    for side, label in ((old, "old"), (new, "new")):
        counts = side["histogram"]["counts"]
        total = sum(counts) or 1
        fig.add_bar(x=_centres(side["histogram"]["edges"]), y=[n / total for n in counts],
                    name=f"{label}: {side['version']} ({side['status']})", opacity=0.6)
    if kl is None:
        text = f"{new['version']} and {old['version']} recorded their scores in different bins: no KL divergence."
    else:
        text = (f"KL(new‖old) = {kl:.6f} nats between {new['version']} (new) and {old['version']} (old): top-"
                f"{new['histogram'].get('k')} scores of {new['histogram'].get('users')} sampled users, "
                f"{len(edges) - 1} bins, {drift['pseudocount']:g} added to every bin.")
    fig.update_layout(barmode="overlay", title=text if kl is None else f"Served score distribution, KL(new‖old) = "
                      f"{kl:.4f}", xaxis_title=f"score ({new['histogram'].get('scale')})",
                      yaxis_title="share of scores", bargap=0.05)
    return fig, text, kl


def _centres(edges: list[float]) -> list[float]:
    return [round((lo + hi) / 2, 6) for lo, hi in zip(edges, edges[1:], strict=False)]
