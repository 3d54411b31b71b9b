"""The report figures: pure functions from a small DataFrame to a plotly Figure.

Nothing here reads a database or a file, so every figure is tested with a hand-made frame.
Each function documents the columns it expects (those of a ``dwh_db.reporting`` view or of
an ``audit`` query in ``reporting.queries``) and draws an explicit "no data" note instead of
an empty plot, so an empty report says why it is empty.
"""

from __future__ import annotations

import math
from datetime import datetime

import pandas as pd
import plotly.graph_objects as go

TEMPLATE = "plotly_white"
LAYER_ORDER = ("lake", "raw", "staging", "semantic", "dwh")
STATUS_COLORS = {"pass": "#2ca02c", "warn": "#ff7f0e", "fail": "#d62728"}
PATH_COLOR = "#1f77b4"
BREAK_COLOR = "#d62728"


def _require(df: pd.DataFrame, columns: tuple[str, ...], figure: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{figure}: the frame lacks column(s) {missing}; has {list(df.columns)}")


def _base(title: str, x_title: str, y_title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title},
        xaxis_title=x_title,
        yaxis_title=y_title,
        margin={"t": 80},
    )
    return fig


def _no_data(fig: go.Figure, what: str) -> go.Figure:
    fig.add_annotation(
        text=f"no data: {what}", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5
    )
    return fig


def _fmt(at: datetime) -> str:
    return pd.Timestamp(at).strftime("%Y-%m-%d %H:%M")


def _count_bars(
    fig: go.Figure,
    name: str,
    labels: pd.Series,
    counts: pd.Series,
    color: str,
    horizontal: bool = False,
) -> None:
    """One bar trace of counts with their values written on the bars."""
    values = counts.astype(int).tolist()
    fig.add_bar(
        name=name,
        x=values if horizontal else labels.astype(str).tolist(),
        y=labels.astype(str).tolist() if horizontal else values,
        orientation="h" if horizontal else "v",
        text=values,
        textposition="auto",
        marker_color=color,
    )


# ------------------------------------------------------------------ reporting views


def updates_per_client(totals: pd.DataFrame, start: datetime, end: datetime) -> go.Figure:
    """Bar chart: location updates per organization over [start, end).

    ``totals``: organization_id, updates (one row per organization).
    """
    _require(totals, ("organization_id", "updates"), "updates_per_client")
    fig = _base(
        f"Location updates per client, {_fmt(start)} to {_fmt(end)} UTC",
        "organization",
        "location updates",
    )
    if totals.empty:
        return _no_data(fig, "no location updates in this period")
    ordered = totals.sort_values(["updates", "organization_id"], ascending=[False, True])
    _count_bars(fig, "location updates", ordered["organization_id"], ordered["updates"], PATH_COLOR)
    fig.update_xaxes(type="category")
    return fig


def updates_per_client_by_hour(hourly: pd.DataFrame) -> go.Figure:
    """Stacked bars: location updates per hour (UTC), one trace per organization.

    ``hourly``: organization_id, hour_start_at, updates (rows of ``no_updates_per_client``).
    """
    _require(hourly, ("organization_id", "hour_start_at", "updates"), "updates_per_client_by_hour")
    fig = _base("Location updates per client and hour", "hour (UTC)", "location updates")
    if hourly.empty:
        return _no_data(fig, "no location updates in this period")
    for org, rows in hourly.sort_values("hour_start_at").groupby("organization_id", sort=True):
        fig.add_bar(
            name=str(org),
            x=pd.to_datetime(rows["hour_start_at"], utc=True).dt.tz_localize(None).tolist(),
            y=rows["updates"].astype(int).tolist(),
        )
    fig.update_layout(barmode="stack", legend_title_text="organization")
    return fig


