#!/usr/bin/env bash
# Create .venv and install the workbench (idempotent). Usage: bash scripts/setup.sh [dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch before mace-torch, so that pip does not pull another torch build in its place
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
pip install -q -r requirements.txt -c constraints.txt
[ "${1:-}" = "dev" ] && pip install -q -r requirements-dev.txt -c constraints.txt
pip install -q --no-deps -e .
# an offline copy of the 3D viewer's script (same version as py3Dmol's), from the npm registry
if [ ! -s static/3Dmol-min.js ] && command -v npm >/dev/null; then
  tmp=$(mktemp -d)
  if (cd "$tmp" && npm pack --silent 3dmol@2.5.5 >/dev/null 2>&1 && tar xzf 3dmol-2.5.5.tgz package/build/3Dmol-min.js); then
    mkdir -p static && cp "$tmp/package/build/3Dmol-min.js" static/3Dmol-min.js
  else
    echo "note: could not fetch 3dmol from npm; the 3D viewer will load it from its CDN" >&2
  fi
  rm -rf "$tmp"
fi
