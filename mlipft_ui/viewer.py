"""py3Dmol structure viewer that works offline.

py3Dmol loads 3Dmol.js from a CDN by default; the setup script puts a copy of the same
version in ``static/3Dmol-min.js`` (from the npm package ``3dmol``), which Streamlit serves
at ``/app/static/3Dmol-min.js``. Without that copy the viewer falls back to the CDN.
"""

from __future__ import annotations

import io
from pathlib import Path

from ase import Atoms
from ase.io import write

LOCAL_JS = Path(__file__).resolve().parent.parent / "static" / "3Dmol-min.js"
LOCAL_JS_URL = "/app/static/3Dmol-min.js"


def local_js_available() -> bool:
    return LOCAL_JS.is_file()


def structure_html(atoms: Atoms, width: int = 520, height: int = 380,
                   style: str = "ballstick") -> str:
    """HTML of an interactive 3D view of one structure (unit cell drawn when periodic)."""
    import py3Dmol

    buf = io.StringIO()
    write(buf, atoms, format="xyz")
    kwargs = {"js": LOCAL_JS_URL} if local_js_available() else {}
    view = py3Dmol.view(width=width, height=height, **kwargs)
    view.addModel(buf.getvalue(), "xyz")
    if style == "ballstick":
        view.setStyle({"stick": {"radius": 0.12}, "sphere": {"scale": 0.25}})
    else:
        view.setStyle({style: {}})
    if atoms.pbc.any():
        cell = atoms.cell
        for a, b in [((0, 0, 0), (1, 0, 0)), ((0, 0, 0), (0, 1, 0)), ((0, 0, 0), (0, 0, 1)),
                     ((1, 0, 0), (1, 1, 0)), ((1, 0, 0), (1, 0, 1)), ((0, 1, 0), (1, 1, 0)),
                     ((0, 1, 0), (0, 1, 1)), ((0, 0, 1), (1, 0, 1)), ((0, 0, 1), (0, 1, 1)),
                     ((1, 1, 0), (1, 1, 1)), ((1, 0, 1), (1, 1, 1)), ((0, 1, 1), (1, 1, 1))]:
            p, q = cell.cartesian_positions([a])[0], cell.cartesian_positions([b])[0]
            view.addLine({"start": dict(zip("xyz", map(float, p))),
                          "end": dict(zip("xyz", map(float, q))), "color": "gray"})
    view.zoomTo()
    return view._make_html()