def latest_path(path: pd.DataFrame) -> go.Figure:
    """The path of one vehicle, in time order, as longitude/latitude with equal ground scale.

    ``path``: rows of ``latest_updates_on_top1_client`` (organization_id, vehicle_id,
    position, location_at, location_lat, location_lng, is_in_break). No map tiles: a tile map
    needs the network for its background, and the path is what matters, so it is drawn on
    plain axes whose y/x scale ratio is 1/cos(latitude): a kilometre is as long north-south as
    east-west, and the shape of the route is true.
    """
    _require(
        path,
        ("organization_id", "vehicle_id", "position", "location_at", "location_lat")
        + ("location_lng", "is_in_break"),
        "latest_path",
    )
    if path.empty:
        fig = _base(
            "Latest path of the top client's busiest vehicle", "longitude (°)", "latitude (°)"
        )
        return _no_data(fig, "no location updates yet")
    rows = path.sort_values("position")
    org, vehicle = rows["organization_id"].iloc[0], rows["vehicle_id"].iloc[0]
    at = pd.to_datetime(rows["location_at"], utc=True)
    minutes = ((at - at.iloc[0]).dt.total_seconds() / 60).round(2)
    short = vehicle if len(str(vehicle)) <= 12 else f"{str(vehicle)[:8]}…"
    fig = _base(
        f"Vehicle {short} of top client {org}: {len(rows)} updates,"
        f" {_fmt(at.iloc[0])} to {at.iloc[-1]:%H:%M} UTC",
        "longitude (°)",
        "latitude (°)",
    )
    labels = [f"{vehicle} #{p} at {t:%H:%M:%S}" for p, t in zip(rows["position"], at, strict=True)]
    fig.add_scatter(
        name="path",
        x=rows["location_lng"].tolist(),
        y=rows["location_lat"].tolist(),
        mode="lines+markers",
        line={"color": PATH_COLOR, "width": 3},
        marker={
            "size": 7,
            "color": minutes.tolist(),
            "colorscale": "Viridis",
            "colorbar": {"title": {"text": "minutes"}},
        },
        text=labels,
        hovertemplate="%{text}<br>lat %{y:.5f}, lng %{x:.5f}<extra></extra>",
    )
    breaks = rows[rows["is_in_break"].astype(bool)]
    if not breaks.empty:
        fig.add_scatter(
            name="in a break (not counted as distance)",
            x=breaks["location_lng"].tolist(),
            y=breaks["location_lat"].tolist(),
            mode="markers",
            marker={"symbol": "x", "size": 10, "color": BREAK_COLOR},
        )
    for name, i, symbol in (("start", 0, "circle-open"), ("end", -1, "square-open")):
        fig.add_scatter(
            name=name,
            x=[rows["location_lng"].iloc[i]],
            y=[rows["location_lat"].iloc[i]],
            mode="markers",
            marker={"symbol": symbol, "size": 16, "color": "black", "line": {"width": 2}},
        )
    mean_lat = float(rows["location_lat"].mean())
    fig.update_yaxes(scaleanchor="x", scaleratio=1 / max(math.cos(math.radians(mean_lat)), 0.01))
    fig.update_layout(legend={"orientation": "h", "y": -0.15}, height=650)
    return fig


def avg_distance_per_period(periods: pd.DataFrame, overall_km: float | None = None) -> go.Figure:
    """The BI answer: average distance per vehicle for each operating period, and overall.

    ``periods``: rows of ``avg_distance_per_operating_period`` (operating_period_id,
    organization_id, start_at, vehicles, total_distance_km, avg_distance_km). ``overall_km``
    is the mean over all periods, computed over the whole view by the caller when ``periods``
    is only a bounded part of it; without it the mean of the rows given is used.
    """
    _require(
        periods,
        ("operating_period_id", "organization_id", "start_at", "vehicles", "avg_distance_km")
        + ("total_distance_km",),
        "avg_distance_per_period",
    )
    if periods.empty:
        fig = _base(
            "Average distance travelled per vehicle during an operating period",
            "operating period",
            "average distance per vehicle (km)",
        )
        return _no_data(fig, "no live operating period with location updates")
    if overall_km is None:
        overall_km = float(periods["avg_distance_km"].mean())
    fig = _base(
        f"Average distance travelled per vehicle during an operating period: {overall_km:.3f} km"
        " overall (mean of the periods)",
        "operating period",
        "average distance per vehicle (km)",
    )
    ordered = periods.sort_values(["start_at", "operating_period_id"])
    order = ordered["operating_period_id"].astype(str).tolist()
    for org, rows in ordered.groupby("organization_id", sort=True):
        fig.add_bar(
            name=str(org),
            x=rows["operating_period_id"].astype(str).tolist(),
            y=rows["avg_distance_km"].astype(float).round(3).tolist(),
            customdata=list(
                zip(
                    rows["vehicles"].astype(int),
                    rows["total_distance_km"].astype(float).round(3),
                    strict=True,
                )
            ),
            hovertemplate="%{x}<br>%{y:.3f} km per vehicle<br>%{customdata[0]} vehicles,"
            " %{customdata[1]} km in all<extra></extra>",
        )
    fig.add_hline(
        y=overall_km,
        line={"dash": "dash", "color": "black"},
        annotation_text=f"overall {overall_km:.3f} km",
        annotation_position="top left",
    )
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order)
    fig.update_layout(legend_title_text="organization")
    return fig


# ------------------------------------------------------------------ pipeline health


