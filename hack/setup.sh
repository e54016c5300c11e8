#!/usr/bin/env bash
# Create (or reuse) the Python environment with the pinned, tested ML stack, and a small
# environment of this checkout on top of it.
#
# The ML stack (torch, coremltools, ...: several GB) lives outside the repository, keyed by
# the digest of requirements.lock, so every clone reuses it and a version bump rebuilds it.
# `.venv` in the repository is a virtual environment of its own that imports the shared
# packages through a .pth file and contains only the editable install of this checkout. So two
# clones never point each other's `modelconv` at their code.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MODELCONV_CACHE:-$HOME/.cache/modelconv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

lock_digest="$(sha256sum "$repo/requirements.lock" | cut -c1-12)"
shared="$cache/venv-$lock_digest"

if [[ ! -x "$shared/bin/python" || ! -f "$shared/.complete" ]]; then
    echo "setup: creating $shared (first run downloads torch and the ML stack: several minutes)"
    rm -rf "$shared"
    mkdir -p "$cache"
    "$python" -m venv "$shared"
    # The stock pip fails on some packages' metadata; upgrade it first.
    "$shared/bin/python" -m pip install --quiet --upgrade pip
    "$shared/bin/python" -m pip install --quiet --progress-bar off -r "$repo/requirements.lock"
    touch "$shared/.complete"
else
    echo "setup: reusing $shared"
fi
# Earlier versions of this script installed a checkout into the shared environment.
if [[ -n "$(compgen -G "$shared/lib/python3*/site-packages/__editable__.modelconv-*.pth")" ]]; then
    "$shared/bin/python" -m pip uninstall --quiet --yes modelconv
fi

venv="$repo/.venv"
shared_site="$("$shared/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
layer_line="import site; site.addsitedir('$shared_site')"
layer_file() { compgen -G "$venv/lib/python3*/site-packages/modelconv-shared.pth" || true; }
# Recreate .venv when it is missing, a link (the earlier layout) or layered on another
# shared environment.
if [[ -L "$venv" || ! -x "$venv/bin/python" || -z "$(layer_file)" ]] \
        || [[ "$(cat "$(layer_file)")" != "$layer_line" ]]; then
    rm -rf "$venv"
    "$(readlink -f "$shared/bin/python")" -m venv --without-pip "$venv"
    site_dir="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    # Processed after the editable install's __editable__ .pth, so this checkout comes first.
    printf '%s\n' "$layer_line" > "$site_dir/modelconv-shared.pth"
fi

# Editable install of this checkout into its own .venv (pip and setuptools come from the
# shared environment).
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$repo"

# The shared environment's commands (pytest, kopf, hadolint, ...) in .venv/bin: scripts run
# by this checkout's Python, so they see its modelconv, and binaries as links.
for tool in "$shared"/bin/*; do
    name="$(basename "$tool")"
    case "$name" in python*|pip*|activate*|Activate.ps1) continue ;; esac
    if [[ -e "$venv/bin/$name" || -d "$tool" || ! -x "$tool" ]]; then
        continue
    fi
    if [[ "$(head -c 2 "$tool")" == "#!" ]]; then
        { echo "#!$venv/bin/python"; tail -n +2 "$tool"; } > "$venv/bin/$name"
        chmod +x "$venv/bin/$name"
    else
        ln -s "$tool" "$venv/bin/$name"
    fi
done
echo "setup: ready; run $repo/.venv/bin/modelconv --help"
