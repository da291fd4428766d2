#!/usr/bin/env bash
# Creates, once per lock file, the cached virtual environment under ~/.cache/fleet and links .venv to it.
#
# The venv is keyed by the sha256 of requirements.lock, so a fresh clone (CI) reuses the heavy install
# (torch, ray, mlflow) and only a lock change builds a new one. Run via `make venv`.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${FLEET_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fleet}"
UV_VERSION=0.13.8
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$(command -v "$candidate")"; break; fi
  done
fi
if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "fleet needs Python 3.11 (found: ${PYTHON:-none}). Install it or set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

mkdir -p "$CACHE"
UV="$CACHE/uv-$UV_VERSION/bin/uv"
if [ ! -x "$UV" ]; then
  echo "installing uv $UV_VERSION into $CACHE/uv-$UV_VERSION"
  "$PYTHON" -m venv "$CACHE/uv-$UV_VERSION"
  "$CACHE/uv-$UV_VERSION/bin/pip" install --quiet "uv==$UV_VERSION"
fi

HASH="$(sha256sum requirements.lock | cut -c1-16)"
VENV="$CACHE/venv-$HASH"
export UV_CACHE_DIR="$CACHE/uv-cache"
if [ ! -f "$VENV/.fleet-complete" ]; then
  echo "creating $VENV from requirements.lock (first time only: torch, ray and mlflow are large)"
  rm -rf "$VENV"
  "$UV" venv --quiet --python "$PYTHON" "$VENV"
  VIRTUAL_ENV="$VENV" "$UV" pip sync --quiet requirements.lock
  touch "$VENV/.fleet-complete"
fi
VIRTUAL_ENV="$VENV" "$UV" pip install --quiet --no-deps -e .
ln -sfn "$VENV" .venv
echo "venv ready: .venv -> $VENV"
