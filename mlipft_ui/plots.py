"""Plotly figure builders shared by the pages (every plot in the app is plotly)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

#: plotly config: the camera button exports a PNG with a sensible name.
def export_config(name: str) -> dict:
    return {"displaylogo": False,
            "toImageButtonOptions": {"format": "png", "filename": name, "scale": 2}}


def parity(ref: np.ndarray, pred: np.ndarray, *, title: str, unit: str,
           labels: Sequence[str] | None = None, max_points: int = 20000) -> go.Figure:
    """Predicted against reference with the y = x line; large sets are subsampled evenly."""
    ref, pred = np.asarray(ref, float), np.asarray(pred, float)
    idx = np.arange(len(ref))
    if len(ref) > max_points:
        idx = np.linspace(0, len(ref) - 1, max_points).astype(int)
    lo = float(np.nanmin([ref.min(), pred.min()]))
    hi = float(np.nanmax([ref.max(), pred.max()]))
    pad = 0.03 * (hi - lo or 1.0)
    fig = go.Figure()
    fig.add_trace(go.Scattergl(
        x=ref[idx], y=pred[idx], mode="markers", marker={"size": 4, "opacity": 0.6},
        text=None if labels is None else [labels[i] for i in idx], name="data",
        hovertemplate="ref %{x:.4g}<br>pred %{y:.4g}<br>%{text}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[lo - pad, hi + pad], y=[lo - pad, hi + pad], mode="lines",
                             line={"color": "gray", "dash": "dash"}, name="y = x"))
    fig.update_layout(title=title, xaxis_title=f"reference ({unit})",
                      yaxis_title=f"predicted ({unit})", showlegend=False, height=420,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def histogram(values: Sequence[float], *, title: str, xlabel: str, nbins: int = 60,
              log_y: bool = False) -> go.Figure:
    fig = go.Figure(go.Histogram(x=np.asarray(values, float), nbinsx=nbins))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title="count", height=320,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def bar(labels: Sequence[str], values: Sequence[float], *, title: str, ylabel: str
        ) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(labels), y=list(values)))
    fig.update_layout(title=title, yaxis_title=ylabel, height=320,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def grouped_bar(table: dict[str, dict[str, float]], *, title: str, ylabel: str) -> go.Figure:
    """One bar group per element, one colour per series (e.g. per head or E0 method)."""
    fig = go.Figure()
    for series, values in table.items():
        fig.add_trace(go.Bar(name=series, x=list(values), y=list(values.values())))
    fig.update_layout(title=title, yaxis_title=ylabel, barmode="group", height=360,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig




def curves(series: dict[str, np.ndarray], *, title: str, ylabel: str,
           relative: bool = False) -> go.Figure:
    """One line per series against structure index (reference drawn as markers)."""
    fig = go.Figure()
    for name, y in series.items():
        y = np.asarray(y, float)
        if relative:
            y = y - y[0]
        ref = name == "reference"
        fig.add_trace(go.Scatter(y=y, name=name, mode="markers+lines" if ref else "lines",
                                 line={"color": "black", "width": 3} if ref else None))
    fig.update_layout(title=title, xaxis_title="structure index", yaxis_title=ylabel,
                      height=420, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def learning_curves(curves: dict[str, list[tuple[int, float]]], *, title: str, ylabel: str,
                    log_y: bool = True) -> go.Figure:
    """One line per run (and head): a metric against epoch."""
    fig = go.Figure()
    for name, pts in curves.items():
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                 name=name))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=ylabel, height=420,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    if log_y:
        fig.update_yaxes(type="log")
    return fig
