"""Plotly figure builders shared by the pages (every plot in the app is plotly)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

#: Colours given to models, in order (plotly's default qualitative set).
PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692",
           "#B6E880", "#FF97FF", "#FECB52")
#: Line styles for the heads of one model (its colour stays the same).
HEAD_DASH = {"Default": "solid", "pt_head": "dot"}
REFERENCE_COLOR = "black"


def model_of(label: str) -> str:
    """``"naive [Default]"`` -> ``"naive"``: a label's model, without the head."""
    return label.split(" [", 1)[0]


def head_of(label: str) -> str | None:
    return label.split(" [", 1)[1].rstrip("]") if " [" in label else None


def palette(labels: Sequence[str]) -> dict[str, str]:
    """One colour per model (heads of a model share it), in the order the models come.

    Pages build it once from the list of models they show and pass it to every plot, so a
    model keeps its colour across the page's plots.
    """
    out: dict[str, str] = {}
    for lab in labels:
        m = model_of(lab)
        if m not in out and m != "reference":
            out[m] = PALETTE[len(out) % len(PALETTE)]
    return out


def color_for(label: str, colors: dict[str, str] | None) -> str | None:
    if model_of(label) == "reference":
        return REFERENCE_COLOR
    return (colors or {}).get(model_of(label))


def line_style(label: str, colors: dict[str, str] | None) -> dict:
    style = {"color": color_for(label, colors)}
    head = head_of(label)
    if head:
        style["dash"] = HEAD_DASH.get(head, "dash")
    return style


def _scatter(n_points: int):
    """SVG markers for a few thousand points (quick to draw anywhere, also without a GPU),
    WebGL beyond."""
    return go.Scatter if n_points <= 3000 else go.Scattergl


def tidy_log_axis(fig: go.Figure, axis: str = "y", values: Sequence[float] | None = None
                  ) -> None:
    """A readable log axis: ticks at 1, 2 and 5 × 10^n, written out in full (``200``,
    ``1000``). Data spanning less than a factor of 10 get a linear axis instead."""
    update = getattr(fig, f"update_{axis}axes")
    if values is None:
        values = [v for tr in fig.data for v in (getattr(tr, axis) or [])
                  if v is not None and np.isfinite(v) and v > 0]
    v = np.asarray([x for x in values if x is not None and np.isfinite(x) and x > 0], float)
    if v.size == 0:
        return
    lo, hi = float(v.min()), float(v.max())
    if hi / lo < 10:
        update(type="linear")
        return
    ticks = [m * 10.0 ** e for e in range(int(np.floor(np.log10(lo))) - 1,
                                          int(np.ceil(np.log10(hi))) + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if lo / 1.5 <= t <= hi * 1.5]
    update(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])


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
    """Bars in the given order; long labels (or many bars) lie horizontally, top to bottom,
    so that they stay readable."""
    labels = [str(x) for x in labels]
    if len(labels) > 8 or max((len(x) for x in labels), default=0) > 24:
        fig = go.Figure(go.Bar(y=labels, x=list(values), orientation="h"))
        fig.update_layout(title=title, xaxis_title=ylabel, height=90 + 30 * len(labels),
                          margin={"l": 20, "r": 20, "t": 50, "b": 50})
        fig.update_yaxes(autorange="reversed", automargin=True)
        return fig
    fig = go.Figure(go.Bar(x=labels, y=list(values)))
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
    seen: dict[tuple, str] = {}
    colors = palette(list(series))
    for name, y in series.items():
        y = np.asarray(y, float)
        if relative:
            y = y - y[0]
        ref = name == "reference"
        key = tuple(np.round(y, 6))
        line = {"color": REFERENCE_COLOR, "width": 3} if ref else \
            {"color": color_for(name, colors), "width": 2.5}
        label = name
        if not ref and key in seen:  # identical curves: keep both visible and say so
            line = {**line, "dash": "dash", "width": 1.5}
            label = f"{name} (= {seen[key]})"
        elif not ref:
            seen[key] = name
        fig.add_trace(go.Scatter(y=y, name=label, mode="markers+lines" if ref else "lines",
                                 line=line))
    fig.update_layout(title=title, xaxis_title="structure index", yaxis_title=ylabel,
                      height=420, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def learning_curves(curves: dict[str, list[tuple[int, float]]], *, title: str, ylabel: str,
                    log_y: bool = True, colors: dict[str, str] | None = None) -> go.Figure:
    """One line per run (and head): a metric against epoch (epochs counted from 1)."""
    colors = colors or palette(list(curves))
    fig = go.Figure()
    for name, pts in curves.items():
        fig.add_trace(go.Scatter(x=[p[0] + 1 for p in pts], y=[p[1] for p in pts],
                                 mode="lines+markers", name=name,
                                 line=line_style(name, colors)))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=ylabel, height=420,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    n_max = max((len(p) for p in curves.values()), default=1)
    fig.update_xaxes(tickformat="d", tick0=1, dtick=1 if n_max <= 12 else None)
    if log_y:
        tidy_log_axis(fig)
    return fig


def parity_grid(panels: dict[str, tuple[np.ndarray, np.ndarray, float | None]], *, unit: str,
                quantity: str, overlay: bool = False, max_points: int = 3000,
                colors: dict[str, str] | None = None, rmse_unit: str = "") -> go.Figure:
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
    colors = colors or palette(names)
    if overlay:
        fig = go.Figure()
        for name in names:
            r, p, rmse = panels[name]
            idx = np.linspace(0, len(r) - 1, min(len(r), max_points)).astype(int)
            fig.add_trace(_scatter(len(idx))(
                x=r[idx], y=p[idx], mode="markers",
                marker={"size": 4, "color": color_for(name, colors),
                        "symbol": "circle" if head_of(name) != "pt_head" else "x"},
                name=f"{name} (RMSE {rmse:.1f} {rmse_unit})" if rmse is not None else name))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", showlegend=False,
                                 line={"color": "gray", "dash": "dash"}))
        fig.update_layout(title=f"{quantity} parity", xaxis_title=f"reference ({unit})",
                          yaxis_title=f"predicted ({unit})", height=480)
        return fig
    cols = min(4, max(1, len(names)))
    rows = int(np.ceil(len(names) / cols)) or 1
    titles = [f"{n}<br>RMSE {panels[n][2]:.1f} {rmse_unit}" if panels[n][2] is not None else n
              for n in names]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes="all",
                        shared_yaxes="all", horizontal_spacing=0.04, vertical_spacing=0.12)
    for i, name in enumerate(names):
        r, p, _ = panels[name]
        idx = np.linspace(0, len(r) - 1, min(len(r), max_points)).astype(int)
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(_scatter(len(idx))(x=r[idx], y=p[idx], mode="markers",
                                   marker={"size": 3, "color": color_for(name, colors)},
                                   showlegend=False), row=row, col=col)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", showlegend=False,
                                 line={"color": "gray", "dash": "dash"}), row=row, col=col)
    fig.update_layout(title=f"{quantity} parity ({unit})", height=300 * rows + 80,
                      margin={"l": 50, "r": 20, "t": 90, "b": 40})
    fig.update_annotations(font_size=11)
    return fig


