"""The helm binary built by hack/build-k8s.sh, with its own cache, config and data folders.

Helm keeps repositories, plugins and caches under HELM_*_HOME; pointing those at a private
folder means a test neither reads nor changes the user's helm setup.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from testenv.binaries import binary


@dataclass
class Helm:
    """Run helm against one kubeconfig (or none) with private helm folders."""

    binary: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, home: Path, kubeconfig: Path | None) -> Helm:
        """Locate helm (MissingBinaryError when unbuilt) and set up its folders under `home`."""
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            # Without a cluster, point KUBECONFIG at a file that does not exist, so helm can
            # never fall back to ~/.kube/config.
            "KUBECONFIG": str(kubeconfig) if kubeconfig else str(home / "no-cluster"),
        }
        return cls(binary("helm"), env)

    def run(self, *args: str, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `helm ARGS`; raise AssertionError with helm's output when it fails and `check`."""
        result = subprocess.run([str(self.binary), *args], env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited with {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result
