"""The figures on small hand-made frames: traces, values, titles and axis labels."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd
import pytest

from reporting import figures

T0 = datetime(2019, 6, 1, 8, 0, tzinfo=UTC)


def _title(fig) -> str:  # type: ignore[no-untyped-def]
    return fig.layout.title.text


def test_updates_per_client_bars_sorted_with_period_in_title() -> None:
    totals = pd.DataFrame({"organization_id": ["org-b", "org-a", "org-c"], "updates": [5, 12, 5]})
    fig = figures.updates_per_client(totals, T0, datetime(2019, 6, 1, 10, 0, tzinfo=UTC))
    assert len(fig.data) == 1
    bar = fig.data[0]
    assert bar.type == "bar"
    assert list(bar.x) == ["org-a", "org-b", "org-c"]  # busiest first, ties by name
    assert list(bar.y) == [12, 5, 5]
    assert _title(fig) == "Location updates per client, 2019-06-01 08:00 to 2019-06-01 10:00 UTC"
    assert fig.layout.xaxis.title.text == "organization"
    assert fig.layout.yaxis.title.text == "location updates"


def test_updates_per_client_by_hour_one_stacked_trace_per_organization() -> None:
    hourly = pd.DataFrame(
        {
            "organization_id": ["org-a", "org-b", "org-a"],
            "hour_start_at": [T0.replace(hour=9), T0, T0],
            "updates": [3, 4, 7],
        }
    )
    fig = figures.updates_per_client_by_hour(hourly)
    assert [t.name for t in fig.data] == ["org-a", "org-b"]
    org_a = fig.data[0]
    assert list(org_a.y) == [7, 3]  # in hour order
    assert [pd.Timestamp(x).hour for x in org_a.x] == [8, 9]
    assert fig.layout.barmode == "stack"
    assert fig.layout.xaxis.title.text == "hour (UTC)"
    assert fig.layout.yaxis.title.text == "location updates"


def _path() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "organization_id": ["org-a"] * 4,
            "vehicle_id": ["v-1"] * 4,
            "position": [2, 1, 3, 4],
            "location_at": pd.to_datetime(
                ["2019-06-01T09:01Z", "2019-06-01T09:00Z", "2019-06-01T09:02Z", "2019-06-01T09:03Z"]
            ),
            "location_lat": [52.51, 52.50, 52.52, 52.53],
            "location_lng": [13.41, 13.40, 13.42, 13.43],
            "is_in_break": [False, False, True, False],
        }
    )


def test_latest_path_in_time_order_with_breaks_start_end_and_true_scale() -> None:
    fig = figures.latest_path(_path())
    names = [t.name for t in fig.data]
    assert names == ["path", "in a break (not counted as distance)", "start", "end"]
    path = fig.data[0]
    assert path.type == "scatter"  # plain axes: no tiles, nothing fetched from the network
    assert path.mode == "lines+markers"
    assert list(path.x) == [13.40, 13.41, 13.42, 13.43]  # ordered by position
    assert list(path.y) == [52.50, 52.51, 52.52, 52.53]
    assert list(path.marker.color) == [0.0, 1.0, 2.0, 3.0]  # minutes since the first update
    assert (list(fig.data[1].x), list(fig.data[1].y)) == ([13.42], [52.52])
    assert (fig.data[2].x[0], fig.data[3].x[0]) == (13.40, 13.43)
    assert fig.layout.yaxis.scaleanchor == "x"
    assert fig.layout.yaxis.scaleratio == pytest.approx(1 / math.cos(math.radians(52.515)))
    assert fig.layout.xaxis.title.text == "longitude (°)"
    assert fig.layout.yaxis.title.text == "latitude (°)"
    assert (
        _title(fig) == "Vehicle v-1 of top client org-a: 4 updates, 2019-06-01 09:00 to 09:03 UTC"
    )
    assert path.text[0] == "v-1 #1 at 09:00:00"
    assert not any(t.type.startswith(("scattermap", "scattergeo")) for t in fig.data)


def test_avg_distance_per_period_bars_per_organization_and_overall_line() -> None:
    periods = pd.DataFrame(
        {
            "operating_period_id": ["op_2", "op_1", "op_3"],
            "organization_id": ["org-a", "org-a", "org-b"],
            "start_at": [T0.replace(hour=9), T0, T0.replace(hour=10)],
            "vehicles": [2, 3, 1],
            "total_distance_km": [4.0, 9.0, 1.5],
            "avg_distance_km": [2.0, 3.0, 1.5],
        }
    )
    fig = figures.avg_distance_per_period(periods)
    assert [t.name for t in fig.data] == ["org-a", "org-b"]
    assert list(fig.data[0].x) == ["op_1", "op_2"]  # by start
    assert list(fig.data[0].y) == [3.0, 2.0]
    assert [list(c) for c in fig.data[0].customdata] == [[3, 9.0], [2, 4.0]]
    assert list(fig.layout.xaxis.categoryarray) == ["op_1", "op_2", "op_3"]
    (line,) = fig.layout.shapes
    assert line.y0 == line.y1 == pytest.approx(6.5 / 3)  # mean of the periods
    assert "2.167 km overall" in _title(fig)
    assert fig.layout.yaxis.title.text == "average distance per vehicle (km)"
    assert fig.layout.xaxis.title.text == "operating period"
    # the caller's overall answer (over more periods than drawn) wins
    assert "9.000 km overall" in _title(figures.avg_distance_per_period(periods, 9.0))


def _steps() -> pd.DataFrame:
    later = T0.replace(hour=9)
    return pd.DataFrame(
        {
            "run_id": ["r2", "r1", "r1", "r2"],
            "run_started_at": [later, T0, T0, later],
            "layer": ["staging", "raw", "staging", "raw"],
            "rows_out": [10, 100, 90, 20],
            "seconds": [0.5, 2.0, 1.25, 0.75],
        }
    )


def test_rows_through_layers_one_trace_per_layer_runs_in_time_order() -> None:
    fig = figures.rows_through_layers(_steps())
    assert [t.name for t in fig.data] == ["raw", "staging"]  # layer order, not alphabetical
    runs = list(fig.layout.xaxis.categoryarray)
    assert runs == ["06-01 08:00:00 r1", "06-01 09:00:00 r2"]
    raw = dict(zip(fig.data[0].x, fig.data[0].y, strict=True))
    assert raw == {runs[0]: 100, runs[1]: 20}
    assert fig.layout.barmode == "group"
    assert _title(fig) == "Rows through each layer per run"
    assert fig.layout.yaxis.title.text == "rows written"


def test_run_durations_grouped_seconds() -> None:
    fig = figures.run_durations(_steps())
    staging = dict(zip(fig.data[1].x, fig.data[1].y, strict=True))
    assert staging == {"06-01 08:00:00 r1": 1.25, "06-01 09:00:00 r2": 0.5}
    assert fig.layout.barmode == "group"  # lake and raw overlap in a run: never stacked
    assert fig.layout.yaxis.title.text == "seconds"


def test_rejected_by_reason_horizontal_largest_on_top() -> None:
    reasons = pd.DataFrame({"reason": ["malformed_json", "blank_line"], "rows": [3, 7]})
    fig = figures.rejected_by_reason(reasons)
    (bar,) = fig.data
    assert bar.orientation == "h"
    assert list(bar.y) == ["malformed_json", "blank_line"]  # plotly draws the last on top
    assert list(bar.x) == [3, 7]
    assert fig.layout.xaxis.title.text == "lines"
    assert fig.layout.yaxis.title.text == "reason"


def test_check_results_stacked_by_status_with_status_colors() -> None:
    checks = pd.DataFrame(
        {
            "layer": ["dwh", "staging", "staging", "semantic"],
            "status": ["pass", "pass", "warn", "fail"],
            "checks": [30, 12, 1, 2],
        }
    )
    fig = figures.check_results(checks)
    assert [t.name for t in fig.data] == ["pass", "warn", "fail"]
    assert dict(zip(fig.data[0].x, fig.data[0].y, strict=True)) == {"staging": 12, "dwh": 30}
    assert fig.data[2].marker.color == figures.STATUS_COLORS["fail"]
    assert list(fig.layout.xaxis.categoryarray) == ["staging", "semantic", "dwh"]


def test_checks_not_passing_table_lists_only_warnings_and_failures() -> None:
    checks = pd.DataFrame(
        {
            "layer": ["staging", "staging"],
            "table_name": ["stg_events", "stg_events"],
            "check_name": ["key_unique", "freshness"],
            "severity": ["fail", "warn"],
            "status": ["pass", "warn"],
            "offending_rows": [0, 4],
            "checked_at": [T0, T0],
        }
    )
    fig = figures.checks_not_passing(checks)
    (table,) = fig.data
    assert table.type == "table"
    assert [list(v) for v in table.cells.values][2] == ["freshness"]
    assert _title(fig) == "Checks not passing at the latest gates: 1"


@pytest.mark.parametrize(
    ("build", "frame"),
    [
        (
            lambda f: figures.updates_per_client(f, T0, T0),
            pd.DataFrame(columns=["organization_id", "updates"]),
        ),
        (figures.latest_path, _path().head(0)),
        (
            figures.avg_distance_per_period,
            pd.DataFrame(
                columns=[
                    "operating_period_id",
                    "organization_id",
                    "start_at",
                    "vehicles",
                    "total_distance_km",
                    "avg_distance_km",
                ]
            ),
        ),
        (figures.rows_through_layers, _steps().head(0)),
        (figures.rejected_by_reason, pd.DataFrame(columns=["reason", "rows"])),
        (figures.check_results, pd.DataFrame(columns=["layer", "status", "checks"])),
    ],
)
def test_empty_frames_say_no_data(build, frame) -> None:  # type: ignore[no-untyped-def]
    fig = build(frame)
    assert not fig.data
    assert fig.layout.annotations[0].text.startswith("no data: ")


def test_a_missing_column_is_named() -> None:
    with pytest.raises(
        ValueError, match=r"rejected_by_reason: the frame lacks column\(s\) \['rows'\]"
    ):
        figures.rejected_by_reason(pd.DataFrame({"reason": ["x"], "count": [1]}))
