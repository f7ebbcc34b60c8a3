#!/usr/bin/env bash
# Set up (first run) and serve the workbench on the bundled demo world.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m streamlit run app.py --server.port "${PORT:-8501}" "$@"
