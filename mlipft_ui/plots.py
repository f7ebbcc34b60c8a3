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


def parity_grid(panels: dict[str, tuple[np.ndarray, np.ndarray, float | None]], *, unit: str,
                quantity: str, overlay: bool = False, max_points: int = 5000) -> go.Figure:
    """Parity of several models: one panel each with shared axes (or all overlaid).

    ``panels``: name -> (reference, prediction, RMSE in meV units for the title).
    """
    from plotly.subplots import make_subplots

    allv = np.concatenate([np.concatenate([r, p]) for r, p, _ in panels.values()]) if panels else np.zeros(1)
    allv = allv[np.isfinite(allv)]
    lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
    pad = 0.03 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    names = list(panels)
    if overlay:
        fig = go.Figure()
        for name in names:
            r, p, rmse = panels[name]
            idx = np.linspace(0, len(r) - 1, min(len(r), max_points)).astype(int)
            fig.add_trace(go.Scattergl(x=r[idx], y=p[idx], mode="markers", marker={"size": 4},
                                       name=f"{name} ({rmse:.1f})" if rmse is not None else name))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", showlegend=False,
                                 line={"color": "gray", "dash": "dash"}))
        fig.update_layout(title=f"{quantity} parity", xaxis_title=f"reference ({unit})",
                          yaxis_title=f"predicted ({unit})", height=480)
        return fig
    cols = min(4, max(1, len(names)))
    rows = int(np.ceil(len(names) / cols)) or 1
    titles = [f"{n}<br>RMSE {panels[n][2]:.1f}" if panels[n][2] is not None else n for n in names]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes="all",
                        shared_yaxes="all", horizontal_spacing=0.04, vertical_spacing=0.12)
    for i, name in enumerate(names):
        r, p, _ = panels[name]
        idx = np.linspace(0, len(r) - 1, min(len(r), max_points)).astype(int)
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(go.Scattergl(x=r[idx], y=p[idx], mode="markers", marker={"size": 3},
                                   showlegend=False), row=row, col=col)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", showlegend=False,
                                 line={"color": "gray", "dash": "dash"}), row=row, col=col)
    fig.update_layout(title=f"{quantity} parity ({unit})", height=300 * rows + 80,
                      margin={"l": 50, "r": 20, "t": 90, "b": 40})
    fig.update_annotations(font_size=11)
    return fig


def labelled_scatter(x: Sequence[float], y: Sequence[float], labels: Sequence[str], *,
                     title: str, xlabel: str, ylabel: str, log: bool = True) -> go.Figure:
    fig = go.Figure(go.Scatter(x=list(x), y=list(y), mode="markers+text", text=list(labels),
                               textposition="top center", marker={"size": 10}))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=480)
    if log:
        fig.update_xaxes(type="log")
        fig.update_yaxes(type="log")
    return fig


def xy_lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str,
             xlabel: str, ylabel: str, y_range: tuple[float, float] | None = None) -> go.Figure:
    fig = go.Figure()
    for name, (x, y) in series.items():
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines+markers", name=name,
                                 marker={"size": 4}))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=420)
    if y_range:
        fig.update_yaxes(range=list(y_range))
    return fig
