"""Options of `modelconv operator` and `modelconv crd` (modelconv.cli.cluster_commands)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelconv.cli import build_parser
from modelconv.cli.cluster_commands import operator_config

MODELCONV = str(Path(sys.executable).parent / "modelconv")


def config_of(*argv: str):
    return operator_config(build_parser().parse_args(["operator", *argv]))


def test_defaults_watch_all_namespaces():
    config = config_of()
    assert config.namespaces == ()
    assert config.stage_command == ("modelconv",)
    assert config.backoff_limit == 2
    assert config.lease_duration_seconds == 15.0


def test_options_become_the_operator_config():
    config = config_of("--namespace", "a", "--namespace", "b", "--store", "s3://bucket/p",
                       "--store-secret", "s3", "--stage-env", "A=1", "--stage-env", "B=x=y",
                       "--stage-command", "python /opt/stage.py", "--backoff-limit", "0",
                       "--lease-namespace", "ops", "--stage-service-account", "modelconv-stage")
    assert config.namespaces == ("a", "b")
    assert config.store == "s3://bucket/p"
    assert config.stage_env == (("A", "1"), ("B", "x=y"))
    assert config.stage_command == ("python", "/opt/stage.py")
    assert config.backoff_limit == 0
    assert config.lease_namespace == "ops"
    assert config.stage_service_account == "modelconv-stage"


@pytest.mark.parametrize("argv, message", [
    (["--stage-env", "NOVALUE"], "expected NAME=VALUE"),
    (["--stage-env", "MODELCONV_S3_ENDPOINT=http://127.0.0.1:9000"],
     "the operator sets MODELCONV_S3_ENDPOINT on stage Jobs itself"),
    (["--lease-duration", "5", "--renew-deadline", "10"], "--retry-period < --renew-deadline"),
    (["--stage-command", ""], "must not be empty"),
    (["--stage-command", 'a "b'], "--stage-command 'a \"b' is not a valid shell line"),
    (["--stage-command", "modelconv \\"], "is not a valid shell line"),
    (["--presign-endpoint", "minio.example.com:9000"], "is not a valid endpoint URL"),
    (["--store", "http://x/y"], "--store: unsupported store URL http://x/y: use s3://"),
    (["--store", "s3://"], "--store: 's3://' names no bucket: give s3://BUCKET"),
    (["--store", "s3://Bad_Bucket/p"], "--store: invalid bucket name 'Bad_Bucket'"),
    (["--store", "file://host/dir"], "--store: .* a file:// store must be local"),
    (["--s3-endpoint", "notaurl"], "--s3-endpoint 'notaurl' is not a valid endpoint URL"),
    (["--s3-endpoint", "http://127.0.0.1:9000/?x=1"], "--s3-endpoint .* has credentials, a query"),
    (["--stage-service-account", "Stage_Runner"], "expected a Kubernetes object name"),
    (["--namespace", "Bad_NS"], "--namespace 'Bad_NS' is not a valid namespace name"),
    (["--namespace", "a", "--namespace", "b.c"], "--namespace 'b.c' is not a valid namespace"),
    (["--lease-namespace", "Bad_NS"], "--lease-namespace 'Bad_NS' is not a valid namespace"),
    (["--lease-namespace", ""], "--lease-namespace '' is not a valid namespace name"),
    (["--pool-namespace=-pool"], "--pool-namespace '-pool' is not a valid namespace name"),
    (["--pool-namespace", "p" * 64], "is not a valid namespace name: use at most 63"),
    (["--lease-name", "Leader"], "--lease-name 'Leader': expected a Kubernetes object name"),
    (["--store-secret", "bad secret"], "--store-secret 'bad secret': expected a Kubernetes"),
    (["--store-secret", ""], "--store-secret '': expected a Kubernetes object name"),
    (["--stage-image", ""], "--stage-image must not be empty"),
    (["--stage-image", " "], "--stage-image must not be empty"),
    (["--stage-image", "modelconv stage"], "--stage-image 'modelconv stage' contains whitespace"),
    (["--identity", ""], "--identity must not be empty"),
    (["--image-pull-grace", "0"], "--image-pull-grace 0.0: expected at least 5"),
    (["--recheck-interval", "-1"], "--recheck-interval -1.0: expected at least 1"),
    (["--backoff-limit", "-1"], "--backoff-limit -1: expected at least 0"),
])
def test_invalid_options_are_rejected(argv, message):
    with pytest.raises(ValueError, match=message):
        config_of(*argv)


def test_valid_names_are_accepted():
    config = config_of("--namespace", "team-a", "--lease-namespace", "ops",
                       "--pool-namespace", "p" * 63, "--store-secret", "s3.credentials",
                       "--stage-image", "registry.local:5000/stage:1", "--identity", "replica a")
    assert config.namespaces == ("team-a",)
    assert config.lease_namespace == "ops"
    assert config.pool_namespace == "p" * 63
    assert config.store_secret == "s3.credentials"
    assert config.stage_image == "registry.local:5000/stage:1"


def test_invalid_options_exit_with_code_2():
    result = subprocess.run([MODELCONV, "operator", "--stage-env", "oops"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "--stage-env 'oops': expected NAME=VALUE" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [
    ["--store", "http://x/y"],
    ["--s3-endpoint", "notaurl"],
    ["--presign-endpoint", "ftp://x"],
])
def test_invalid_store_options_exit_with_one_line(argv):
    result = subprocess.run([MODELCONV, "operator", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith(f"modelconv operator: {argv[0]}")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("option, value", [
    ("--metrics-port", "70000"),
    ("--metrics-port", "80.5"),
    ("--health-port", "-1"),
    ("--health-port", "65536"),
])
def test_out_of_range_port_exits_with_code_2(option, value):
    result = subprocess.run([MODELCONV, "operator", f"{option}={value}"], capture_output=True,
                            text=True)
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert f"argument {option}: invalid port '{value}'" in last_line
    assert "from 0 to 65535" in last_line
    assert "Traceback" not in result.stderr


def test_port_bounds_are_accepted():
    args = build_parser().parse_args(["operator", "--metrics-port", "0",
                                      "--health-port", "65535"])
    assert args.metrics_port == 0
    assert args.health_port == 65535


def test_help_documents_lease_exit_code():
    # run_operator exits with 2 on a 403 or 404 for its Lease (test_operator_restarts).
    result = subprocess.run([MODELCONV, "operator", "--help"], capture_output=True, text=True)
    help_text = " ".join(result.stdout.split())
    assert result.returncode == 0
    assert "2 invalid options, or the Lease namespace is missing or forbidden" in help_text
    assert "or the leader may not list the resources it watches" in help_text
    docs = (Path(__file__).parents[2] / "docs" / "operator.md").read_text(encoding="utf-8")
    assert "| 2 | invalid options (one line names the option); the Lease namespace" in docs
    assert "the operator may not list ModelConversions, Jobs or Pods where it watches" in docs


def test_in_cluster_server_from_service_env(monkeypatch):
    import kopf

    from modelconv.controller.kube import _in_cluster_server

    info = kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="token")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    assert _in_cluster_server(info).server == "https://10.96.0.1:6443"
    assert _in_cluster_server(info).token == "token"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    assert _in_cluster_server(info).server == "https://[fd00::1]:6443"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert _in_cluster_server(info).server == "https://kubernetes.default.svc"
