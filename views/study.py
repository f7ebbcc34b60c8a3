"""The study's findings on your model and data, in one action."""

from pathlib import Path

import pandas as pd
import streamlit as st

from mlipft_core import jobs
from mlipft_core import study as studymod
from mlipft_core.defaults import official_study_defaults
from mlipft_core.demo import collapse_budgets, demo_paths, isolated_file_for, short_range_test_for
from mlipft_core.errors import MlipftError
from mlipft_core.findings import Chart, Finding
from mlipft_core.findings.repulsion import budget_note
from mlipft_core.registry import DEMO_MODEL_NAMES
from mlipft_core.replay_sets import missing_message, replay_set_for
from mlipft_core.strategies import STRATEGIES
from mlipft_core.tune import count_of
from mlipft_ui import cache, plots, selections, show
from mlipft_ui.labels import split_label

st.title("Study: what matters when fine-tuning")
st.caption("One action runs the comparison of the study behind this workbench (arXiv "
           "2606.12704) on the chosen foundation model and data: a learning-rate pilot for "
           "every strategy, every strategy at its tuned rate, training from scratch on little "
           "data, a weaker foundation model, and two E0 choices. Then it shows each of the "
           "study's findings with the numbers this data gives, and says plainly whether they "
           "hold here.")

ws = selections.workspace()
demo = demo_paths()
VERDICT = {True: ("Reproduced", ":material/check_circle:", "green"),
           False: ("Not reproduced here", ":material/cancel:", "red"),
           None: ("Not measured", ":material/help:", "gray")}
#: A finding with levels (the short-range one) that is not reproduced: what it showed.
LEVEL_BADGE = {"softened": ("Softened, no collapse: not the study's result",
                            ":material/change_history:", "orange"),
               "lost": ("Lost, by replay too: not reproduced", ":material/cancel:", "red")}

# ----------------------------------------------------------------- inputs
model_path = selections.selected_model_path() or demo["models"]["demo-gfn1-strong"]
model_name = selections.get("model_label") or selections.get("model") or "Demo strong (GFN1-xTB)"
split = selections.selected_split()
files = {"train": demo["sn2_train"], "valid": demo["sn2_valid"], "test": demo["sn2_test"]}
if split is not None and split.counts.get("test"):
    files = {p: str(split.file(p)) if split.counts.get(p) else None
             for p in ("train", "valid", "test")}
is_demo_model = selections.get("model") in DEMO_MODEL_NAMES or selections.get("model") is None
target_name = (split_label(split) if split is not None and split.counts.get("test")
               else "demo SN2 (B3LYP)")
st.markdown(f"Foundation model **{model_name}** · target data **{target_name}**")
# an official model: mace's replay set of it, a forgetting set drawn from that, the weaker
# member of its family, where they are at hand
official = replay_set_for(selections.get("model"))
given: dict = {}
if is_demo_model:
    given = {"weak_model": demo["models"]["demo-gfn1-weak"],
             "pretrain_test": demo["pretrain_test"], "replay": demo["replay_pool"]}
elif selections.get("model"):
    if official is not None and official.is_cached():
        with st.spinner(f"Drawing a forgetting set from mace's {official.title} (once)…"):
            given = official_study_defaults(selections.get("model"), {}, lambda _m: False)
    elif official is not None:
        st.info(missing_message(official, selections.get("model"))
                + ". Until then the study runs the strategies without replay, and the "
                "forgetting finding needs a pretraining test set of your own.")
    else:
        given = official_study_defaults(selections.get("model"), {}, lambda _m: False)
with st.expander("Inputs and settings", expanded=False):
    c = st.columns(2)
    weak = c[0].text_input("Weaker foundation model (for the FM-quality finding; empty: skip)",
                           given.get("weak_model") or "", key="study_weak_model")
    pretrain = c[1].text_input("Held-out pretraining test set (forgetting)",
                               given.get("pretrain_test") or "", key="study_pretrain_test")
    c = st.columns(2)
    replay = c[0].text_input("Replay file (pretraining structures; an official model: mace's "
                             "replay set of it)", given.get("replay") or "",
                             key="study_replay")
    iso = c[1].text_input("Isolated-atom energies of the target's method (E0 anchor)",
                          isolated_file_for(files["train"]) or "", key="study_isolated_file")
    short = st.text_input("Held-out compressed structures at the foundation model's level of "
                          "theory (short-range repulsion probe; empty: dimer curves only)",
                          short_range_test_for(pretrain) or "", key="study_short_range_test")
    c = st.columns(4)
    epochs = c[0].number_input("Epochs per final run", 1, 1000, 20, key="study_epochs")
    pilot_epochs = c[1].number_input("Epochs per pilot run", 1, 200, 5,
                                     key="study_pilot_epochs")
    small = c[2].number_input("Small training set (structures)", 2, 10_000, 25,
                              key="study_small_size")
    lrs_txt = c[3].text_input("Pilot learning rates (empty: five around each default)", "",
                              key="study_pilot_lrs")
    strategies = st.multiselect("Strategies", list(studymod.FINE_TUNING),
                                default=[s for s in studymod.FINE_TUNING
                                         if replay.strip() or s not in studymod.REPLAY],
                                format_func=lambda s: STRATEGIES[s].title,
                                key="study_strategies")

