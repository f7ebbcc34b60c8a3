"""Join page: the only page a browser without a valid workshop link sees."""

import streamlit as st

from mlipft_ui import selections

st.title("Join the workshop")
shop = selections.workshop()
st.markdown(f"This is the **{shop.name}** workshop of the MLIP fine-tuning workbench. Open the "
            "personal link your instructor gave you, or paste the code from it here.")
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
