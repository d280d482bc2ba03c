#!/usr/bin/env bash
# The Airflow environment: its own virtual environment (Airflow's dependencies must not meet the project's),
# outside the clone and keyed by the hash of requirements.txt + constraints.txt, so a fresh clone reuses it
# and only a changed pin rebuilds it. Idempotent: a stamp file marks a finished install.
#
#   airflow/setup.sh               create it if needed; print its path (the only line on stdout)
#   airflow/setup.sh --print-venv  print its path without creating it
#   airflow/setup.sh --lock        re-resolve requirements.txt in a scratch venv and rewrite constraints.txt
#
# PYTHON (default python3) is the interpreter the venv is made from; TOWERSSL_AIRFLOW_VENV overrides its path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/towerssl"
key="$(cat "$here/requirements.txt" "$here/constraints.txt" | sha256sum | cut -c1-12)"
venv="${TOWERSSL_AIRFLOW_VENV:-$cache/airflow-venv-$key}"

new_venv() {  # new_venv DIR: an empty venv with a current pip
  "$python" -m venv "$1" >&2
  "$1/bin/pip" install -q --upgrade "pip>=24" >&2
}

case "${1:-}" in
  --print-venv)
    echo "$venv"
    ;;
  --lock)
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    new_venv "$scratch/venv"
    "$scratch/venv/bin/pip" install -q -r "$here/requirements.txt" >&2
    { echo "# Every package of the Airflow environment, resolved from requirements.txt by \`airflow/setup.sh --lock\`."
      "$scratch/venv/bin/pip" freeze --all --exclude pip; } > "$here/constraints.txt"
    echo "wrote $here/constraints.txt" >&2
    ;;
  "")
    if [[ ! -f "$venv/.installed" ]]; then
      echo "creating the Airflow environment in $venv" >&2
      rm -rf "$venv"  # what an interrupted install left
      new_venv "$venv"
      "$venv/bin/pip" install -q -r "$here/requirements.txt" --constraint "$here/constraints.txt" >&2
      touch "$venv/.installed"
    fi
    echo "$venv"
    ;;
  *)
    echo "usage: $0 [--print-venv | --lock]" >&2
    exit 2
    ;;
esac
