"""The shared plotly figure builders: ranges, ticks, units, colours and labels read off the
figures they build."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mlipft_core.demo import demo_paths
from mlipft_core.probes import reference_curve, reference_dimer_curves
from mlipft_ui import plots


def as_number(text: str) -> float:
    return float(text.replace(",", "").replace("−", "-"))


def check_log_axis(axis) -> None:
    """A log axis with ticks chosen by us, each written out as the value it stands at
    (plotly's own log ticks read "100, 5, 2, 10, 5, 2, 1")."""
    assert axis.type == "log"
    assert axis.tickvals is not None and len(axis.tickvals) >= 2
    assert len(axis.ticktext) == len(axis.tickvals)
    for value, text in zip(axis.tickvals, axis.ticktext):
        assert as_number(text) == pytest.approx(value, rel=1e-9), (value, text)
    mantissas = {round(v / 10 ** np.floor(np.log10(v)), 6) for v in axis.tickvals}
    assert mantissas <= {1, 1.5, 2, 3, 5, 7}, mantissas


# ----------------------------------------------------------------- dimer range
def cc_reference() -> dict:
    model = demo_paths()["models"]["demo-gfn1-strong"]
    return reference_curve(reference_dimer_curves(model), "C-C")


def test_dimer_range_shows_the_whole_well_and_states_the_cap():
    ref = cc_reference()
    depth = -min(ref["energies"])
    assert depth > 13  # the GFN1-xTB C-C well, deeper than the old fixed -10 eV
    d = ref["distances"]
    # a model that lost its wall: it plunges at short range instead of rising
    lost = [-60.0 * np.exp(-(x - 0.5) * 3) - 12 * np.exp(-((x - 1.3) ** 2) * 4) for x in d]
    series = {"reference [GFN1-xTB]": (d, ref["energies"]), "kept": (d, ref["energies"]),
              "naive": (d, lost)}
    fig = plots.dimer_curves(series, title="C-C dimer")
    lo, hi = fig.layout.yaxis.range
    rng = plots.dimer_range(series)
    assert (lo, hi) == (rng.lo, rng.hi)
    # every well is visible, with room below it
    assert lo < min(ref["energies"]) and lo < min(e for e in lost if e > -rng.cap_ev)
    # the wall (140 eV at 0.5 Å) is cut at a cap that leaves the wells readable
    assert max(ref["energies"]) > rng.cap_ev >= plots.DIMER_MIN_CAP_EV
    assert rng.cap_ev >= plots.DIMER_WALL_FACTOR * depth
    assert hi == pytest.approx(rng.cap_ev + 0.04 * (rng.cap_ev - max(min(lost), -rng.cap_ev)))
    # the axis says where the curves are cut, with the numbers of the range
    assert rng.cut_above and rng.cut_below  # the plunging model goes below −cap
    title = fig.layout.yaxis.title.text
    assert title.startswith("energy relative to 5 Å (eV)")
    assert f"−{rng.cap_ev:g} to {rng.cap_ev:g} eV" in title


def test_dimer_range_without_cut_says_nothing():
    d = list(np.linspace(0.5, 5, 46))
    e = [3.0 * np.exp(-(x - 0.5) * 2) - 4 * np.exp(-((x - 1.5) ** 2)) for x in d]
    e = [v - e[-1] for v in e]
    fig = plots.dimer_curves({"soft": (d, e)}, title="H-H dimer")
    rng = plots.dimer_range({"soft": (d, e)})
    assert not rng.cut_above and not rng.cut_below and rng.note() == ""
    assert fig.layout.yaxis.title.text == "energy relative to 5 Å (eV)"
    lo, hi = fig.layout.yaxis.range
    assert lo < min(e) and hi > max(e)


def test_dimer_range_caps_only_the_wall():
    ref = cc_reference()
    series = {"reference [GFN1-xTB]": (ref["distances"], ref["energies"])}
    rng = plots.dimer_range(series)
    assert rng.cut_above and not rng.cut_below
    assert rng.note() == f"shown up to {rng.cap_ev:g} eV"
    assert f"shown up to {rng.cap_ev:g} eV" in plots.dimer_curves(
        series, title="C-C").layout.yaxis.title.text


# ----------------------------------------------------------------- log axes
def _learning_curves():
    curves = {"naive": [(0, 300.0), (1, 120.0), (2, 40.0), (3, 9.0)]}
    return [plots.learning_curves(curves, title="t", ylabel="F").layout.yaxis]


def _learning_curve_sizes():
    lc = plots.xy_lines({"naive": ([10, 30, 100, 300], [200.0, 120.0, 60.0, 15.0])},
                        title="t", xlabel="n", ylabel="F", log_x=True, log_y=True)
    return [lc.layout.xaxis, lc.layout.yaxis]


def _forgetting_scatter():
    sc = plots.labelled_scatter([5.0, 80.0], [3.0, 400.0], ["a", "b"], title="t",
                                xlabel="x", ylabel="y")
    return [sc.layout.xaxis, sc.layout.yaxis]


def _pilot_narrow():
    # learning rates within a factor of 10 still on a log axis, with readable ticks
    return [plots.lr_curve([1e-3, 2e-3, 5e-3], [30.0, 20.0, 25.0], title="t",
                           best=2e-3).layout.xaxis]


def _pilot_wide():
    return [plots.lr_curve([1e-5, 1e-4, 1e-2], [30.0, 20.0, 25.0], title="t").layout.xaxis]


def _count_histogram():
    # counts over four decades: decades only
    h = plots.histogram(np.random.default_rng(0).exponential(1.0, 20000), title="t",
                        xlabel="eV/Å", log_y=True)
    assert all(as_number(t) in (1, 10, 100, 1000, 10000) for t in h.layout.yaxis.ticktext)
    return [h.layout.yaxis]


def _bars_forced_log():
    # a bar chart forced onto a log axis (the study's E0 finding), over a narrow span
    bars = plots.grouped_bar({"a": {"target": 3.0, "pretraining": 6.0}}, title="t", ylabel="E")
    plots.tidy_log_axis(bars, "y", force_log=True)
    return [bars.layout.yaxis]


@pytest.mark.parametrize("axes", [_learning_curves, _learning_curve_sizes, _forgetting_scatter,
                                  _pilot_narrow, _pilot_wide, _count_histogram,
                                  _bars_forced_log])
def test_every_log_plot_has_written_out_ticks(axes):
    for axis in axes():
        check_log_axis(axis)


def test_log_ticks_and_their_text():
    assert plots.log_ticks(1, 1e5) == [1, 10, 100, 1000, 10000, 100000]
    assert plots.log_ticks(10, 500) == [10, 20, 50, 100, 200, 500]
    assert [plots.tick_text(t) for t in (1000, 200, 0.005, 2e-5, 1e-4)] == \
        ["1,000", "200", "0.005", "2e-5", "1e-4"]


# ----------------------------------------------------------------- units
def test_huge_mev_offsets_are_shown_in_ev_with_plain_numbers():
    offsets_mev = -4.012e6 + np.linspace(-500, 500, 200)  # E0 offsets across levels
    fig = plots.histogram(offsets_mev, title="(E_ref − E_model) / N", xlabel="meV/atom")
    assert fig.layout.xaxis.title.text == "eV/atom"
    assert np.allclose(fig.data[0].x, offsets_mev / 1000)
    assert fig.layout.xaxis.exponentformat == "none"  # "-4,012", never "-4k" or "-4M"
    assert fig.layout.xaxis.separatethousands
    small = plots.histogram(np.linspace(-30, 30, 50), title="t", xlabel="meV/atom")
    assert small.layout.xaxis.title.text == "meV/atom"
    assert np.allclose(small.data[0].x, np.linspace(-30, 30, 50))


def test_parity_axes_write_numbers_out():
    ref = np.linspace(-4013, -4011, 50)
    fig = plots.parity(ref, ref + 0.01, title="t", unit="eV/atom")
    assert fig.layout.xaxis.exponentformat == "none" and fig.layout.yaxis.exponentformat == "none"


# ----------------------------------------------------------------- colours and heads
def test_a_models_colour_comes_from_its_name_not_the_order():
    names = ["naive-lr1e-3", "replay", "foundation", "lora-r8", "scratch"]
    a = plots.palette(names)
    b = plots.palette(list(reversed(names)))
    assert a == b
    assert len(set(a.values())) == len(names)  # told apart on one page
    assert set(a.values()) <= set(plots.PALETTE)
    # the name picks the slot: a run shown alone has its own colour
    alone = plots.palette(["replay"])["replay"]
    assert alone == plots.PALETTE[plots.preferred_color_index("replay")]


def test_colours_collide_into_free_slots():
    n = len(plots.PALETTE)
    names = [f"run-{i}" for i in range(60)]
    by_slot: dict[int, list[str]] = {}
    for m in names:
        by_slot.setdefault(plots.preferred_color_index(m), []).append(m)
    clash = next(v for v in by_slot.values() if len(v) >= 2)[:2]
    colors = plots.palette(clash)
    assert colors[clash[0]] != colors[clash[1]]
    assert len(set(plots.palette(names[:n]).values())) == n


def test_colours_are_the_same_in_another_process():
    """Another session (another Python process, another hash seed) gives the same colours."""
    names = ["naive-lr1e-3", "replay", "foundation", "lora-r8"]
    here = plots.palette(names)
    code = ("import json, sys; from mlipft_ui import plots; "
            f"print(json.dumps(plots.palette({list(reversed(names))!r})))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, env={**os.environ, "PYTHONHASHSEED": "12345"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == here


@pytest.mark.parametrize("other_head", ["pt_head", "water"])
@pytest.mark.parametrize("overlay", [False, True])
def test_heads_of_one_model_are_told_apart_in_parity_plots(overlay, other_head):
    r = np.linspace(0, 1, 30)
    names = ["replay [Default]", f"replay [{other_head}]", "naive"]
    panels = {n: (r, r + 0.01 * i, 10.0) for i, n in enumerate(names)}
    colors = plots.palette(names)
    fig = plots.parity_grid(panels, unit="eV/Å", quantity="Forces", overlay=overlay,
                            colors=colors, rmse_unit="meV/Å")
    markers = {tr.name.split(" (RMSE")[0]: tr for tr in fig.data if tr.mode == "markers"}
    a, b = markers["replay [Default]"], markers[f"replay [{other_head}]"]
    assert (a.marker.color, a.marker.symbol) != (b.marker.color, b.marker.symbol)
    assert a.marker.color != b.marker.color and a.marker.symbol != b.marker.symbol
    assert a.marker.color == colors["replay"]  # the first head keeps the model's colour
    # and the legend names each head with its own marker
    assert fig.layout.showlegend is not False
    assert a.showlegend is not False and b.showlegend is not False
    assert fig.layout.legend.itemsizing == "constant"


def test_heads_told_apart_in_lines_and_labelled_points():
    names = ["replay [Default]", "replay [pt_head]"]
    colors = plots.palette(names)
    lines = plots.learning_curves({n: [(0, 50.0), (1, 20.0)] for n in names}, title="t",
                                  ylabel="F", colors=colors)
    assert lines.data[0].line.color != lines.data[1].line.color
    assert lines.data[0].line.dash != lines.data[1].line.dash
    sc = plots.labelled_scatter([10.0, 200.0], [20.0, 30.0], names, title="t", xlabel="x",
                                ylabel="y", colors=colors)
    assert sc.data[0].marker.color[0] != sc.data[0].marker.color[1]
    assert sc.data[0].marker.symbol[0] != sc.data[0].marker.symbol[1]


def test_the_target_head_keeps_the_models_colour_whatever_the_heads_are_called():
    for target, pretraining in (("Default", "pt_head"),
                                ("target head", "pretraining head (replay)")):
        names = [f"replay [{pretraining}]", f"replay [{target}]"]
        colors = plots.palette(names)
        assert plots.color_for(f"replay [{target}]", colors, names) == colors["replay"]
        assert plots.color_for(f"replay [{pretraining}]", colors, names) != colors["replay"]
        assert plots.head_style(f"replay [{target}]", colors, names)["symbol"] == "circle"


# ----------------------------------------------------------------- box or strip
def test_groups_of_few_values_are_points_not_boxes():
    fig = plots.spread({"Naive": [12.0], "LoRA": [10.0, 14.0], "Replay": [8, 9, 11, 15]},
                       title="t", ylabel="F")
    by = {tr.name: tr for tr in fig.data}

    def box_drawn(tr) -> bool:
        return not (tr.line.color or "").endswith(",0)")

    assert not box_drawn(by["Naive"]) and not box_drawn(by["LoRA"])
    assert by["Naive"].boxpoints == "all" and list(by["LoRA"].y) == [10.0, 14.0]
    assert box_drawn(by["Replay"]) and len(by["Replay"].y) == plots.MIN_BOX_VALUES + 1
    # missing values are left out, an empty group draws nothing
    fig = plots.spread({"A": [None, 3.0, 4.0, 5.0], "B": [None]}, title="t", ylabel="F")
    assert [tr.name for tr in fig.data] == ["A"] and box_drawn(fig.data[0])


# ----------------------------------------------------------------- labels not cut
def test_labels_are_not_cut_at_the_edges():
    labels = ["foundation model (zero-shot)", "multihead-replay-cancelled [pt_head]", "mid"]
    sc = plots.labelled_scatter([5.0, 400.0, 50.0], [100.0, 10.0, 30.0], labels, title="t",
                                xlabel="x", ylabel="y")
    tr = sc.data[0]
    assert tr.cliponaxis is False
    # the leftmost label extends right, the rightmost left, the middle one centred
    assert list(tr.textposition) == ["top right", "top left", "top center"]
    bar = plots.bar(["Naive fine-tuning", "Multihead replay", "LoRA"], [100.0, 80.0, 90.0],
                    title="t", ylabel="F")
    for fig in (sc, bar, plots.grouped_bar({"a": {"pretraining (outside the family)": 1.0}},
                                           title="t", ylabel="E")):
        assert fig.layout.xaxis.automargin and fig.layout.yaxis.automargin
    hbar = plots.bar([f"a long model name number {i}" for i in range(10)], list(range(10)),
                     title="t", ylabel="F")
    assert hbar.layout.yaxis.automargin and hbar.layout.xaxis.automargin
