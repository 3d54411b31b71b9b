"""Plotly figures over the reporting views and their HTML rendering (issue #7)."""
