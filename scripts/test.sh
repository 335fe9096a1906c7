#!/usr/bin/env bash
# Run the whole test suite: lint (ruff), types (mypy), then pytest, installing what it needs
# (a ./.venv with omsync and its test dependencies; PostgreSQL from Debian's packages when absent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/pytest ] || [ pyproject.toml -nt .venv/.installed-test ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  touch .venv/.installed-test
fi
# System packages from Debian, installed once and quietly when missing:
# - postgresql: the ledger tests also run on a private cluster that tests/postgres.py starts
#   (skipped when OMSYNC_TEST_POSTGRES_URL names a server);
# - chromium: the dashboard's browser test drives it through Playwright (never `playwright install`);
# - npm: installs Azurite, the Azure Storage emulator of the Azure tests (below).
apt_packages=()
if [ -z "${OMSYNC_TEST_POSTGRES_URL:-}" ] && ! compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null; then
  apt_packages+=(postgresql)
fi
[ -x /usr/bin/chromium ] || apt_packages+=(chromium)
command -v npm >/dev/null || apt_packages+=(npm)
if [ ${#apt_packages[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  echo "== installing ${apt_packages[*]} (apt-get)"
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo -n); fi
  apt_log=$(mktemp)
  if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}"; } \
        >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    echo "could not install ${apt_packages[*]}; for PostgreSQL, OMSYNC_TEST_POSTGRES_URL may name a server" >&2
    rm -f "$apt_log"
    exit 1
  fi
  rm -f "$apt_log"
fi
# Azurite (the Azure Storage emulator) from npm, installed once and quietly into .ci-node/ where
# tests/servers_azurite.py finds it; the Azure tests skip when neither it nor npm is there.
if [ ! -x .ci-node/node_modules/.bin/azurite-blob ] && command -v npm >/dev/null; then
  echo "== installing azurite (npm)"
  mkdir -p .ci-node
  npm_log=$(mktemp)
  if ! npm install --prefix .ci-node --no-audit --no-fund --silent azurite@3.35.0 >"$npm_log" 2>&1; then
    cat "$npm_log" >&2
    echo "could not install azurite with npm" >&2
    rm -f "$npm_log"
    exit 1
  fi
  rm -f "$npm_log"
fi
echo "== ruff"
.venv/bin/ruff check src tests bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
