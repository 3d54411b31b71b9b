"""Plotly figures over the reporting views and their HTML rendering, plus ydata-profiling
reports of each layer's main table (see docs/reporting.md).

``render_reports(settings)`` writes everything into ``$STRATA_HOME/reports``: what
``strata report`` and the presentation task call.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strata.settings import Settings


def render_reports(settings: Settings, **options: Any) -> list[Path]:
    """See ``reporting.render.render_reports`` (imported lazily: pandas and plotly are heavy,
    and Airflow imports DAG files that mention this package often)."""
    from reporting.render import render_reports as render

    return render(settings, **options)


__all__ = ["render_reports"]