try:  # a multi-head foundation model: the head chosen on the Foundation model page
    model_heads = cache.inspect_selected(model_path)["heads"]
except MlipftError as exc:
    st.error(str(exc))
    st.stop()
chosen_head = selections.get("foundation_head")
chosen_head = (chosen_head if chosen_head in model_heads else model_heads[0]) \
    if len(model_heads) > 1 else None
role, _who = selections.identity()
executor, slurm = (None, None)
if role == "participant":
    shop = selections.workshop()
    executor, slurm = shop.executor, shop.slurm or None
try:
    inputs = studymod.StudyInputs(
        model=model_path, weak_model=selections.check_path(weak.strip()) or None,
        train=files["train"], valid=files["valid"], test=files["test"],
        pretrain_test=selections.check_path(pretrain.strip()) or None,
        replay=selections.check_path(replay.strip()) or None,
        isolated_file=selections.check_path(iso.strip()) or None,
        short_range_test=selections.check_path(short.strip()) or None, epochs=int(epochs),
        pilot_epochs=int(pilot_epochs), small_size=int(small),
        pilot_lrs=jobs.parse_list(lrs_txt, float, "Pilot learning rates"),
        strategies=strategies, executor=executor, slurm=slurm,
        foundation_head=chosen_head)
    studymod.check(inputs)
    study_plan = studymod.plan(inputs, ws)
    problem = None
except MlipftError as exc:
    inputs, problem, study_plan = None, str(exc), None
if problem:
    st.error(problem)
else:
    st.caption(study_plan.describe() + " The runs go on when the page is closed, and the "
               "study picks up where it stands when you come back.")
if st.button("Run the study", type="primary", disabled=inputs is None):
    try:
        with st.spinner("Fitting the E0s and queueing the learning-rate pilots…"):
            started = studymod.start(inputs, ws)
        selections.select(study=started.id)
    except MlipftError as exc:
        st.error(str(exc))

study_id = selections.get("study")
if not study_id:
    st.info("Press **Run the study** to start. Each finding below then fills in with its "
            "numbers and plots.")
    st.stop()


# ----------------------------------------------------------------- progress
@st.fragment(run_every=5)
def progress_section(drawn: str) -> None:
    """The study's progress, moving it on; ``drawn``: the stage the page below was drawn at,
    so that a study finished meanwhile (here or by another page) draws the page again."""
    try:
        study = studymod.load(study_id, ws)
    except MlipftError as exc:
        st.warning(str(exc))
        return
    if study.stage in studymod.ENDED_STAGES:
        if drawn not in studymod.ENDED_STAGES:
            st.rerun()
        return
    # where it stands now, before moving it on: an analysis this call runs takes minutes,
    # and the bar follows its steps
    now = studymod.progress(study, ws)
    bar = st.progress(now.fraction, text=now.text)

    def show_progress(p: studymod.StudyProgress) -> None:
        bar.progress(p.fraction, text=p.text)

    try:
        study = studymod.advance(study_id, ws, report=show_progress)
    except MlipftError as exc:
        st.error(str(exc))
        return
    show_progress(studymod.progress(study, ws))
    if study.tuned:
        st.caption("Tuned learning rates: " + ", ".join(
            f"{STRATEGIES[s].title} {lr:g}" for s, lr in study.tuned.items() if lr is not None))
    if study.stage in studymod.ENDED_STAGES:
        st.rerun()


try:
    progress_section(studymod.load(study_id, ws).stage)
    study = studymod.load(study_id, ws)  # as the progress left it
except MlipftError as exc:
    st.error(str(exc))
    st.stop()
if study.stage == "failed":
    st.error(f"The study stopped: {study.message}")
    if inputs is not None and st.button("Try again"):
        try:
            studymod.start(studymod.StudyInputs(**{**study.inputs.__dict__}), ws)
        except MlipftError as exc:
            st.error(str(exc))
        st.rerun()
    st.stop()
