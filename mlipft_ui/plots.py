"""Plotly figure builders shared by the pages (every plot in the app is plotly)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

#: Colours of models (plotly's default qualitative set); a model's name picks its slot.
PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692",
           "#B6E880", "#FF97FF", "#FECB52")
REFERENCE_COLOR = "black"


def model_of(label: str) -> str:
    """``"naive [Default]"`` -> ``"naive"``: a label's model, without the head."""
    return label.split(" [", 1)[0]


def head_of(label: str) -> str | None:
    return label.split(" [", 1)[1].rstrip("]") if " [" in label else None


def preferred_color_index(model: str) -> int:
    """The palette slot a model's name points to: a SHA-256 of the name, so the same run keeps
    its colour in every session, on every page and whatever else is shown next to it."""
    return int(hashlib.sha256(model.encode()).hexdigest()[:8], 16) % len(PALETTE)


def palette(labels: Sequence[str]) -> dict[str, str]:
    """One colour per model (its heads get shades of it, see :func:`head_style`), derived
    from the model's name, not from the order the models come in.

    Each model takes the slot its name hashes to; when two models on one page hash to the
    same slot, the one first in name order keeps it and the other takes the next free slot.
    The result depends only on the set of names. Pages build it once from the models they
    show and pass it to every plot, so a model keeps its colour across the page's plots.
    """
    models = sorted({model_of(lab) for lab in labels} - {"reference"})
    out: dict[str, str] = {}
    taken: set[int] = set()
    for m in models:
        i = preferred_color_index(m)
        if len(taken) < len(PALETTE):
            while i in taken:
                i = (i + 1) % len(PALETTE)
        taken.add(i)
        out[m] = PALETTE[i]
    return out


#: Marker symbols and line styles for the heads of one model, by the head's rank (the
#: target head first, then the pretraining head, then the others by name).
HEAD_SYMBOLS = ("circle", "x", "diamond", "triangle-up", "square", "star")
HEAD_DASHES = ("solid", "dot", "dash", "dashdot", "longdash", "longdashdot")


def _head_order(head: str) -> tuple:
    """The target head (``Default``, or in words ``target head``) first, the pretraining
    head (``pt_head``, ``pretraining head``) second, other heads by name."""
    low = head.lower()
    rank = 0 if head == "Default" or low.startswith("target") else \
        1 if head == "pt_head" or low.startswith("pretraining") else 2
    return (rank, head)


def head_rank(label: str, labels: Sequence[str] | None = None) -> int:
    """0 for a model without heads or its first head; 1, 2, ... for its other heads among
    ``labels`` (the labels shown together). Without ``labels``: the target head 0, the
    pretraining head 1, any other head 2."""
    head = head_of(label)
    if head is None:
        return 0
    if labels is None:
        return _head_order(head)[0]
    heads = {head} | {head_of(lab) for lab in labels
                      if model_of(lab) == model_of(label) and head_of(lab)}
    return sorted(heads, key=_head_order).index(head)


def shade(color: str, rank: int) -> str:
    """The model's colour for its first head; darker, then lighter variants for the next."""
    if rank == 0 or not color or not color.startswith("#") or len(color) != 7:
        return color
    rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)], float)
    level = (rank + 1) // 2 * 0.35
    target = 0.0 if rank % 2 else 255.0  # odd ranks darker, even ranks lighter
    mixed = rgb + (target - rgb) * min(level, 0.7)
    return "#" + "".join(f"{int(round(c)):02X}" for c in mixed)


def head_style(label: str, colors: dict[str, str] | None,
               labels: Sequence[str] | None = None) -> dict:
    """Colour (a shade of the model's), marker symbol and line dash of one label, so the
    heads of one model are told apart in markers, lines and the legend."""
    if model_of(label) == "reference":
        return {"color": REFERENCE_COLOR, "symbol": "circle", "dash": "solid"}
    rank = head_rank(label, labels)
    return {"color": shade((colors or {}).get(model_of(label)), rank),
            "symbol": HEAD_SYMBOLS[rank % len(HEAD_SYMBOLS)],
            "dash": HEAD_DASHES[rank % len(HEAD_DASHES)]}


