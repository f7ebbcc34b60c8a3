"""Waiting for the server's model turn on a page: say who is ahead instead of freezing.

Every browser session of the app is a thread of one server process, and model work in that
process takes turns (:mod:`mlipft_core.modelwork`). A page wraps a model-heavy action in
:func:`shown_turn`: whenever its model work waits for other sessions', the page shows how
many are ahead, and the work goes on as soon as it is this session's turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from mlipft_core.modelwork import watching


def waiting_message(ahead: int, action: str) -> str:
    """The line a waiting session reads, e.g. "… 2 ahead of you. Your E0 fit starts …"."""
    others = "1 other person's model work is" if ahead == 1 else \
        f"{ahead} other people's model work is"
    return (f"The server runs one model at a time: {others} ahead of you. "
            f"Your {action} goes on as soon as it is your turn.")


@contextmanager
def shown_turn(action: str) -> Iterator[None]:
    """Inside the block, whenever this session's model work waits for its turn, the page
    says how many are ahead; the note goes as soon as the work goes on.

    ``action`` names what waits, in words ("E0 fit", "comparison").
    """
    box = st.empty()

    def on_wait(ahead: int) -> None:
        if ahead:
            box.info(waiting_message(ahead, action), icon="⏳")
        else:
            box.empty()

    try:
        with watching(on_wait):
            yield
    finally:
        box.empty()
