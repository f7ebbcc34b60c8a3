"""Foundation model: registry, local files, inspection."""

import pandas as pd
import streamlit as st

from mlipft_core.errors import MlipftError
from mlipft_core.registry import expected_path, fetch, is_available, list_models, resolve
from mlipft_core.workspace import cached_sha256
from mlipft_ui import cache, plots, selections, show

st.title("Foundation model")
st.caption("Choose the model to fine-tune. Official models are downloaded through mace's own "
           "loaders into mace's cache; without internet, a copy put there by hand is used.")

specs = list_models()
rows = [{
    "name": s.name, "source": s.source, "offline": "yes" if is_available(s) else "no",
    "level of theory": s.level_of_theory, "training data": s.training_data,
    "elements": s.n_elements, "parameters": s.parameter_count,
    "size (MB)": s.file_size_mb, "heads": ", ".join(s.heads) if s.heads else "",
    "license": s.license, "reference": s.reference, "notes": s.notes,
} for s in specs]
table = pd.DataFrame(rows)
with st.expander("Registry: all models and what they were trained on", expanded=False):
    st.dataframe(table, hide_index=True)
    st.download_button("Download as CSV", table.to_csv(index=False), "model_registry.csv",
                       "text/csv")

def resolve_quiet(name: str) -> str | None:
    try:
        return resolve(name).source
    except MlipftError:
        return None


def file_digest(path: str) -> str | None:
    try:
        return cached_sha256(path)
    except (OSError, IsADirectoryError):
        return None


shop = selections.workshop()
staged = shop.staged_models() if shop else []
source = st.radio("Model source", (["Workshop models"] if staged else []) +
                  ["Registry", "Local file (path)", "Upload a .model file"],
                  horizontal=True, key="model_source")
current = selections.get("model")
chosen: str | None = None
trusted = False
if source == "Workshop models":
    pick = st.selectbox("Model the instructor provided", [p.name for p in staged])
    chosen = str(next(p for p in staged if p.name == pick))
    trusted = True
elif source == "Registry":
    names = [s.name for s in specs]
    idx = names.index(current) if current in names else names.index("demo-gfn1-strong")

    def availability(n: str) -> str:
        return f"{n}  ({'offline' if is_available(resolve(n)) else 'needs download'})"

    chosen = st.selectbox("Model", names, index=idx, format_func=availability)
    trusted = True
else:
    st.warning("Model files are Python pickles: loading one runs code from the file. "
               "Load only files from a source you trust.")
    if source == "Local file (path)":
        saved = current if current and resolve_quiet(current) == "local" else ""
        chosen = st.text_input("Path of a .model file", value=saved).strip() or None
        try:
            chosen = selections.check_path(chosen)
        except MlipftError as exc:
            st.error(str(exc))
            chosen = None
    else:
        up = st.file_uploader("Upload a .model file", type=["model", "pt"])
        if up is not None and selections.check_upload(up):
            chosen = str(selections.workspace().save_upload(up.name, up.getvalue()))
    digest = file_digest(chosen) if chosen else None
    if chosen and digest is None:
        st.error(f"No file at `{chosen}`.")
        chosen = None
    elif chosen:
        ws = selections.workspace()
        if ws.is_trusted(chosen):
            st.caption(f"You confirmed this file before (SHA-256 `{digest[:16]}…`).")
            trusted = True
        else:
            # the confirmation belongs to this file's content: another file, or this file
            # changed, needs a new one
            trusted = st.checkbox(f"I trust this file (SHA-256 `{digest[:16]}…`)",
                                  key=f"trust_{digest}", value=False)

if st.button("Use this model", type="primary", disabled=not chosen):
    try:
        spec = resolve(chosen)
        if spec.source == "local" and not trusted:
            st.error("Tick **I trust this file** first: model files are pickles.")
        else:
            if spec.source == "local":
                selections.workspace().trust(chosen)
            with st.spinner(f"Fetching {spec.display_name}…"):
                fetch(spec)
            if spec.name != selections.get("model"):
                selections.select(model=spec.name, model_label=spec.display_name,
                                  model_trusted=None, e0_choice=None)
            st.rerun()
    except MlipftError as exc:
        st.error(str(exc))

current = selections.get("model")
if not current:
    st.info("No model chosen yet.")
    st.stop()
st.divider()
try:
    spec = resolve(current)
except MlipftError as exc:
    st.error(f"The saved model is no longer usable: {exc}")
    st.stop()
st.subheader(spec.display_name)
if spec.source == "official" and not is_available(spec):
    st.error(f"{spec.display_name} is not in mace's cache ({expected_path(spec)}) and this "
             f"machine could not download it. Download {spec.url} and copy it to "
             f"`{expected_path(spec)}`, then reload.")
    st.stop()
path = selections.selected_model_path()
if path is None:
    if spec.source == "local" and not selections.model_is_trusted(current):
        st.warning(f"`{current}` is not confirmed as trusted (it is new here, or its content "
                   "changed since): choose it again above and tick **I trust this file**.")
    else:
        st.error("The model file cannot be opened; choose it again above.")
    st.stop()
try:
    info = cache.inspect_selected(path)
except MlipftError as exc:
    st.error(str(exc))
    st.stop()

c = st.columns(5)
c[0].metric("Parameters", f"{info['parameter_count']:,}")
c[1].metric("Cutoff", f"{info['cutoff']:.2f} Å")
c[2].metric("Channels", info["channels"])
c[3].metric("L (max)", info["max_L"])
c[4].metric("Interactions", info["num_interactions"])
st.markdown(f"**Elements ({len(info['elements'])}):** {' '.join(info['elements'])}")
st.markdown(f"**Heads:** {', '.join(info['heads'])} · **class:** {info['model_class']} · "
            f"**dtype:** {info['dtype']} · **file:** `{info['path']}` "
            f"({info['file_size_mb']:.2f} MB)")
if len(info["heads"]) > 1:
    fhead = st.selectbox(
        "Foundation head to fine-tune from", info["heads"],
        help="A multi-head model carries one head per level of theory. Runs start from this "
             "head (mace's --foundation_head), and the E0 page and the runs' E0s use its E0s.",
        key=selections.kept_widget("foundation_head", info["heads"][0], scope=path,
                                   fix=lambda v: v if v in info["heads"] else None))
    selections.keep("foundation_head", fhead)
if spec.notes:
    st.caption(spec.notes)

st.markdown("#### Atomic reference energies (E0s)")
e0 = pd.DataFrame(info["e0s"])
e0.index.name = "element"
# one column per head, in eV; a model with one head has one column of E0s
e0.columns = ["E0 (eV)"] if len(e0.columns) == 1 else [f"E0 (eV), head {h}" for h in e0.columns]
st.dataframe(e0.style.format("{:.4f}"))
st.download_button("E0s as CSV", e0.to_csv(), "e0s.csv", "text/csv")
fig = plots.grouped_bar(info["e0s"], title="E0 per element and head", ylabel="E0 (eV)")
show.chart(st, fig, "e0s")
with st.expander("Full architecture"):
    st.json(info["architecture"])

st.info("Next: load your data on the **Data** page and see this model's zero-shot errors.")