def color_for(label: str, colors: dict[str, str] | None,
              labels: Sequence[str] | None = None) -> str | None:
    return head_style(label, colors, labels)["color"]


def line_style(label: str, colors: dict[str, str] | None,
               labels: Sequence[str] | None = None) -> dict:
    s = head_style(label, colors, labels)
    return {"color": s["color"], "dash": s["dash"]} if head_of(label) else {"color": s["color"]}


def marker_style(label: str, colors: dict[str, str] | None,
                 labels: Sequence[str] | None = None) -> dict:
    s = head_style(label, colors, labels)
    return {"color": s["color"], "symbol": s["symbol"]}


def plain_numbers(fig: go.Figure) -> go.Figure:
    """Axes that write numbers out (``-4,000``, never ``-4k`` or ``-4M``) and make room for
    their tick labels and titles, so that nothing is cut at the figure's edge."""
    fig.update_xaxes(exponentformat="none", separatethousands=True, automargin=True)
    fig.update_yaxes(exponentformat="none", separatethousands=True, automargin=True)
    return fig


def _scatter(n_points: int):
    """SVG markers for a few thousand points (quick to draw anywhere, also without a GPU),
    WebGL beyond."""
    return go.Scatter if n_points <= 3000 else go.Scattergl


def tick_text(t: float) -> str:
    """A log-axis tick written out: ``1,000``, ``200``, ``0.005``; ``2e-5`` below 0.001."""
    if t >= 1e-3:
        return f"{t:,.6g}" if t < 1e6 else f"{t:.0e}".replace("e+0", "e").replace("e+", "e")
    m, e = f"{t:.0e}".split("e")
    return f"{m}e{int(e)}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values of a log axis from ``lo`` to ``hi`` (both > 0): every decade when the
    data span more than three decades, 1-2-5 × 10^n over one to three, and 1, 1.5, 2, 3, 5,
    7 × 10^n over less than one, so that at least two ticks always fall on the data."""
    decades = np.log10(hi / lo)
    mantissas = (1,) if decades > 3 else (1, 2, 5) if decades >= 1 else (1, 1.5, 2, 3, 5, 7)
    span = range(int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1)
    ticks = [float(f"{m * 10.0 ** e:.6g}") for e in span for m in mantissas]
    inside = [t for t in ticks if lo / 1.05 <= t <= hi * 1.05]
    if len(inside) < 2:  # a very narrow span: the ticks just around it
        return [t for t in ticks if t < lo][-1:] + inside + [t for t in ticks if t > hi][:1]
    return [t for t in ticks if lo / 1.5 <= t <= hi * 1.5]


def tidy_log_axis(fig: go.Figure, axis: str = "y", values: Sequence[float] | None = None,
                  *, force_log: bool = False) -> None:
    """A readable log axis: ticks from :func:`log_ticks`, written out in full (``200``,
    ``1,000``), never plotly's bare ``2`` and ``5`` between the decades. Data spanning less
    than a factor of 10 get a linear axis instead, unless ``force_log``."""
    update = getattr(fig, f"update_{axis}axes")
    if values is None:
        values = [v for tr in fig.data for v in (getattr(tr, axis) or [])
                  if isinstance(v, (int, float, np.number)) and np.isfinite(v) and v > 0]
    v = np.asarray([x for x in values if x is not None and np.isfinite(x) and x > 0], float)
    if v.size == 0:
        if force_log:
            update(type="log", exponentformat="none")
        return
    lo, hi = float(v.min()), float(v.max())
    if hi / lo < 10 and not force_log:
        update(type="linear")
        return
    ticks = log_ticks(lo, hi)
    update(type="log", tickvals=ticks, ticktext=[tick_text(t) for t in ticks])


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
    return plain_numbers(fig)


#: From this size on (in meV), values given in meV are shown in eV: ``-4,012 eV/atom``
#: reads better than ``-4,012,000 meV/atom``.
MEV_TO_EV_FROM = 1e4


def readable_unit(values: np.ndarray, label: str) -> tuple[np.ndarray, str]:
    """Values labelled in meV (``"meV/atom"``, ``"offset (meV)"``) and reaching
    :data:`MEV_TO_EV_FROM` in size come back in eV, with the label saying so."""
    finite = values[np.isfinite(values)]
    if finite.size and np.abs(finite).max() >= MEV_TO_EV_FROM and re.search(r"\bmeV\b", label):
        return values / 1000.0, re.sub(r"\bmeV\b", "eV", label)
    return values, label


def histogram(values: Sequence[float], *, title: str, xlabel: str, nbins: int = 60,
              log_y: bool = False) -> go.Figure:
    """Counts of ``values`` in ``nbins`` equal bins; numbers written out (huge meV values in
    eV, see :func:`readable_unit`); a log count axis with written-out ticks."""
    v, xlabel = readable_unit(np.asarray(values, float), xlabel)
    finite = v[np.isfinite(v)]
    counts, edges = np.histogram(finite, bins=nbins) if finite.size else (np.zeros(0), [0, 1])
    size = float(edges[1] - edges[0]) or 1.0
    fig = go.Figure(go.Histogram(x=v, xbins={"start": float(edges[0]),
                                            "end": float(edges[-1]) + 1e-9 * size,
                                            "size": size}, autobinx=False))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title="count", height=320,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    plain_numbers(fig)
    if log_y:
        top = float(max(counts.max(initial=1), 1))
        tidy_log_axis(fig, "y", [1.0, top], force_log=True)
        # from below 1, so that a bin of one count shows as a bar
        fig.update_yaxes(range=[np.log10(0.5), np.log10(top * 1.3)])
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
        return plain_numbers(fig)
    fig = go.Figure(go.Bar(x=labels, y=list(values)))
    fig.update_layout(title=title, yaxis_title=ylabel, height=320,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return plain_numbers(fig)


def grouped_bar(table: dict[str, dict[str, float]], *, title: str, ylabel: str) -> go.Figure:
    """One bar group per element, one colour per series (e.g. per head or E0 method)."""
    fig = go.Figure()
    for series, values in table.items():
        fig.add_trace(go.Bar(name=series, x=list(values), y=list(values.values())))
    fig.update_layout(title=title, yaxis_title=ylabel, barmode="group", height=360,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return plain_numbers(fig)




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
            {**line_style(name, colors, list(series)), "width": 2.5}
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
    return plain_numbers(fig)


def learning_curves(curves: dict[str, list[tuple[int, float]]], *, title: str, ylabel: str,
                    log_y: bool = True, colors: dict[str, str] | None = None) -> go.Figure:
    """One line per run (and head): a metric against epoch (epochs counted from 1)."""
    colors = colors or palette(list(curves))
    fig = go.Figure()
    names = list(curves)
    for name, pts in curves.items():
        fig.add_trace(go.Scatter(x=[p[0] + 1 for p in pts], y=[p[1] for p in pts],
                                 mode="lines+markers", name=name,
                                 line=line_style(name, colors, names),
                                 marker=marker_style(name, colors, names)))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title=ylabel, height=420,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    plain_numbers(fig)
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
    allv = (np.concatenate([np.concatenate([r, p]) for r, p, _ in panels.values()])
            if panels else np.zeros(1))
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
                marker={"size": 5, **marker_style(name, colors, names)},
                name=f"{name} (RMSE {rmse:.1f} {rmse_unit})" if rmse is not None else name))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", showlegend=False,
                                 line={"color": "gray", "dash": "dash"}))
        fig.update_layout(title=f"{quantity} parity", xaxis_title=f"reference ({unit})",
                          yaxis_title=f"predicted ({unit})", height=480,
                          legend={"itemsizing": "constant"})
        return plain_numbers(fig)
    cols = min(4, max(1, len(names)))
    rows = int(np.ceil(len(names) / cols)) or 1
    titles = [f"{n}<br>RMSE {panels[n][2]:.1f} {rmse_unit}" if panels[n][2] is not None else n
              for n in names]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes="all",
                        shared_yaxes="all", horizontal_spacing=0.04, vertical_spacing=0.12)
    # the heads of one model share its colour family: a legend tells their shades apart
    several_heads = len({model_of(n) for n in names}) < len(names)
    for i, name in enumerate(names):
        r, p, _ = panels[name]
        idx = np.linspace(0, len(r) - 1, min(len(r), max_points)).astype(int)
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(_scatter(len(idx))(x=r[idx], y=p[idx], mode="markers", name=name,
                                   marker={"size": 3, **marker_style(name, colors, names)},
                                   showlegend=several_heads), row=row, col=col)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", showlegend=False,
                                 line={"color": "gray", "dash": "dash"}), row=row, col=col)
    fig.update_layout(title=f"{quantity} parity ({unit})", height=300 * rows + 80,
                      margin={"l": 50, "r": 20, "t": 90, "b": 40},
                      showlegend=several_heads,
                      legend={"itemsizing": "constant", "orientation": "h", "y": -0.12})
    fig.update_annotations(font_size=11)
    return plain_numbers(fig)


def text_positions(x: Sequence[float], *, log: bool = False) -> list[str]:
    """Where each point's label goes: to the right of points in the left third of the x
    range, to the left in the right third, centred above in between (so labels near an edge
    lean into the plot instead of out of the figure)."""
    v = np.asarray([np.nan if e is None else e for e in x], float)
    pos = v[np.isfinite(v)]
    if log and pos.size and np.all(pos > 0) and pos.max() / pos.min() >= 10:  # a log axis
        v = np.log10(v)
    ok = np.isfinite(v)
    if ok.sum() < 2 or np.ptp(v[ok]) == 0:
        return ["top center"] * len(v)
    u = (v - np.nanmin(v[ok])) / np.ptp(v[ok])
    return ["top right" if a < 1 / 3 else "top left" if a > 2 / 3 else "top center"
            for a in np.nan_to_num(u, nan=0.5)]


def labelled_scatter(x: Sequence[float], y: Sequence[float], labels: Sequence[str], *,
                     title: str, xlabel: str, ylabel: str, log: bool = True,
                     colors: dict[str, str] | None = None) -> go.Figure:
    """Points named by their labels. A label leans away from the nearer side of the plot
    and may reach into the margin (never cut at the plot's edge)."""
    labels = list(labels)
    colors = colors or palette(labels)
    styles = [marker_style(lab, colors, labels) for lab in labels]
    fig = go.Figure(go.Scatter(
        x=list(x), y=list(y), mode="markers+text", text=labels,
        textposition=text_positions(x, log=log), cliponaxis=False,
        marker={"size": 11, "color": [s["color"] for s in styles],
                "symbol": [s["symbol"] for s in styles]},
        hovertemplate="%{text}<br>x %{x:.1f}<br>y %{y:.1f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=480,
                      margin={"l": 60, "r": 40, "t": 60, "b": 50})
    plain_numbers(fig)
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
    names = list(series)
    fig = go.Figure()
    seen: dict[tuple, str] = {}
    for i, (name, (x, y)) in enumerate(series.items()):
        key = (tuple(np.round(np.asarray(x, float), 6)), tuple(np.round(np.asarray(y, float), 6)))
        # earlier lines drawn wider, so nearly identical curves stay visible under later ones
        style = {**line_style(name, colors, names), "width": max(1.5, 4.5 - 0.75 * i)}
        shown = name
        if key in seen:
            style = {**style, "dash": "dash", "width": 1.5}
            shown = f"{name} (= {seen[key]})"
        else:
            seen[key] = name
        if model_of(name) == "reference":
            style = {"color": REFERENCE_COLOR, "width": 3}
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines+markers", name=shown,
                                 marker={"size": 4, "symbol": head_style(name, colors,
                                                                        names)["symbol"]},
                                 line=style))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=420)
    plain_numbers(fig)
    if y_range:
        fig.update_yaxes(range=list(y_range))
    if log_x:
        tidy_log_axis(fig, "x")
    if log_y:
        tidy_log_axis(fig, "y")
    return fig


