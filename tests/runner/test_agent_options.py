"""Start-up checks of `modelconv agent` and `modelconv runners` that need no API server.

Each bad option or unusable kubeconfig ends with one stderr line and an exit code, before
the agent registers. The unreachable API server is a kubeconfig aimed at 127.0.0.1:1, where
nothing listens.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

MODELCONV = str(Path(sys.executable).parent / "modelconv")


def write_kubeconfig(path: Path, server: str = "https://127.0.0.1:1") -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server,
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_modelconv(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", **(env or {})}
    environment.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run([MODELCONV, *map(str, args)], capture_output=True, text=True,
                          env=environment)


def only_line(result: subprocess.CompletedProcess, code: int) -> str:
    """Check the exit code and that stderr is one line without a traceback, then return it."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def agent_args(tmp_path: Path, *extra) -> list:
    return ["agent", "--namespace", "pool", "--name", "runner-1", "--backend", "mil-reference",
            "--kubeconfig", write_kubeconfig(tmp_path / "kubeconfig"), *extra]


# --- unreachable API server -----------------------------------------------------------------


def test_agent_unreachable_api_server_exits_1(tmp_path):
    result = run_modelconv(*agent_args(tmp_path, "--workdir", tmp_path / "work"))

    line = only_line(result, 1)
    assert line.startswith("modelconv agent: ApiServerUnreachable: cannot reach the API "
                           "server to serve namespace pool as runner runner-1: "), line
    assert "127.0.0.1" in line


def test_runners_unreachable_api_server_exits_1(tmp_path):
    result = run_modelconv("runners", "-n", "pool", "--kubeconfig",
                           write_kubeconfig(tmp_path / "kubeconfig"))

    line = only_line(result, 1)
    assert line.startswith("modelconv runners: ApiServerUnreachable: cannot reach the API "
                           "server to list the runners in namespace pool: "), line
    assert "127.0.0.1" in line
    assert result.stdout == ""
