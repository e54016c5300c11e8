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

import pytest
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


# --- namespace names ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["agent", "runners"])
@pytest.mark.parametrize("namespace", ["Bad_NS", "pool.a", "-pool", "", "p" * 64])
def test_invalid_namespace_exits_2(tmp_path, command, namespace):
    options = [f"--namespace={namespace}"]
    if command == "agent":
        options += ["--backend", "mil-reference", "--workdir", tmp_path / "work",
                    "--kubeconfig", write_kubeconfig(tmp_path / "kubeconfig")]
    result = run_modelconv(command, *options)

    line = only_line(result, 2)
    assert line.startswith(f"modelconv {command}: --namespace {namespace!r} is not a valid "
                           "namespace name: "), line
    assert result.stdout == ""


# --- kubeconfig -----------------------------------------------------------------------------


def command_args(command: str, tmp_path: Path) -> list:
    if command == "agent":
        return ["agent", "-n", "pool", "--backend", "mil-reference", "--workdir",
                tmp_path / "work"]
    return ["runners", "-n", "pool"]


@pytest.mark.parametrize("command", ["agent", "runners"])
def test_missing_kubeconfig_option_names_the_file(tmp_path, command):
    missing = tmp_path / "absent-kubeconfig"
    result = run_modelconv(*command_args(command, tmp_path), "--kubeconfig", missing)

    line = only_line(result, 2)
    assert line.startswith(f"modelconv {command}: KubeconfigNotFound: no kubeconfig at "
                           f"{missing}: "), line
    assert "--kubeconfig" in line
    assert "KUBECONFIG" in line


@pytest.mark.parametrize("command", ["agent", "runners"])
def test_missing_kubeconfig_variable_names_the_file(tmp_path, command):
    missing = tmp_path / "absent-kubeconfig"
    result = run_modelconv(*command_args(command, tmp_path), env={"KUBECONFIG": str(missing)})

    line = only_line(result, 2)
    assert f"KubeconfigNotFound: no kubeconfig at {missing}: " in line


@pytest.mark.parametrize("command", ["agent", "runners"])
def test_unknown_context_lists_the_defined_ones(tmp_path, command):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig")
    result = run_modelconv(*command_args(command, tmp_path), "--kubeconfig", kubeconfig,
                           "--context", "elsewhere")

    line = only_line(result, 2)
    assert f"ContextNotFound: context 'elsewhere' is not in the kubeconfig ({kubeconfig})" in line
    assert "defined contexts: test" in line


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


# --- --workdir ------------------------------------------------------------------------------


def test_agent_workdir_that_is_a_file_exits_2(tmp_path):
    file = tmp_path / "downloads"
    file.write_text("not a folder")
    result = run_modelconv(*agent_args(tmp_path, "--workdir", file))

    line = only_line(result, 2)
    assert line == (f"modelconv agent: --workdir {file} is not a folder: give a folder for the "
                    "downloads of running checks")


def test_agent_workdir_below_a_file_exits_2(tmp_path):
    file = tmp_path / "downloads"
    file.write_text("not a folder")
    result = run_modelconv(*agent_args(tmp_path, "--workdir", file / "checks"))

    line = only_line(result, 2)
    assert line.startswith(f"modelconv agent: --workdir {file / 'checks'} cannot be used ("), line
    assert "give a folder this user can create and write" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into folders without write bits")
def test_agent_unwritable_workdir_exits_2(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = run_modelconv(*agent_args(tmp_path, "--workdir", folder))
    finally:
        folder.chmod(0o755)

    line = only_line(result, 2)
    assert line.startswith(f"modelconv agent: --workdir {folder} cannot be used ("), line


def test_agent_creates_missing_workdir(tmp_path):
    workdir = tmp_path / "new" / "checks"
    result = run_modelconv(*agent_args(tmp_path, "--workdir", workdir))

    assert workdir.is_dir()
    assert list(workdir.iterdir()) == []
    # The check passed, so the agent went on to the (unreachable) API server.
    assert "ApiServerUnreachable" in only_line(result, 1)
