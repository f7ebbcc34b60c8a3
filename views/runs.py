"""Fine-tuning runs: choose strategies and settings, launch, watch, keep."""

import pandas as pd
import streamlit as st

from mlipft_core import jobs
from mlipft_core.data import load_split
from mlipft_core.defaults import common_settings, replay_file_for
from mlipft_core.demo import isolated_file_for
from mlipft_core.e0 import load_choice
from mlipft_core.errors import MlipftError
from mlipft_core.replay import METHODS as REPLAY_METHODS
from mlipft_core.replay_sets import (
    NO_SET,
    missing_message,
    official_set_of,
    perturbed_structures,
)
from mlipft_core.strategies import PRESETS, SHORT_BUDGET, STRATEGIES, preset_settings
from mlipft_core.tune import count_of
from mlipft_ui import cache, labels, runs_panel, selections, tuning, turns

st.title("Fine-tuning runs")
st.caption("Each strategy becomes a mace_run_train configuration; runs are separate processes "
           "on this machine or jobs on a SLURM cluster, so they keep going when the browser is "
           "closed.")

model_path = selections.selected_model_path()
split_id = selections.get("split_id")
ws = selections.workspace()
ready = model_path is not None and bool(split_id)
if not ready:
    st.info("Choose a foundation model and a dataset split first (Foundation model and Data "
            "pages); the E0 page sets the E0s the runs use.")