#: The dimer plot shows energies up to this many times the typical well depth of the curves
#: shown, and at least up to :data:`DIMER_MIN_CAP_EV`: high enough to see a wall rise far
#: above the 2 eV a lost wall stays under, low enough that the wells stay readable.
DIMER_WALL_FACTOR = 2.0
DIMER_MIN_CAP_EV = 20.0


@dataclass(frozen=True)
class DimerRange:
    """The energy axis of a dimer plot (eV): shown from ``lo`` to ``hi``; curves reaching
    beyond ``cap_ev`` (above, or below ``-cap_ev``) are cut there."""

    lo: float
    hi: float
    cap_ev: float
    cut_above: bool
    cut_below: bool

    def note(self) -> str:
        """What the axis leaves out, for its title (empty when nothing is cut)."""
        if self.cut_above and self.cut_below:
            return f"shown from −{self.cap_ev:g} to {self.cap_ev:g} eV"
        if self.cut_above:
            return f"shown up to {self.cap_ev:g} eV"
        if self.cut_below:
            return f"shown down to −{self.cap_ev:g} eV"
        return ""


def dimer_range(series: dict[str, tuple[Sequence[float], Sequence[float]]]) -> DimerRange:
    """The y range of a dimer plot from the curves shown: every well, and the walls up to a
    cap of :data:`DIMER_WALL_FACTOR` times the well depth (at least
    :data:`DIMER_MIN_CAP_EV`), rounded up to 10 eV. The depth is the reference curve's
    (``reference [...]``) when one is shown, else the median of the curves' wells, so that
    one model plunging at short range does not squash the others; curves reaching below
    ``-cap`` are cut there."""
    named = {k: np.asarray(y, float) for k, (_, y) in series.items()}
    named = {k: c[np.isfinite(c)] for k, c in named.items()}
    named = {k: c for k, c in named.items() if c.size}
    curves = list(named.values())
    if not curves:
        return DimerRange(-1.0, DIMER_MIN_CAP_EV, DIMER_MIN_CAP_EV, False, False)
    # a well is a minimum away from the shortest distance (a curve lowest there has no wall)
    wells = {k: -float(c.min()) for k, c in named.items() if int(np.argmin(c)) > 0}
    ref = [v for k, v in wells.items() if model_of(k) == "reference"]
    depth = max(0.0, ref[0] if ref else float(np.median(list(wells.values()))) if wells else 0.0)
    cap = float(np.ceil(max(DIMER_MIN_CAP_EV, DIMER_WALL_FACTOR * depth) / 10.0) * 10.0)
    ymin = min(float(c.min()) for c in curves)
    ymax = max(float(c.max()) for c in curves)
    bottom, top = max(ymin, -cap), min(ymax, cap)
    pad = 0.04 * ((top - bottom) or 1.0)
    return DimerRange(bottom - pad, top + pad, cap, ymax > cap, ymin < -cap)