if study.stage != "done":
    st.info("The findings appear here when every run has ended and the analysis is done. "
            "The runs are listed on the "
            "**Fine-tuning runs** page as they go.")
    st.stop()

# ----------------------------------------------------------------- findings
inp = study.inputs
st.caption(f"This study: foundation model `{Path(inp.model).name}`"
           + (f", weaker model `{Path(inp.weak_model).name}`" if inp.weak_model else "")
           + f", target `{Path(inp.train).parent.name}/{Path(inp.train).name}`, "
             f"{count_of(inp.epochs, 'epoch')} per run, pilots of "
             f"{count_of(inp.pilot_epochs, 'epoch')} at "
           + (", ".join(f"{x:g}" for x in inp.pilot_lrs) if inp.pilot_lrs
              else "five learning rates around each strategy's default") + ".")
n_yes = sum(f.reproduced is True for f in study.findings)
st.subheader(f"Findings: {n_yes} of {len(study.findings)} reproduced on this data")
names = {r.id: r.name for r in jobs.list_runs(ws) if r.readable}
demo_study = Path(inp.model).resolve() in {Path(p).resolve() for p in demo["models"].values()}
extra = study.extra


def runs_line(ids: list[str]) -> str:
    return "Runs: " + ", ".join(f"`{names.get(i, i)}`" for i in ids) if ids else ""


def draw_chart(f: Finding, chart: Chart) -> None:
    """One plot of a finding, by its kind."""
    label = {"ylabel": chart.ylabel} if chart.ylabel else {}
    if chart.kind == "bar":
        fig = plots.bar(list(chart.series), list(chart.series.values()), title=chart.title,
                        **label)
    elif chart.kind == "grouped_bar":
        fig = plots.grouped_bar(chart.series, title=chart.title, **label)
        if chart.log:
            plots.tidy_log_axis(fig, "y", force_log=True)
    elif chart.kind == "learning_rates":
        fig = plots.lr_curve([], [], series={k: tuple(v) for k, v in chart.series.items()},
                             title=chart.title, **label)
    elif chart.kind == "dimers":
        panels = list(chart.series)
        panel = st.selectbox(chart.pick, panels, key=f"study_{f.key}_{chart.name}",
                             index=panels.index(chart.first) if chart.first in panels else 0)
        fig = plots.dimer_curves({k: tuple(v) for k, v in chart.series[panel].items()},
                                 title=chart.panel_title(panel), **label)
    else:
        return
    show.chart(st, fig, f"study_{chart.name}")


def draw_table(rows: list[dict], columns: list[str], digits: dict[str, int]) -> None:
    """A finding's table, its number columns with their decimals (one unless told)."""
    table = pd.DataFrame(rows, columns=columns or None)
    if not table.empty:
        st.dataframe(table, hide_index=True, column_config={
            c: st.column_config.NumberColumn(c, format=f"%.{digits.get(c, 1)}f")
            for c in table.columns if table[c].dtype.kind == "f"})


for f in study.findings:
    word, icon, color = (LEVEL_BADGE[f.level] if f.level in LEVEL_BADGE and not f.reproduced
                         else VERDICT[f.reproduced])
    with st.container(border=True):
        st.markdown(f"#### {f.number}. {f.title}")
        st.badge(word, icon=icon, color=color)
        st.markdown(f"*The study:* {f.claim}")
        st.markdown(f"**This data:** {f.summary}")
        for chart in f.charts:
            if not chart.below_table:
                draw_chart(f, chart)
        draw_table(f.table, f.columns, f.digits)
        for chart in f.charts:
            if chart.below_table:
                draw_chart(f, chart)
        for more in f.tables:
            st.caption(more.caption)
            draw_table(more.rows, more.columns, more.digits)
        st.caption(f.teaching)
        if f.key == "repulsion" and demo_study:
            budgets = budget_note(collapse_budgets() or {})
            if budgets:
                st.info(budgets + " (measured with `python bench/collapse_budget.py`)")
        line = runs_line(f.runs)
        if line:
            st.caption(line)
if extra.get("failed_runs"):
    st.warning("Runs that did not finish: " + "; ".join(
        f"{studymod.role_title(k, inp.small_size)}: {v}"
        for k, v in extra["failed_runs"].items()))
st.download_button("Study as JSON", pd.Series(study.to_dict()).to_json(indent=2),
                   f"{study.id}.json", "application/json")
st.info("Every run of the study is an ordinary run: compare them in detail on the **Compare** "
        "page, or continue with MD on the **Molecular dynamics** page.")
