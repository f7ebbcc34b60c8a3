"""The package as pip installs it: the wheel holds the core and the whole app and declares the
dependencies, and ``mlipft app`` serves the app, from a checkout and from an installed wheel."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from email.parser import Parser
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import ROOT, mlipft_cmd

#: What a build needs of the checkout (the build writes build/ and *.egg-info beside it, so
#: it runs on a copy).
BUILD_INPUTS = ("pyproject.toml", "README.md", "app.py", "mlipft_core", "mlipft_ui", "views",
                "static", "sample_data")

#: Imported by the workbench's own code, so declared by the package.
DIRECT_DEPENDENCIES = {"torch", "mace-torch", "e3nn", "ase", "numpy", "scipy", "sympy",
                       "matscipy", "pandas", "streamlit", "plotly", "psutil", "submitit",
                       "pyyaml"}


def _sources(folder: str) -> set[str]:
    """The Python files of a folder of the checkout, relative to the checkout."""
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*.py")
            if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of the checkout, built without network from a copy of it."""
    work = tmp_path_factory.mktemp("build")
    src = work / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(work / "dist")],
                         cwd=src, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    (built,) = (work / "dist").glob("mlipft-*.whl")
    return built


def _metadata(wheel: Path) -> tuple[set[str], list[Requirement], str]:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(f"{info}/METADATA").decode())
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    return names, [Requirement(r) for r in meta.get_all("Requires-Dist") or []], entry_points


def test_wheel_holds_the_core_and_the_whole_app(wheel):
    names, _, entry_points = _metadata(wheel)
    assert "mlipft = mlipft_core.cli:main" in entry_points
    missing_core = _sources("mlipft_core") - names
    assert not missing_core, f"core modules left out of the wheel: {sorted(missing_core)}"
    app = {f"mlipft_app/{p}" for p in _sources("mlipft_ui") | _sources("views") | {"app.py"}}
    assert "mlipft_app/views/home.py" in app and "mlipft_app/mlipft_ui/navigation.py" in app
    missing_app = app - names
    assert not missing_app, f"pages or UI modules left out of the wheel: {sorted(missing_app)}"
    if (ROOT / "static" / "3Dmol-min.js").is_file():
        assert "mlipft_app/static/3Dmol-min.js" in names
    data = {f"mlipft_app/{p.relative_to(ROOT).as_posix()}"
            for p in (ROOT / "sample_data").rglob("*") if p.is_file()}
    assert data and not data - names, sorted(data - names)


def test_wheel_declares_ranges_the_tested_versions_meet(wheel):
    _, requirements, _ = _metadata(wheel)
    by_name = {r.name.lower(): r for r in requirements}
    assert not DIRECT_DEPENDENCIES - set(by_name), DIRECT_DEPENDENCIES - set(by_name)
    torch = by_name["torch"].specifier
    assert all(s.operator in (">=", ">") for s in torch), f"torch is pinned or capped: {torch}"
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, pinned = line.split("==")
            pins[name.strip().lower()] = pinned.strip()
    for name, req in by_name.items():
        assert req.specifier.contains(version(name), prereleases=True), (name, version(name))
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name])


def test_the_served_settings_are_the_checkouts_config():
    """``mlipft app`` gives Streamlit the settings of ``.streamlit/config.toml`` on its command
    line (Streamlit reads that file only from the folder it starts in)."""
    from mlipft_core.serve import SERVER_OPTIONS

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    flat = {f"{section}.{key}": str(value).lower() if isinstance(value, bool) else str(value)
            for section, values in config.items() for key, value in values.items()}
    assert flat == SERVER_OPTIONS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    """Status and body of a local URL (no proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _serve_and_stop(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Start ``cmd ... app --port P``, check the health endpoint, the page and the viewer
    script, then stop it with SIGTERM and check that Streamlit went with it."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(cmd + ["app", "--port", str(port)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        health = (0, b"")
        while time.time() < deadline and proc.poll() is None:
            try:
                health = _get(f"{base}/_stcore/health")
            except OSError:  # not listening yet
                time.sleep(0.5)
                continue
            if health == (200, b"ok"):
                break
            time.sleep(0.5)
        assert health == (200, b"ok"), proc.stdout.read() if proc.poll() is not None else health
        status, page = _get(f"{base}/")
        assert status == 200 and b"<title>" in page
        if (ROOT / "static" / "3Dmol-min.js").is_file():  # static serving is on
            assert _get(f"{base}/app/static/3Dmol-min.js")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        with pytest.raises(OSError):  # Streamlit stopped too: nothing listens any more
            _get(f"{base}/_stcore/health")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        else:
            try:  # whatever is left of the process group
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_mlipft_app_serves_the_checkout(tmp_path):
    """From a folder outside the checkout, so that no ``.streamlit/config.toml`` is read."""
    _serve_and_stop(mlipft_cmd(), tmp_path, dict(os.environ))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed (without dependencies) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                          "--target", str(target), str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return target


def _installed_env(installed: Path) -> dict[str, str]:
    """This Python with the installed wheel ahead of the checkout."""
    return {**os.environ, "PYTHONPATH": str(installed)}


@pytest.mark.slow
def test_mlipft_app_serves_the_installed_wheel(installed, tmp_path):
    env = _installed_env(installed)
    where = subprocess.run([sys.executable, "-c", "from mlipft_core.serve import app_script; "
                            "print(app_script())"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert where.stdout.strip() == str(installed / "mlipft_app" / "app.py"), where.stderr
    _serve_and_stop([sys.executable, "-m", "mlipft_core"], tmp_path, env)


@pytest.mark.slow
def test_installed_app_finds_its_pages(installed, tmp_path):
    """The installed entry script registers the installed pages and runs the home page."""
    script = installed / "mlipft_app" / "app.py"
    code = ("import sys\n"
            "from streamlit.testing.v1 import AppTest\n"
            f"at = AppTest.from_file({str(script)!r}, default_timeout=120).run()\n"
            "assert not at.exception, at.exception\n"
            "import mlipft_ui\n"
            "print(at.title[0].value)\n"
            "print(mlipft_ui.__file__)\n")
    # Streamlit puts the entry script's folder first on sys.path; AppTest runs it in-process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(script.parent), str(installed)])}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    title, ui = out.stdout.strip().splitlines()[-2:]
    assert title == "MLIP fine-tuning workbench"
    assert Path(ui).is_relative_to(installed / "mlipft_app")