# ----------------------------------------------------------------- launch
if ready:
    try:
        split = load_split(ws, split_id)
    except MlipftError as exc:
        st.error(str(exc))
        st.stop()
    choice = load_choice(ws)
    try:
        heads = cache.inspect_selected(model_path)["heads"]
    except MlipftError as exc:
        st.error(str(exc))
        st.stop()
    fhead = selections.get("foundation_head") if len(heads) > 1 else None
    fhead = fhead if fhead in heads else (heads[0] if len(heads) > 1 else None)
    st.markdown(f"Model **{selections.get('model_label') or selections.get('model')}**"
                + (f" (from its head **{fhead}**, chosen on the Foundation model page)"
                   if fhead else "")
                + f" · split **{labels.split_label(split)}** · E0s: "
                  f"**{labels.e0_choice_label(choice)}**")
    # the choices below are kept in the workspace: a reload shows them again

    def known_strategies(v) -> list[str] | None:
        return [n for n in v if n in STRATEGIES] or None if isinstance(v, list) else None

    picked = st.multiselect(
        "Strategies", list(STRATEGIES), format_func=labels.strategy_title,
        key=selections.kept_widget("run_strategies", ["naive"], fix=known_strategies))
    selections.keep("run_strategies", list(picked))
    model_key = selections.get("model") or model_path
    applied = tuning.tuned(model_key, split.id)
    preset = st.radio(
        "Settings preset", list(PRESETS), format_func=labels.preset_title, horizontal=True,
        help="Short budget: each strategy's defaults, measured for 20 epochs on CPU. Study "
             "protocol: the study's settings per method (learning rate, EMA decay, gradient "
             "clipping; the universal loss with energy and forces weights 10/10, no weight "
             "decay, float64), meant for hundreds of epochs on a GPU. A learning rate from a "
             "pilot replaces the preset's.",
        key=selections.kept_widget("run_preset", SHORT_BUDGET,
                                   fix=lambda v: v if v in PRESETS else None))
    selections.keep("run_preset", preset)
    start = {n: preset_settings(n, preset) for n in picked}
    st.caption("Per-strategy settings (edit a cell to change it):")
    # settings a strategy does not have read as a dash; the columns only when one applies
    optional = {"LoRA rank": "lora_rank", "LoRA alpha": "lora_alpha",
                "replay samples (structures)": "num_samples_pt"}
    shown_optional = [c for c, k in optional.items()
                      if any(k in STRATEGIES[n].defaults for n in picked)]
    per = pd.DataFrame([{"strategy": STRATEGIES[n].title, "key": n,
                         "learning rate": applied[n]["best_lr"] if n in applied
                         else start[n]["lr"],
                         "learning rate from": "pilot" if n in applied else preset,
                         "EMA decay": start[n]["ema_decay"],
                         "gradient clipping": start[n]["clip_grad"],
                         "settings from": preset,
                         **{c: f"{STRATEGIES[n].defaults[optional[c]]:g}"
                            if optional[c] in STRATEGIES[n].defaults else labels.DASH
                            for c in shown_optional}}
                        for n in picked],
                       columns=["strategy", "key", "learning rate", "learning rate from",
                                "EMA decay", "gradient clipping", "settings from",
                                *shown_optional])
    applied_tag = "-".join(f"{k}{v['best_lr']:g}" for k, v in sorted(applied.items()))
    applied_tag += "-" + preset.replace(" ", "_")
    per = st.data_editor(per, hide_index=True,
                         disabled=["strategy", "learning rate from", "settings from"],
                         column_config={"key": None, **{
                             c: st.column_config.TextColumn(
                                 c, help=f"{labels.DASH}: the strategy has no such setting")
                             for c in shown_optional}},
                         key=f"per_strategy_{'-'.join(picked)}_{applied_tag}")
    c = st.columns(5)
    # in a workshop the instructor's epoch cap is the widget's maximum (and caps the default)
    shop = selections.workshop()
    epoch_cap = shop.limits.max_epochs if shop is not None else None
    max_epochs = int(epoch_cap or 10000)

    def fit_epochs(v) -> int | None:
        try:
            return min(max(int(v), 1), max_epochs)
        except (TypeError, ValueError):
            return None

    shared = common_settings(preset)  # the defaults every strategy shares
    epochs = c[0].number_input(
        "Epochs", 1, max_epochs, step=1,
        key=selections.kept_widget("run_epochs",
                                   min(int(shared["max_num_epochs"]), max_epochs),
                                   fix=fit_epochs, scope=str(max_epochs)),
        help=f"The workshop caps runs at {epoch_cap} epochs." if epoch_cap else None)
    selections.keep("run_epochs", int(epochs))
    batch = c[1].number_input("Batch size (structures)", 1, 1024, int(shared["batch_size"]))
    seed = c[2].number_input("Seed", 0, 2**31 - 1, int(shared["seed"]))
    device = c[3].selectbox("Device", ["auto", "cpu", "cuda"],
                            help="auto: a GPU when one is visible to the executor")
    precisions = ["float32", "float64"]
    dtype = c[4].selectbox("Precision", precisions,
                           index=precisions.index(shared["default_dtype"]),
                           key=f"run_precision_{preset}")
    c = st.columns(3)
    e_weight = c[0].number_input("Energy weight", 0.0, 1e6, float(shared["energy_weight"]),
                                 key=f"run_energy_weight_{preset}")
    f_weight = c[1].number_input("Forces weight", 0.0, 1e6, float(shared["forces_weight"]),
                                 key=f"run_forces_weight_{preset}")
    ema = c[2].checkbox("EMA (moving average of the weights)", value=bool(shared["ema"]))
    st.caption(f"From the {preset} preset: mace's **{shared['loss']}** loss, weight decay "
               f"{shared['weight_decay']:g}.")
    lr_sweep = st.text_input("Learning rates to sweep (comma-separated; empty: the "
                             "table's value for each strategy)", "")
    seeds = st.text_input("Extra seeds to sweep (comma-separated)", "")
    sizes_txt = st.text_input("Training-set sizes for a learning curve (comma-separated, "
                              "e.g. 10,30,100; empty: the whole training set)", "")
    replay_key = f"run_replay_file_{fhead or ''}"
    replay = st.text_input("Replay file for multihead strategies (pretraining "
                           "configurations)",
                           replay_file_for(selections.get("model"), fhead) or "",
                           key=replay_key)
    official = official_set_of(replay.strip()) if replay.strip() else None
    try:  # mace's own set, not fetched yet: said below, and refused only for replay runs
        replay = (replay.strip() if official is not None else
                  selections.check_path(replay.strip()) if replay.strip() else "")
    except MlipftError as exc:
        st.error(str(exc))
        st.stop()
    replay_method = "random"
    model_name = str(selections.get("model") or "")
    if not replay and any(STRATEGIES[n].multihead for n in picked) and \
            model_name.startswith(NO_SET):
        st.info("mace has no replay set for this model. Give a file of structures like its "
                "training data above, or use perturbed copies of your training structures: "
                "pseudolabelled replay labels them with the foundation model itself, so they "
                "need no labels of their own.")

        def use_perturbed() -> None:
            try:
                st.session_state[replay_key] = str(perturbed_structures(
                    split.file("train"), workspace=ws))
            except MlipftError as exc:
                st.session_state["run_perturbed_problem"] = str(exc)

        st.button("Use 200 perturbed copies of the training structures (0.05 Å)",
                  on_click=use_perturbed)
        if st.session_state.get("run_perturbed_problem"):
            st.error(st.session_state.pop("run_perturbed_problem"))
    if official is not None and any(STRATEGIES[n].multihead for n in picked):
        if official.is_cached():
            st.caption(f"Replays mace's {official.title} ({official.level_of_theory}): mace "
                       "selects each run's replay samples from it itself.")
        else:
            st.warning(missing_message(official, selections.get("model")) + ".")
    if any(STRATEGIES[n].multihead for n in picked):
        replay_method = st.radio(
            "Replay subset chosen by", list(REPLAY_METHODS), format_func=REPLAY_METHODS.get,
            horizontal=True, help="When the replay file holds more structures than a "
            "strategy's replay samples, the run replays that many of them, chosen by mace's "
            "own selection (mace_finetuning_select); farthest point sampling uses the "
            "foundation model's descriptors.",
            key=selections.kept_widget("run_replay_selection", "random",
                                       fix=lambda v: v if v in REPLAY_METHODS else None))
        selections.keep("run_replay_selection", replay_method)

    # where the runs execute
    role, _who = selections.identity()
    executor, slurm_opts = runs_panel.executor_panel(ws, shop, role)

    def cell(value, kind):
        """A setting typed into the strategy table: a number, or none (a dash, empty)."""
        text = "" if value is None or (isinstance(value, float) and pd.isna(value)) \
            else str(value).strip()
        if text in ("", labels.DASH, "-"):
            return None
        number = float(text)
        if kind is int and number != int(number):
            raise ValueError(text)
        return kind(number)

    plan, problem = None, None
    try:
        lrs = jobs.parse_list(lr_sweep, float, "Learning rates to sweep")
        seed_list = [int(seed)] + [x for x in jobs.parse_list(seeds, int, "Extra seeds")
                                   if x != int(seed)]
        sizes = jobs.parse_list(sizes_txt, int, "Training-set sizes")
        own = {}
        for row in per.to_dict("records"):
            own[row["key"]] = {"lr": float(row["learning rate"]),
                               "ema_decay": float(row["EMA decay"]),
                               "clip_grad": float(row["gradient clipping"]),
                               **{k: cell(row.get(c), float if k == "lora_alpha" else int)
                                  for c, k in optional.items()}}
        common = {"max_num_epochs": int(epochs), "batch_size": int(batch), "seed": int(seed),
                  "energy_weight": e_weight, "forces_weight": f_weight, "ema": ema,
                  "default_dtype": dtype, "subselect_pt": replay_method, "preset": preset,
                  "loss": shared["loss"], "weight_decay": shared["weight_decay"]}
        if device != "auto":
            common["device"] = device
        if fhead:
            common["foundation_head"] = fhead
        plan = jobs.expand_sweep(
            own, foundation_model=model_path, train_file=str(split.file("train")),
            valid_file=str(split.file("valid")) if split.counts.get("valid") else None,
            test_file=str(split.file("test")) if split.counts.get("test") else None,
            e0s=choice["id"] if choice else "estimated", replay_file=replay or None,
            isolated_file=isolated_file_for(split.file("train")), tuning=applied,
            common=common, lrs=lrs, seeds=seed_list if len(seed_list) > 1 else [],
            sizes=sizes)
    except (TypeError, ValueError):
        problem = ("Every cell of the strategy table needs a number (learning rate, EMA decay, "
                   "gradient clipping, LoRA rank and alpha, replay samples; LoRA rank and "
                   "replay samples whole numbers), "
                   f"or {labels.DASH} where the strategy has no such setting.")
    except MlipftError as exc:
        problem = str(exc)
    if problem:
        st.error(problem)
    elif not plan.specs:
        st.info("Pick at least one strategy.")
    else:
        where = "on this machine" if executor == "local" else "on SLURM"
        st.markdown(f"**{plan.n_runs} run(s)** will be queued {where}: {plan.describe()}.")
    launch = st.button("Launch", type="primary", disabled=bool(problem) or not plan or
                       not plan.specs)
    if plan and plan.specs and not problem:
        with st.expander("Tune the learning rate first (a short pilot per strategy)"):
            first = {}
            for sp in plan.specs:
                first.setdefault(sp.strategy, sp)
            tuning.pilot_panel(first, model_key, split.id, executor=executor,
                               slurm=slurm_opts)
    with st.expander("What each strategy changes, and when the study recommends it"):
        for s in STRATEGIES.values():
            st.markdown(f"**{s.title}** (default learning rate {s.defaults['lr']:g}): "
                        f"{s.changes} *{s.when}*")
    if launch and plan and plan.specs:
        with st.spinner(f"Preparing {plan.n_runs} run(s): data checks, E0s, configurations…"):
            try:
                with turns.shown_turn("launch"):
                    recs = jobs.submit_plan(plan, workspace=ws, executor=executor,
                                            slurm=slurm_opts)
                jobs_txt = ", ".join(r.slurm_job_id for r in recs if r.slurm_job_id)
                st.success(f"Queued {count_of(len(recs), 'run')}"
                           + (f" as SLURM job(s) {jobs_txt}" if jobs_txt else "") + ".")
                warned = (w for r in recs for w in (r.spec.get("warnings") or []))
                for warning in dict.fromkeys(warned):
                    st.warning(warning)
            except MlipftError as exc:
                st.error(str(exc))


# ----------------------------------------------------------------- watch
st.subheader("Runs")
records = runs_panel.runs_section(ws)

# ----------------------------------------------------------------- actions
if records:
    st.subheader("Actions")
    runs_panel.actions_panel(ws, records)

st.info("Next: when runs are done, put them side by side on the **Compare** page.")
