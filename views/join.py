"""Join page: the only page a browser without a valid workshop link sees."""

import streamlit as st

from mlipft_ui import selections

st.title("Join the workshop")
shop = selections.workshop()
name = " ".join((shop.name or "").split())
if not name or name.lower() in ("workshop", "a workshop", "the workshop"):
    welcome = "This is a workshop on the MLIP fine-tuning workbench."
elif "workshop" in name.lower().replace("-", " ").split():
    welcome = f"This is **{name}** on the MLIP fine-tuning workbench."
else:
    welcome = f"This is the **{name}** workshop on the MLIP fine-tuning workbench."
st.markdown(welcome + " Open the personal link your instructor gave you, or paste the code "
            "from it here.")
if st.query_params.get("token") or st.session_state.get("_mlipft_token"):
    st.error("That link is not valid for this workshop. Check it with your instructor.")
code = st.text_input("Your code (the part after token= in your link)", type="password")
if st.button("Join", type="primary", disabled=not code):
    role, _ = shop.who(code.strip())
    if role == "nobody":
        st.error("That code is not valid for this workshop.")
    else:
        st.query_params["token"] = code.strip()
        st.rerun()
