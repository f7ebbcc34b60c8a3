"""3D structure and trajectory viewers (3Dmol.js) that work offline.

The setup script puts a copy of 3Dmol.js (npm package ``3dmol``, the version py3Dmol uses) in
``static/3Dmol-min.js``, which Streamlit serves at ``/app/static/3Dmol-min.js``; without that
copy the viewer falls back to the CDN.

Views fill their frame's width, are centred, colour atoms by element (Jmol colours, with a
legend), draw the periodic cell when there is one, and turn molecules so that their longest
extent lies across the screen (an X–C–Y complex is seen from the side, carbon in the middle).
Trajectories show the simulated time in fs and have play / pause buttons and a slider.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.data.colors import jmol_colors
from ase.io import write

LOCAL_JS = Path(__file__).resolve().parent.parent / "static" / "3Dmol-min.js"
LOCAL_JS_URL = "/app/static/3Dmol-min.js"
CDN_JS = "https://cdn.jsdelivr.net/npm/3dmol@2.5.5/build/3Dmol-min.js"

_CELL_EDGES = [((0, 0, 0), (1, 0, 0)), ((0, 0, 0), (0, 1, 0)), ((0, 0, 0), (0, 0, 1)),
               ((1, 0, 0), (1, 1, 0)), ((1, 0, 0), (1, 0, 1)), ((0, 1, 0), (1, 1, 0)),
               ((0, 1, 0), (0, 1, 1)), ((0, 0, 1), (1, 0, 1)), ((0, 0, 1), (0, 1, 1)),
               ((1, 1, 0), (1, 1, 1)), ((1, 0, 1), (1, 1, 1)), ((0, 1, 1), (1, 1, 1))]

_STYLE = """
body{margin:0;font:13px system-ui,-apple-system,'Segoe UI',sans-serif;color:#31333f}
.wrap{display:flex;flex-direction:column;align-items:center;width:100%}
.view{width:100%;position:relative;border:1px solid #e6e6ea;border-radius:8px}
.legend{display:flex;gap:12px;flex-wrap:wrap;justify-content:center;margin-top:6px}
.legend span{display:inline-flex;align-items:center;gap:4px}
.dot{width:12px;height:12px;border-radius:50%;border:1px solid #999;display:inline-block}
.ctl{display:flex;align-items:center;gap:8px;margin-top:8px;width:100%;justify-content:center}
.ctl button{background:#ff4b4b;color:#fff;border:0;border-radius:6px;padding:5px 14px;
  white-space:nowrap;
  font:inherit;cursor:pointer}
.ctl button.secondary{background:#fff;color:#31333f;border:1px solid #d0d0d6}
.ctl input[type=range]{flex:1;max-width:60%;accent-color:#ff4b4b}
.ctl .time{min-width:150px;text-align:right;font-variant-numeric:tabular-nums}
"""


def local_js_available() -> bool:
    return LOCAL_JS.is_file()


def _js_url() -> str:
    return LOCAL_JS_URL if local_js_available() else CDN_JS


def _principal_rotation(atoms: Atoms) -> np.ndarray:
    """The proper rotation (3x3) onto the principal axes of a structure's positions."""
    pos = atoms.positions - atoms.positions.mean(axis=0)
    _, _, vt = np.linalg.svd(pos, full_matrices=True)  # 3x3 also for one or two atoms
    return vt if np.linalg.det(vt) > 0 else vt * np.array([[1], [1], [-1]])


def oriented(atoms: Atoms, rotation: np.ndarray | None = None) -> Atoms:
    """A molecule turned onto its principal axes (longest extent along x, shortest along z,
    the viewing direction), or by ``rotation``; periodic structures are left as they are."""
    if atoms.pbc.any() or len(atoms) < 2:
        return atoms
    rot = _principal_rotation(atoms) if rotation is None else rotation
    a = atoms.copy()
    a.positions = (a.positions - a.positions.mean(axis=0)) @ rot.T
    return a


def _xyz(frames: Sequence[Atoms]) -> str:
    buf = io.StringIO()
    for a in frames:
        write(buf, a, format="xyz")
    return buf.getvalue()


def _legend(symbols: Sequence[str]) -> str:
    items = []
    for s in sorted(set(symbols), key=lambda x: atomic_numbers.get(x, 0)):
        r, g, b = (int(255 * c) for c in jmol_colors[atomic_numbers.get(s, 0)])
        items.append(f'<span><i class="dot" style="background:rgb({r},{g},{b})"></i>'
                     f"{html.escape(s)}</span>")
    return '<div class="legend">' + "".join(items) + "</div>"


def _cell_js(atoms: Atoms) -> str:
    if not atoms.pbc.any():
        return ""
    lines = []
    for a, b in _CELL_EDGES:
        p, q = atoms.cell.cartesian_positions([a])[0], atoms.cell.cartesian_positions([b])[0]
        lines.append({"start": dict(zip("xyz", map(float, p))),
                      "end": dict(zip("xyz", map(float, q))), "color": "#888", "radius": 0.04})
    return f"for (const l of {json.dumps(lines)}) viewer.addCylinder(l);"


def trajectory_html(frames: list[Atoms], times_fs: Sequence[float] | None = None,
                    height: int = 340, interval_ms: int = 120) -> str:
    """An animated 3D view of a trajectory with play, pause, a slider and the time in fs."""
    n = len(frames)
    times = list(times_fs) if times_fs is not None else list(range(n))
    unit = "fs" if times_fs is not None else ""
    first = frames[0]
    if not first.pbc.any() and len(first) > 1:  # turn the whole trajectory like its first frame
        rot = _principal_rotation(first)
        frames = [oriented(f, rot) for f in frames]
    total = times[-1] if times else 0
    return f"""<html><head><script src="{_js_url()}"></script><style>{_STYLE}</style></head>
<body><div class="wrap"><div id="v" class="view" style="height:{height}px"></div>
{_legend(first.get_chemical_symbols())}
<div class="ctl"><button id="play">▶ Play</button>
<button id="pause" class="secondary">❚❚ Pause</button>
<input id="frame" type="range" min="0" max="{n - 1}" value="0">
<span id="label" class="time"></span></div></div>
<script>
const times = {json.dumps([float(t) for t in times])};
const viewer = $3Dmol.createViewer(document.getElementById("v"), {{backgroundColor: "white"}});
viewer.addModelsAsFrames({json.dumps(_xyz(frames))}, "xyz");
viewer.setStyle({{}}, {{stick: {{radius: 0.12, colorscheme: "Jmol"}},
                      sphere: {{scale: 0.28, colorscheme: "Jmol"}}}});
{_cell_js(first)}
viewer.zoomTo(); viewer.render();
const slider = document.getElementById("frame"), label = document.getElementById("label");
let timer = null;
function show(i) {{ viewer.setFrame(i); viewer.render(); slider.value = i;
  label.textContent = "t = " + times[i].toFixed(1) + " {unit} of {total:.1f} {unit}"; }}
show(0);
document.getElementById("play").onclick = () => {{ if (timer) return;
  timer = setInterval(() => show((parseInt(slider.value) + 1) % {n}), {interval_ms}); }};
document.getElementById("pause").onclick = () => {{ clearInterval(timer); timer = null; }};
slider.oninput = () => show(parseInt(slider.value));
</script></body></html>"""


def gallery_html(frames: Sequence[Atoms], captions: Sequence[str], height: int = 420) -> str:
    """Several structures in one view with a slider (and the caption of each): browsing them
    happens in the browser, without a round trip to the server."""
    models, cells = [], []
    for f in frames:
        a = oriented(f)
        models.append(_xyz([a]))
        cells.append(_cell_js(a))
    n = len(models)
    symbols = sorted({s for f in frames for s in f.get_chemical_symbols()})
    return f"""<html><head><script src="{_js_url()}"></script><style>{_STYLE}</style></head>
<body><div class="wrap"><div id="v" class="view" style="height:{height}px"></div>
{_legend(symbols)}
<div class="ctl"><button id="prev" class="secondary">◀</button>
<input id="frame" type="range" min="0" max="{max(n - 1, 0)}" value="0">
<button id="next" class="secondary">▶</button>
<span id="label" class="time" style="min-width:320px;text-align:left"></span></div></div>
<script>
const models = {json.dumps(models)}, captions = {json.dumps(list(captions))};
const cells = {json.dumps(cells)};
const viewer = $3Dmol.createViewer(document.getElementById("v"), {{backgroundColor: "white"}});
const slider = document.getElementById("frame"), label = document.getElementById("label");
function show(i) {{
  i = Math.max(0, Math.min({n - 1}, i)); slider.value = i;
  viewer.clear(); viewer.addModel(models[i], "xyz");
  viewer.setStyle({{}}, {{stick: {{radius: 0.12, colorscheme: "Jmol"}},
                        sphere: {{scale: 0.28, colorscheme: "Jmol"}}}});
  if (cells[i]) new Function("viewer", cells[i])(viewer);
  viewer.zoomTo(); viewer.render(); label.textContent = captions[i]; }}
slider.oninput = () => show(parseInt(slider.value));
document.getElementById("prev").onclick = () => show(parseInt(slider.value) - 1);
document.getElementById("next").onclick = () => show(parseInt(slider.value) + 1);
show(0);
</script></body></html>"""