def _run_label(df: pd.DataFrame) -> pd.Series:
    started = pd.to_datetime(df["run_started_at"], utc=True)
    return started.dt.strftime("%m-%d %H:%M:%S") + " " + df["run_id"].astype(str).str[:8]


def _layer_rank(layer: str) -> int:
    return LAYER_ORDER.index(layer) if layer in LAYER_ORDER else len(LAYER_ORDER)


def _per_run_bars(steps: pd.DataFrame, value: str, title: str, y_title: str) -> go.Figure:
    """Grouped bars of ``value`` per run (oldest first), one trace per layer in layer order."""
    _require(steps, ("run_id", "run_started_at", "layer", value), title)
    fig = _base(title, "run (start UTC, run id)", y_title)
    if steps.empty:
        return _no_data(fig, "no pipeline run recorded")
    df = steps.assign(run=_run_label(steps)).sort_values("run_started_at")
    for layer in sorted(df["layer"].unique(), key=_layer_rank):
        rows = df[df["layer"] == layer].groupby("run", sort=False)[value].sum()
        values = rows.astype(int) if value.startswith("rows") else rows.astype(float).round(2)
        fig.add_bar(name=layer, x=list(rows.index), y=values.tolist())
    runs = list(dict.fromkeys(df["run"]))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=runs)
    fig.update_layout(barmode="group", legend_title_text="layer")
    return fig


def rows_through_layers(steps: pd.DataFrame) -> go.Figure:
    """Grouped bars: rows written by each layer, per run (oldest run first).

    ``steps``: run_id, run_started_at, layer, rows_out (one row per run and layer step).
    """
    return _per_run_bars(steps, "rows_out", "Rows through each layer per run", "rows written")


def run_durations(steps: pd.DataFrame) -> go.Figure:
    """Grouped bars: seconds each layer took, per run. Not stacked: within one run the lake
    ingest and the raw load overlap, so their times do not add up.

    ``steps``: run_id, run_started_at, layer, seconds.
    """
    return _per_run_bars(steps, "seconds", "Time each layer took per run", "seconds")


def rejected_by_reason(reasons: pd.DataFrame) -> go.Figure:
    """Horizontal bars: source lines quarantined, per reason (all runs).

    ``reasons``: reason, rows.
    """
    _require(reasons, ("reason", "rows"), "rejected_by_reason")
    fig = _base("Rejected (quarantined) source lines by reason", "lines", "reason")
    if reasons.empty:
        return _no_data(fig, "no line was rejected")
    ordered = reasons.sort_values(["rows", "reason"], ascending=[True, False])
    _count_bars(
        fig, "rejected lines", ordered["reason"], ordered["rows"], STATUS_COLORS["fail"], True
    )
    fig.update_yaxes(type="category")
    return fig


def check_results(checks: pd.DataFrame) -> go.Figure:
    """Stacked bars: checks per layer by status, at each layer's latest gate.

    ``checks``: layer, status (pass / warn / fail), checks (a count).
    """
    _require(checks, ("layer", "status", "checks"), "check_results")
    fig = _base("Check results at each layer's latest gate", "layer", "checks")
    if checks.empty:
        return _no_data(fig, "no quality gate has run")
    layers = sorted(checks["layer"].unique(), key=_layer_rank)
    for status, color in STATUS_COLORS.items():
        rows = checks[checks["status"] == status].groupby("layer")["checks"].sum()
        if rows.empty:
            continue
        fig.add_bar(
            name=status,
            x=[x for x in layers if x in rows.index],
            y=[int(rows[x]) for x in layers if x in rows.index],
            marker_color=color,
        )
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=layers)
    fig.update_layout(barmode="stack", legend_title_text="status")
    return fig


def checks_not_passing(checks: pd.DataFrame) -> go.Figure:
    """A table of the checks that warned or failed at each layer's latest gate.

    ``checks``: layer, table_name, check_name, severity, status, offending_rows, checked_at.
    """
    columns = ("layer", "table_name", "check_name", "severity", "status", "offending_rows")
    _require(checks, (*columns, "checked_at"), "checks_not_passing")
    bad = checks[checks["status"] != "pass"].sort_values(["layer", "table_name", "check_name"])
    fig = go.Figure()
    fig.update_layout(
        template=TEMPLATE,
        title={"text": f"Checks not passing at the latest gates: {len(bad)}"},
        margin={"t": 80},
        height=max(250, 120 + 28 * len(bad)),
    )
    fig.add_table(
        header={"values": [c.replace("_", " ") for c in columns], "align": "left"},
        cells={"values": [bad[c].astype(str).tolist() for c in columns], "align": "left"},
    )
    return fig
