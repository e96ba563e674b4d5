# Shared by scripts/test and scripts/up: make ./.venv with kubelab and the given extra installed.
# Re-installs only when pyproject.toml changed since the last install, so a second run is quick.
set -euo pipefail
KUBELAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KUBELAB_VENV:-$KUBELAB_ROOT/.venv}"

kubelab_env() {
  local extra="$1"
  local python="${PYTHON:-python3}"
  if ! command -v "$python" >/dev/null 2>&1; then
    echo "kubelab: needs Python 3.10 or newer ('$python' not found; set PYTHON=...)" >&2
    exit 1
  fi
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "kubelab: needs Python 3.10 or newer; $python is $("$python" -V 2>&1) (set PYTHON=...)" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "kubelab: creating a virtual environment in $VENV" >&2
    if ! "$python" -m venv "$VENV"; then
      rm -rf "$VENV"
      echo "kubelab: could not create a virtual environment with $python; on Debian or Ubuntu:" >&2
      echo "         sudo apt-get install python3-venv   (then run this again)" >&2
      exit 1
    fi
  fi
  local stamp="$VENV/.kubelab-$extra"
  local want
  want="$(cat "$KUBELAB_ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "kubelab: installing kubelab[$extra] into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet -e "$KUBELAB_ROOT[$extra]" >&2
    echo "$want" > "$stamp"
  fi
  # As if activated: what kubelab starts (jupyterhub-singleuser, the proxy) is found on PATH.
  export VIRTUAL_ENV="$VENV"
  export PATH="$VENV/bin:$PATH"
}
