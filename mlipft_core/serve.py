"""Serving the Streamlit app (``mlipft app``, ``mlipft workshop serve``).

The app is the entry script ``app.py`` with its pages (``views/``), its UI modules
(``mlipft_ui/``) and the offline copy of the 3D viewer's script (``static/``), side by side.
In a checkout they lie at the top of the repository; an installed package holds the same
folder as ``mlipft_app/`` beside ``mlipft_core/``. Streamlit puts the entry script's folder
on ``sys.path`` and serves its ``static/`` folder, so both layouts run unchanged.

Streamlit reads ``.streamlit/config.toml`` only from the folder it is started in, so the
app's server settings are also given on its command line (:data:`SERVER_OPTIONS`): the app
serves the same way from any folder, from a checkout or an installed package.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from .errors import MlipftError

#: The installed app's folder, beside ``mlipft_core/`` (see the module's description).
APP_FOLDER = "mlipft_app"

#: The app's server settings: those of the checkout's ``.streamlit/config.toml``.
SERVER_OPTIONS: dict[str, str] = {
    "server.enableStaticServing": "true",  # the offline 3D viewer script in static/
    "server.headless": "true",
    "server.fileWatcherType": "none",
    "server.runOnSave": "false",
    "browser.gatherUsageStats": "false",
    "client.toolbarMode": "minimal",
}

#: Seconds Streamlit has to stop when this process is asked to stop.
STOP_TIMEOUT_S = 15.0


def app_script() -> Path:
    """The app's entry script: the installed package's, else the checkout's ``app.py``.

    Returns
    -------
    Path
        ``mlipft_app/app.py`` beside ``mlipft_core/`` in an installed package, else the
        ``app.py`` at the top of the checkout that holds ``mlipft_core/``.

    Raises
    ------
    MlipftError
        Neither is there (an installation without the app).
    """
    base = Path(__file__).resolve().parent.parent
    for candidate in (base / APP_FOLDER / "app.py", base / "app.py"):
        if candidate.is_file():
            return candidate
    raise MlipftError(f"the app is missing from this installation: no {APP_FOLDER}/app.py "
                      f"in {base}; reinstall mlipft", code="app_missing")


def streamlit_command(port: int | None = None, *, address: str | None = None,
                      max_upload_mb: float | None = None) -> list[str]:
    """The command line that serves the app with this Python's Streamlit.

    Parameters
    ----------
    port
        Port to serve on (default: Streamlit's, 8501).
    address
        Address to serve on (default: Streamlit's, every address).
    max_upload_mb
        Upload size limit in MB, rounded up to whole MB (default: Streamlit's, 200).

    Returns
    -------
    list of str
        The command, for :mod:`subprocess`.
    """
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_script())]
    if port is not None:
        cmd += ["--server.port", str(port)]
    if address is not None:
        cmd += ["--server.address", address]
    if max_upload_mb is not None:
        cmd += ["--server.maxUploadSize", str(max(1, int(max_upload_mb + 0.999)))]
    for option, value in SERVER_OPTIONS.items():
        cmd += [f"--{option}", value]
    return cmd


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends this process as SystemExit, so that the server is stopped first."""
    raise SystemExit(128 + signum)


def serve_app(port: int | None = None, *, address: str | None = None,
              max_upload_mb: float | None = None, workspace: str | Path | None = None) -> int:
    """Serve the app until Streamlit ends or this process is interrupted or terminated.

    Parameters
    ----------
    port, address, max_upload_mb
        See :func:`streamlit_command`.
    workspace
        The workspace the app serves (``MLIPFT_WORKSPACE``; default: this process's).

    Returns
    -------
    int
        Streamlit's exit status. Ctrl-C (KeyboardInterrupt) and SIGTERM (as SystemExit with
        status 143) stop Streamlit first, then end this process.
    """
    env = dict(os.environ)
    if workspace is not None:
        env["MLIPFT_WORKSPACE"] = str(workspace)
    proc = subprocess.Popen(streamlit_command(port, address=address,
                                              max_upload_mb=max_upload_mb), env=env)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm) if in_main else None
    try:
        return proc.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def workshop_port(base_url: str, port: int | None = None) -> int:
    """The port a workshop is served on.

    Parameters
    ----------
    base_url
        The address participants open, e.g. ``http://gpu-server:8501``.
    port
        The port the instructor asked for.

    Returns
    -------
    int
        ``port``, else the port of ``base_url``, else 8501.
    """
    return port or urlparse(base_url).port or 8501