def dimer_curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str,
                 colors: dict[str, str] | None = None,
                 ylabel: str = "energy relative to 5 Å (eV)") -> go.Figure:
    """Dimer curves (:func:`xy_lines` against distance) on the axis of :func:`dimer_range`;
    the axis title says where the curves are cut."""
    rng = dimer_range(series)
    fig = xy_lines(series, title=title, xlabel="distance (Å)", ylabel=ylabel,
                   y_range=(rng.lo, rng.hi), colors=colors)
    if rng.note():
        fig.update_yaxes(title_text=f"{ylabel}<br>{rng.note()}")
    return fig


#: Groups with fewer values than this are drawn as their points only: a box of one or two
#: values shows a spread that is not there.
MIN_BOX_VALUES = 3


def spread(groups: dict[str, Sequence[float]], *, title: str, ylabel: str,
           colors: dict[str, str] | None = None, min_box: int = MIN_BOX_VALUES
           ) -> go.Figure:
    """The values of each group: a box with every point for groups of at least ``min_box``
    values, the points alone (a strip, no box) for smaller groups."""
    colors = colors or palette(list(groups))
    fig = go.Figure()
    for name, vals in groups.items():
        v = [float(e) for e in vals if e is not None and np.isfinite(e)]
        if not v:
            continue
        color = color_for(name, colors)
        if len(v) >= min_box:
            fig.add_trace(go.Box(y=v, name=name, boxpoints="all", jitter=0.3,
                                 marker_color=color))
        else:
            clear = "rgba(255,255,255,0)"
            fig.add_trace(go.Box(y=v, name=name, boxpoints="all", jitter=0.3, pointpos=0,
                                 fillcolor=clear, line={"color": clear}, hoveron="points",
                                 marker={"color": color, "size": 9}))
    fig.update_layout(title=title, yaxis_title=ylabel, height=380, showlegend=False)
    return plain_numbers(fig)


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
                                 marker={"size": 8}, line=line_style(name, colors, list(data))))
    if best is not None and series is None:
        y_best = [e for x, e in zip(lrs, errors) if x == best]
        if y_best:
            fig.add_trace(go.Scatter(x=[best], y=y_best[:1], mode="markers",
                                     name=f"best: {best:g}",
                                     marker={"size": 16, "symbol": "circle-open",
                                             "line": {"width": 3}, "color": "#222"}))
    fig.update_layout(title=title, xaxis_title="learning rate", yaxis_title=ylabel,
                      height=340, showlegend=series is not None or best is not None)
    plain_numbers(fig)
    tidy_log_axis(fig, "x", [v for x, _ in data.values() for v in x], force_log=True)
    return fig


