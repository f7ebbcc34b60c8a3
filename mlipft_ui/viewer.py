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


def trajectory_html(frames: list[Atoms], width: int = 360, height: int = 300,
                    interval_ms: int = 120) -> str:
    """An animated 3D view of a trajectory with play, pause and a frame slider."""
    import json

    buf = io.StringIO()
    for a in frames:
        write(buf, a, format="xyz")
    js = LOCAL_JS_URL if local_js_available() else \
        "https://cdn.jsdelivr.net/npm/3dmol@2.5.5/build/3Dmol-min.js"
    n = len(frames)
    return f"""<html><head><script src="{js}"></script></head><body style="margin:0">
<div id="v" style="width:{width}px;height:{height}px;position:relative"></div>
<div style="font:12px sans-serif;margin-top:4px">
<button id="play">Play</button> <button id="pause">Pause</button>
<input id="frame" type="range" min="0" max="{n - 1}" value="0" style="width:{width - 150}px">
<span id="label">0/{n - 1}</span></div>
<script>
const data = {json.dumps(buf.getvalue())};
const viewer = $3Dmol.createViewer(document.getElementById("v"), {{backgroundColor: "white"}});
viewer.addModelsAsFrames(data, "xyz");
viewer.setStyle({{}}, {{stick: {{radius: 0.12}}, sphere: {{scale: 0.25}}}});
viewer.zoomTo(); viewer.render();
const slider = document.getElementById("frame"), label = document.getElementById("label");
let timer = null;
function show(i) {{ viewer.setFrame(i); viewer.render(); slider.value = i;
  label.textContent = i + "/{n - 1}"; }}
document.getElementById("play").onclick = () => {{ if (timer) return;
  timer = setInterval(() => show((parseInt(slider.value) + 1) % {n}), {interval_ms}); }};
document.getElementById("pause").onclick = () => {{ clearInterval(timer); timer = null; }};
slider.oninput = () => show(parseInt(slider.value));
</script></body></html>"""
