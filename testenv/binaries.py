"""Location of the binaries of the test environment: etcd, kube-apiserver,
kube-controller-manager and helm.

hack/build-k8s.sh builds them into ${MODELCONV_CACHE:-~/.cache/modelconv}/bin/<tool>-<version>/.
The versions are read from that script, so it is the one place where they are pinned.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-k8s.sh"

# Each tool and the variable of the build script that pins its version.
_VERSION_VARIABLES = {
    "kube-apiserver": "KUBE_VERSION",
    "kube-controller-manager": "KUBE_VERSION",
    "etcd": "ETCD_VERSION",
    "helm": "HELM_VERSION",
}


class MissingBinaryError(RuntimeError):
    """A binary of the test environment has not been built."""


def cache_dir() -> Path:
    return Path(os.environ.get("MODELCONV_CACHE") or Path.home() / ".cache" / "modelconv")


def pinned_versions() -> dict[str, str]:
    """Return the version variables assigned in hack/build-k8s.sh, e.g. KUBE_VERSION."""
    text = BUILD_SCRIPT.read_text()
    return dict(re.findall(r"^([A-Z]+_VERSION)=(\S+)$", text, flags=re.MULTILINE))


def binary(tool: str) -> Path:
    """Return the path of `tool` in the cache; raise MissingBinaryError when it is absent."""
    versions = pinned_versions()
    variable = _VERSION_VARIABLES[tool]
    version = versions.get(variable)
    if version is None:
        raise MissingBinaryError(f"{BUILD_SCRIPT} assigns no {variable}; cannot locate {tool}")
    path = cache_dir() / "bin" / f"{tool}-{version}" / tool
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(
            f"{tool} {version} is not built: {path} is missing. "
            f"Run hack/build-k8s.sh (about 12 minutes on 2 cores with empty Go caches)."
        )
    return path


def control_plane_binaries() -> dict[str, Path]:
    """Return the paths of etcd, kube-apiserver and kube-controller-manager, or raise."""
    tools = ("etcd", "kube-apiserver", "kube-controller-manager")
    missing = []
    found = {}
    for tool in tools:
        try:
            found[tool] = binary(tool)
        except MissingBinaryError as error:
            missing.append(str(error))
    if missing:
        raise MissingBinaryError("\n".join(missing))
    return found
