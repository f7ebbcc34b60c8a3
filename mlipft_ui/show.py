"""Plots that can be exported: PNG from the chart's camera button, HTML from a button below."""

from __future__ import annotations

import plotly.graph_objects as go

from mlipft_ui.plots import export_config


def chart(where, fig: go.Figure, name: str, key: str | None = None) -> None:
    """Draw ``fig`` in ``where`` (``st`` or a column) with a self-contained HTML download.

    The HTML (plotly.js embedded, so it opens offline) is produced only when clicked.
    """
    where.plotly_chart(fig, config=export_config(name), key=key)
    where.download_button("Download as HTML", data=lambda: fig.to_html(include_plotlyjs=True),
                          file_name=f"{name}.html", mime="text/html", on_click="ignore",
                          key=f"html-{key or name}", icon=":material/download:")
