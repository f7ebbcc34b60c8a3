"""The study's findings on your model and data, in one action."""

from pathlib import Path

import pandas as pd
import streamlit as st

from mlipft_core import jobs
from mlipft_core import study as studymod
from mlipft_core.demo import demo_paths, isolated_file_for, short_range_test_for
from mlipft_core.errors import MlipftError
from mlipft_core.registry import DEMO_MODEL_NAMES
from mlipft_core.strategies import STRATEGIES
from mlipft_core.tune import count_of
from mlipft_ui import plots, selections, show

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

# ----------------------------------------------------------------- inputs
model_path = selections.selected_model_path() or demo["models"]["demo-gfn1-strong"]
model_name = selections.get("model_label") or selections.get("model") or "Demo strong (GFN1-xTB)"
split = selections.selected_split()
files = {"train": demo["sn2_train"], "valid": demo["sn2_valid"], "test": demo["sn2_test"]}
if split is not None and split.counts.get("test"):
    files = {p: str(split.file(p)) if split.counts.get(p) else None
             for p in ("train", "valid", "test")}
is_demo_model = selections.get("model") in DEMO_MODEL_NAMES or selections.get("model") is None
st.markdown(f"Foundation model **{model_name}** · target data "
            f"**{split.id if split is not None and split.counts.get('test') else 'demo SN2 (B3LYP)'}**")
with st.expander("Inputs and settings", expanded=False):
    c = st.columns(2)
    weak = c[0].text_input("Weaker foundation model (for the FM-quality finding; empty: skip)",
                           demo["models"]["demo-gfn1-weak"] if is_demo_model else "")
    pretrain = c[1].text_input("Held-out pretraining test set (forgetting)",
                               demo["pretrain_test"] if is_demo_model else "")
    c = st.columns(2)
    replay = c[0].text_input("Replay file (pretraining structures)",
                             demo["replay_pool"] if is_demo_model else "")
    iso = c[1].text_input("Isolated-atom energies of the target's method (E0 anchor)",
                          isolated_file_for(files["train"]) or "")
    short = st.text_input("Held-out compressed structures at the foundation model's level of "
                          "theory (short-range repulsion probe; empty: dimer curves only)",
                          short_range_test_for(pretrain) or "")
    c = st.columns(4)
    epochs = c[0].number_input("Epochs per final run", 1, 1000, 20)
    pilot_epochs = c[1].number_input("Epochs per pilot run", 1, 200, 5)
    small = c[2].number_input("Small training set (structures)", 2, 10_000, 25)
    lrs_txt = c[3].text_input("Pilot learning rates (empty: five around each default)", "")
    strategies = st.multiselect("Strategies", list(studymod.FINE_TUNING),
                                default=list(studymod.FINE_TUNING),
                                format_func=lambda s: STRATEGIES[s].title)

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
        strategies=strategies, executor=executor, slurm=slurm)
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
    if study.stage in ("done", "failed"):
        if drawn not in ("done", "failed"):
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
    if study.stage in ("done", "failed"):
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
extra = study.extra


def runs_line(ids: list[str]) -> str:
    return "Runs: " + ", ".join(f"`{names.get(i, i)}`" for i in ids) if ids else ""


def pilot_plot() -> None:
    series = {}
    for s, res in extra.get("pilots", {}).items():
        pts = [(p["lr"], p["valid_forces_rmse_mev_per_a"]) for p in res["results"]
               if p["valid_forces_rmse_mev_per_a"] is not None]
        if pts:
            series[STRATEGIES[s].title] = ([x for x, _ in pts], [y for _, y in pts])
    if series:
        show.chart(st, plots.lr_curve([], [], series=series,
                                      title="Learning-rate pilots: validation force error "
                                            "after the pilot epochs"), "study_pilots")


for f in study.findings:
    word, icon, color = VERDICT[f.reproduced]
    with st.container(border=True):
        st.markdown(f"#### {f.number}. {f.title}")
        st.badge(word, icon=icon, color=color)
        st.markdown(f"*The study:* {f.claim}")
        st.markdown(f"**This data:** {f.summary}")
        table = pd.DataFrame(f.table, columns=f.columns or None)
        if f.number == 1 and extra.get("e0_runs"):
            e = extra["e0_runs"]
            fig = plots.grouped_bar(
                {"anchored E0s": {"target": e["anchored"]["target_e"],
                                  "pretraining (outside the family)": e["anchored"]["pretrain_e"]},
                 "'average' E0s": {"target": e["average"]["target_e"],
                                   "pretraining (outside the family)": e["average"]["pretrain_e"]}},
                title="Energy RMSE of naive fine-tuning by E0 choice (log scale)",
                ylabel="energy RMSE (meV/atom)")
            plots.tidy_log_axis(fig, "y", force_log=True)
            show.chart(st, fig, "study_e0")
        elif f.number in (2, 5) and not table.empty:
            col = "target force RMSE (meV/Å)" if f.number == 2 else "after naive fine-tuning (meV/Å)"
            key = "model" if f.number == 2 else "foundation model"
            show.chart(st, plots.bar(table[key].astype(str), table[col],
                                     title="Target force RMSE", ylabel="force RMSE (meV/Å)"),
                       f"study_f{f.number}")
        elif f.number == 3 and not table.empty:
            show.chart(st, plots.bar(table["strategy"], table["forgetting ratio"],
                                     title="Forgetting ratio (1 = nothing forgotten)",
                                     ylabel="pretraining F RMSE / foundation's"), "study_f3")
        elif f.number == 4:
            pilot_plot()
        elif f.number == 6 and "soft spots (% of structures)" in table.columns:
            show.chart(st, plots.bar(table["model"], table["soft spots (% of structures)"],
                                     title="Soft spots on held-out compressed structures",
                                     ylabel="structures where the model keeps less than half "
                                            "the reference's repulsive force (%)"), "study_f6")
        if not table.empty:
            st.dataframe(table, hide_index=True, column_config={
                c: st.column_config.NumberColumn(c, format="%.2f" if "ratio" in c else "%.1f")
                for c in table.columns if table[c].dtype.kind == "f"})
        if f.number == 6 and extra.get("dimers"):
            pairs = list(extra["dimers"])
            walls = extra.get("dimer_walls") or f.table
            # first the pair naive fine-tuning changed most
            worn = sorted((r for r in walls if r.get("naive change vs foundation (%)")
                           is not None), key=lambda r: r["naive change vs foundation (%)"])
            first = worn[0]["pair"] if worn and worn[0]["pair"] in pairs else pairs[0]
            pair = st.selectbox("Element pair", pairs, index=pairs.index(first))
            series = {studymod.display_name(k, plot=True): tuple(v)
                      for k, v in extra["dimers"][pair].items()}
            show.chart(st, plots.dimer_curves(series, title=f"{pair} dimer"), "study_dimer")
            if extra.get("dimer_walls") and "soft spots (% of structures)" in table.columns:
                wt = pd.DataFrame(walls)
                wt = wt[[c for c in studymod.WALL_COLUMNS if c in wt.columns]]
                st.caption("Walls: energy at 0.5 Å above the curve's minimum, for every pair "
                           "of the target's elements.")
                st.dataframe(wt, hide_index=True, column_config={
                    c: st.column_config.NumberColumn(c, format="%.1f")
                    for c in wt.columns if wt[c].dtype.kind == "f"})
        st.caption(f.teaching)
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
