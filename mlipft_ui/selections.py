"""The user's selections (model, dataset, split, E0 choice, ...), kept in the workspace's
``state.json`` so that a reload, another page and the command line see them, and the rule for
loading model files: a local file is loaded only when its exact content was confirmed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

# imported here, the workshop's submission policy holds for every run this app queues (a
# participant's run limit and epoch cap, the run's owner and time limit, the one dispatcher)
from mlipft_core import workshop as shop_mod
from mlipft_core.data import load_split
from mlipft_core.e0 import choice_problem
from mlipft_core.errors import MlipftError
from mlipft_core.jobs.local import SETTINGS_IGNORED, settings_file, settings_problem
from mlipft_core.registry import model_path, resolve
from mlipft_core.workshop import INSTRUCTOR, AccessError
from mlipft_core.workspace import TRUST_IGNORED, Workspace, damaged_notice


def workshop():
    """The workshop served from the workspace folder, or ``None`` (single-user mode)."""
    root = Workspace().root
    if not (root / shop_mod.FILE).is_file():
        return None
    return shop_mod.load(root)


def identity() -> tuple[str, str | None]:
    """Who this browser session is: ``("single", None)`` outside a workshop, else
    ``("instructor", None)``, ``("participant", name)`` or ``("nobody", None)``.

    The token comes from the link (``?token=``) and is kept in the session and put back into
    the address, so a reload, a page change and a second tab with the same link all land in
    the same space.
    """
    shop = workshop()
    if shop is None:
        return "single", None
    token = st.query_params.get("token") or st.session_state.get("_mlipft_token")
    role, name = shop.who(token)
    if role != "nobody":
        st.session_state["_mlipft_token"] = token
        if st.query_params.get("token") != token:
            st.query_params["token"] = token
    return role, name


def workspace() -> Workspace:
    """This session's workspace: the workspace folder (``$MLIPFT_WORKSPACE`` or
    ``~/mlipft-workspace``), or in a workshop the participant's (or instructor's) own space.
    """
    role, name = identity()
    if role == "single":
        return Workspace()
    shop = workshop()
    if role == "participant":
        return shop.workspace_of(name)
    if role == "instructor":
        return shop.workspace_of(INSTRUCTOR)
    raise AccessError("this workshop needs your personal link (ask the instructor)")


def check_path(path: str | None) -> str | None:
    """A typed file path, resolved; in a workshop only inside the participant's space, the
    pre-staged files or the bundled demo world (:class:`AccessError` otherwise)."""
    if not path:
        return path
    role, name = identity()
    if role in ("single", "instructor"):
        try:
            return str(Path(path).expanduser().resolve())
        except (OSError, ValueError):  # e.g. a NUL byte, a loop of links
            shown = str(path).replace("\0", "\\0")
            raise AccessError(f"{shown} is not a usable file path: type the path of a file "
                              "(without control characters)") from None

    if role != "participant":
        raise AccessError("no access")
    return str(workshop().check_path(name, path))


def upload_limit_mb() -> float | None:
    shop = workshop()
    return None if shop is None else float(shop.limits.upload_limit_mb)


def check_upload(upload) -> bool:
    """``False`` (with a message) when an upload exceeds the workshop's size limit."""
    limit = upload_limit_mb()
    if limit is not None and upload is not None and upload.size > limit * 1e6:
        st.error(f"{upload.name} is {upload.size / 1e6:.1f} MB; this workshop accepts uploads "
                 f"up to {limit:g} MB.")
        return False
    return True


def get(key: str, default: Any = None) -> Any:
    return workspace().get(key, default)


def select(*, rerun: bool = True, **values: Any) -> None:
    """Save selections (visible to every page, a reload and the command line).

    When something changed, the page runs again at once (``rerun``), so that everything drawn
    before this call, the sidebar's "Current choices" included, shows the new values.
    """
    ws = workspace()
    before = ws.selections()
    after = ws.set(**values)
    if rerun and after != before:
        st.rerun()


def kept_widget(key: str, default: Any, *, fix=None, scope: str = "") -> str:
    """The widget key of a choice kept in the workspace under ``key``.

    Pass it as the widget's ``key`` (and no ``value``/``default``): the widget starts from the
    saved choice, so a reload, a new session and another tab of the same space show it again
    (in a workshop, the participant's own). ``fix(value)`` returns the saved value made valid
    for the widget now (e.g. clamped to a limit that changed), or ``None`` to use ``default``.
    ``scope`` goes into the widget key: a widget whose range depends on it starts afresh when
    it changes. Save what the widget returns with :func:`keep`.
    """
    wkey = f"_kept_{key}_{scope}"
    if wkey not in st.session_state:
        value = get(key, default)
        if fix is not None:
            value = fix(value)
        st.session_state[wkey] = default if value is None else value
    return wkey


def keep(key: str, value: Any) -> None:
    """Save a widget's choice in the workspace (see :func:`kept_widget`) when it changed."""
    if get(key) != value:
        select(rerun=False, **{key: value})


def state_problem() -> str | None:
    """Why the saved choices could not be read (they start afresh), or ``None``."""
    return workspace().state_problem()


def file_problems() -> list[str]:
    """One line for each helper file of this session's workspace that is damaged and
    ignored (run settings, confirmed model files, the selected E0 choice): what the page
    shows, in the same words as the command line's warnings."""
    ws = workspace()
    out = []
    problem = settings_problem(ws.root)
    if problem:
        out.append(damaged_notice(settings_file(ws.root), problem, SETTINGS_IGNORED))
    problem = ws.trust_problem()
    if problem:
        out.append(damaged_notice(ws.trust_file, problem, TRUST_IGNORED))
    problem = choice_problem(ws)
    if problem:
        out.append(problem)
    return out


def model_is_trusted(name_or_path: str) -> bool:
    """Registry models are trusted; a local file only when its content was confirmed."""
    try:
        spec = resolve(name_or_path)
    except MlipftError:
        return False
    if spec.source != "local":
        return True
    shop = workshop()
    if shop is not None:  # the instructor's pre-staged models are trusted for everyone
        p = Path(name_or_path).resolve()
        if shop.staged.resolve() in p.parents:
            return True
    return workspace().is_trusted(name_or_path)


def selected_split():
    """The selected split (:class:`~mlipft_core.data.Split`), or ``None`` when there is none
    or it can no longer be read."""
    split_id = get("split_id")
    if not split_id:
        return None
    try:
        return load_split(workspace(), split_id)
    except MlipftError:
        return None


def selected_model_path() -> str | None:
    """Resolved file of the selected model if it can be loaded without a prompt: a registry
    model, or a local file whose exact content the user confirmed."""
    name = get("model")
    if not name:
        return None
    try:
        return str(model_path(name, trusted=model_is_trusted(name), download=False))
    except MlipftError:
        return None


def flash(message: str, icon: str = ":material/check_circle:") -> None:
    """A message shown (as a toast) after the next rerun, e.g. when saving reruns the page."""
    st.session_state["_mlipft_flash"] = (message, icon)


def show_flash() -> None:
    item = st.session_state.pop("_mlipft_flash", None)
    if item:
        st.toast(item[0], icon=item[1])
