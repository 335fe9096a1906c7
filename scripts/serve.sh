#!/usr/bin/env bash
# Start omsync with embedded defaults (SQLite in ./omsync-data, API + workers on 127.0.0.1:8080).
# Creates ./.venv and installs omsync into it on first use. Extra arguments go to `omsync serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/omsync ] || [ pyproject.toml -nt .venv/.installed ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e .
  touch .venv/.installed
fi
exec .venv/bin/omsync serve "$@"
