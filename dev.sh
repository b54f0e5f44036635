#!/usr/bin/env bash
# GeoTwin on a fresh Debian 12 / Ubuntu 24.04 machine, in one command each:
#   ./dev.sh serve   install what is missing, start PostGIS + GeoTwin with the demo data on http://127.0.0.1:8000
#   ./dev.sh test    install what is missing, run the tests (they start their own PostGIS)
# What it installs: PostgreSQL + PostGIS (and for the tests GDAL, Chromium, QGIS's Python bindings and Redis) from Debian's packages, Node.js/npm (for MapLibre GL JS), a
# Python virtual environment in .venv with the project, and the browser assets in node_modules.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\033[1;34m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_packages() {
  local for_tests=${1:-}
  local missing=()
  ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 || missing+=(postgresql postgresql-postgis)
  command -v psql >/dev/null || missing+=(postgresql-client)
  command -v runuser >/dev/null || missing+=(util-linux)
  if [ -n "$for_tests" ]; then
    command -v ogrinfo >/dev/null || missing+=(gdal-bin)          # client tests: GDAL/OGR
    command -v chromium >/dev/null || missing+=(chromium)         # browser tests (Playwright drives it)
    /usr/bin/python3 -c 'import qgis.core' >/dev/null 2>&1 || missing+=(python3-qgis)  # QGIS client test
    command -v redis-server >/dev/null || missing+=(redis-server)  # rate limits shared by workers
  fi
  command -v npm >/dev/null || missing+=(nodejs npm)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The project runs its own cluster; the distribution's default one is not needed.
}

python_env() {
  local extras=$1
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed"; exit 1; }
  [ -x .venv/bin/python ] || { say "creating .venv"; python3 -m venv .venv; }
  local stamp=".venv/.installed-$extras-$(cat pyproject.toml | sha1sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    say "installing Python dependencies"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".$extras"
    touch "$stamp"
  fi
}

tool_env() {
  local stamp=".tools/.installed-$(sha1sum < tests/tools.txt | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    say "installing the programs the tests run (tests/tools.txt) into .tools"
    [ -x .tools/bin/python ] || python3 -m venv .tools
    .tools/bin/python -m pip install -q -r tests/tools.txt
    touch "$stamp"
  fi
}

web_assets() {
  if [ ! -f node_modules/maplibre-gl/dist/maplibre-gl.js ] || [ package-lock.json -nt node_modules ]; then
    say "installing MapLibre GL JS and Swagger UI (npm)"
    npm ci --no-audit --no-fund --loglevel=error
  fi
}

case "${1:-}" in
  serve)
    need_packages; python_env ""; web_assets
    exec .venv/bin/geotwin demo --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
    ;;
  test)
    need_packages tests; python_env "[test]"; tool_env; web_assets
    shift
    # One pytest worker per core (at most 4), each with a PostGIS cluster of its own; `-n 0` runs in one process.
    exec .venv/bin/python -m pytest -n auto --maxprocesses 4 "$@"
    ;;
  *)
    sed -n '2,6p' "$0"; exit 2
    ;;
esac
