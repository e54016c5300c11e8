#!/usr/bin/env bash
# Create (or reuse) the Python environment with the pinned, tested ML stack and install
# modelconv into it in editable mode. The environment lives outside the repository, keyed by
# the digest of requirements.lock, so a clean clone reuses it and a version bump rebuilds it.
# `.venv` in the repository is a symlink to it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MODELCONV_CACHE:-$HOME/.cache/modelconv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

lock_digest="$(sha256sum "$repo/requirements.lock" | cut -c1-12)"
venv="$cache/venv-$lock_digest"

if [[ ! -x "$venv/bin/python" || ! -f "$venv/.complete" ]]; then
    echo "setup: creating $venv (first run downloads torch and the ML stack: several minutes)"
    rm -rf "$venv"
    mkdir -p "$cache"
    "$python" -m venv "$venv"
    # The stock pip fails on some packages' metadata; upgrade it first.
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet --progress-bar off -r "$repo/requirements.lock"
    touch "$venv/.complete"
else
    echo "setup: reusing $venv"
fi

# Editable install of this checkout (cheap; points the environment at this clone).
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$repo"
ln -sfn "$venv" "$repo/.venv"
echo "setup: ready; run $repo/.venv/bin/modelconv --help"