def labelled_scatter(x: Sequence[float], y: Sequence[float], labels: Sequence[str], *,
                     title: str, xlabel: str, ylabel: str, log: bool = True,
                     colors: dict[str, str] | None = None) -> go.Figure:
    colors = colors or palette(list(labels))
    fig = go.Figure(go.Scatter(
        x=list(x), y=list(y), mode="markers+text", text=list(labels),
        textposition="top center",
        marker={"size": 11, "color": [color_for(lab, colors) for lab in labels],
                "symbol": ["x" if head_of(lab) == "pt_head" else "circle" for lab in labels]},
        hovertemplate="%{text}<br>x %{x:.1f}<br>y %{y:.1f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=480)
    if log:
        tidy_log_axis(fig, "x")
        tidy_log_axis(fig, "y")
    return fig


def xy_lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str,
             xlabel: str, ylabel: str, y_range: tuple[float, float] | None = None,
             colors: dict[str, str] | None = None, log_x: bool = False,
             log_y: bool = False) -> go.Figure:
    """One line per series; identical series stay visible (later ones drawn thinner and
    dashed over the earlier ones, and named together in the legend)."""
    colors = colors or palette(list(series))
    fig = go.Figure()
    seen: dict[tuple, str] = {}
    for i, (name, (x, y)) in enumerate(series.items()):
        key = (tuple(np.round(np.asarray(x, float), 6)), tuple(np.round(np.asarray(y, float), 6)))
        # earlier lines drawn wider, so nearly identical curves stay visible under later ones
        style = {**line_style(name, colors), "width": max(1.5, 4.5 - 0.75 * i)}
        shown = name
        if key in seen:
            style = {**style, "dash": "dash", "width": 1.5}
            shown = f"{name} (= {seen[key]})"
        else:
            seen[key] = name
        if model_of(name) == "reference":
            style = {"color": REFERENCE_COLOR, "width": 3}
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines+markers", name=shown,
                                 marker={"size": 4}, line=style))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=420)
    if y_range:
        fig.update_yaxes(range=list(y_range))
    if log_x:
        tidy_log_axis(fig, "x")
    if log_y:
        tidy_log_axis(fig, "y")
    return fig


def lr_curve(lrs: Sequence[float], errors: Sequence[float], *, title: str,
             best: float | None = None, series: dict[str, tuple[Sequence[float],
                                                                 Sequence[float]]] | None = None,
             ylabel: str = "validation force RMSE (meV/Å)") -> go.Figure:
    """Validation error against learning rate (log axis); the best value is ringed."""
    data = series if series is not None else {"pilot": (lrs, errors)}
    colors = palette(list(data))
    fig = go.Figure()
    for name, (x, y) in data.items():
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines+markers", name=name,
                                 marker={"size": 8}, line={"color": colors[name]}))
    if best is not None and series is None:
        y_best = [e for x, e in zip(lrs, errors) if x == best]
        if y_best:
            fig.add_trace(go.Scatter(x=[best], y=y_best[:1], mode="markers",
                                     name=f"best: {best:g}",
                                     marker={"size": 16, "symbol": "circle-open",
                                             "line": {"width": 3}, "color": "#222"}))
    fig.update_layout(title=title, xaxis_title="learning rate", yaxis_title=ylabel,
                      height=340, showlegend=series is not None or best is not None)
    tidy_log_axis(fig, "x", [v for x, _ in data.values() for v in x])
    fig.update_xaxes(type="log")
    return fig