def md_traces(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str,
              ylabel: str, colors: dict[str, str] | None = None,
              failures: dict[str, str] | None = None,
              target: tuple[float, str] | None = None,
              shade_to_fs: float | None = None) -> go.Figure:
    """MD traces against simulated time, one line per model (``series``: name -> (time in fs,
    values)); a cross at the last frame of a run that failed (hover: why), a dashed line at
    ``target`` (value, text) and the span up to ``shade_to_fs`` shaded as equilibration.

    A trace that lies on an earlier one (within 2 % of the plot's range) is drawn dashed on
    top of it and named "(≈ earlier)", so that neither hides the other; every trace's
    ``legendgroup`` is its plain name."""
    colors = colors or palette(list(series))
    fig = go.Figure()
    values = [v for _, y in series.values() for v in y if np.isfinite(v)]
    close = 0.02 * max(float(np.ptp(values)) if values else 0.0, 1e-12)
    drawn: dict[str, np.ndarray] = {}
    for name, (x, y) in series.items():
        arr = np.asarray(list(y), float)
        same = next((other for other, prev in drawn.items() if len(prev) == len(arr)
                     and len(arr) and np.all(np.isfinite(arr)) and np.all(np.isfinite(prev))
                     and np.max(np.abs(arr - prev)) <= close), None)
        line = {"color": color_for(name, colors)}
        if same is not None:
            line.update(dash="dash", width=1.5)
        fig.add_trace(go.Scatter(x=list(x), y=arr.tolist(), mode="lines", line=line,
                                 name=name if same is None else f"{name} (≈ {same})",
                                 legendgroup=name))
        drawn[name] = arr
        why = (failures or {}).get(name)
        if why and len(x) and len(y):
            fig.add_trace(go.Scatter(x=[list(x)[-1]], y=[list(y)[-1]], mode="markers",
                                     marker={"symbol": "x", "size": 12,
                                             "color": color_for(name, colors)},
                                     showlegend=False, hovertext=why, legendgroup=name,
                                     name=f"{name}: {why}"))
    if target is not None:
        fig.add_hline(y=target[0], line_dash="dash", line_color="gray",
                      annotation_text=target[1])
    if shade_to_fs:
        fig.add_vrect(x0=0, x1=shade_to_fs, fillcolor="gray", opacity=0.12, line_width=0,
                      annotation_text="equilibration", annotation_position="top left")
    fig.update_layout(title=title, xaxis_title="time (fs)", yaxis_title=ylabel, height=320)
    return plain_numbers(fig)
