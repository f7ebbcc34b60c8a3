#!/usr/bin/env bash
# Set up (first run) and run the whole test suite: browser and SLURM tests included.
# As root on Debian it installs chromium (browser test) and starts a single-node SLURM
# cluster (scripts/local_slurm.sh) for the SLURM tests, and stops the cluster at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "note: chromium could not be installed; the browser test will be skipped" >&2
fi
started_slurm=0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null && ! bash scripts/local_slurm.sh status >/dev/null 2>&1; then
  if bash scripts/local_slurm.sh start; then
    started_slurm=1
  else
    echo "note: a local SLURM cluster could not be started; the SLURM tests will be skipped" >&2
  fi
fi
stop_slurm() { [ "$started_slurm" = 1 ] && bash scripts/local_slurm.sh stop >/dev/null || true; }
trap stop_slurm EXIT
# Two workers: much of a test's time is waiting (servers starting, browsers, the scheduler,
# CLI processes importing torch), which the other worker fills. Long tests (marked slow) go
# first and tests are handed out one at a time, so that both workers end together.
.venv/bin/python -m pytest -q -n 2 --dist load --maxschedchunk 1 -rf --durations=25 "$@"
