"""How the node agent maps container paths and $(VAR) references to a local process."""

from __future__ import annotations

from pathlib import Path

import pytest

from testenv.pod_setup import expand, parse_image_command, path_rewriter

MOUNTS = {
    "/etc/modelconv": Path("/tmp/pod/volumes/spec"),
    "/etc/modelconv/extra": Path("/tmp/pod/volumes/extra"),
    "/dev/termination-log": Path("/tmp/pod/termination-log"),
}


@pytest.mark.parametrize(("text", "expected"), [
    ("/etc/modelconv/run.json", "/tmp/pod/volumes/spec/run.json"),
    ("--run=/etc/modelconv/run.json", "--run=/tmp/pod/volumes/spec/run.json"),
    ("/etc/modelconv", "/tmp/pod/volumes/spec"),
    ("/etc/modelconv/extra/x", "/tmp/pod/volumes/extra/x"),
    ("open('/dev/termination-log', 'w')", "open('/tmp/pod/termination-log', 'w')"),
    ("/etc/modelconv2/run.json", "/etc/modelconv2/run.json"),
    ("/opt/etc/modelconv/run.json", "/opt/etc/modelconv/run.json"),
    ("/etc/modelconv.d", "/etc/modelconv.d"),
    ("a:/etc/modelconv", "a:/tmp/pod/volumes/spec"),
])
def test_path_rewriter_replaces_mount_paths(text: str, expected: str) -> None:
    assert path_rewriter(MOUNTS)(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("hello $(NAME)", "hello pod-a"),
    ("$(NAME)-$(NAME)", "pod-a-pod-a"),
    ("$$(NAME)", "$(NAME)"),
    ("$(MISSING)", "$(MISSING)"),
    ("$NAME", "$NAME"),
])
def test_expand_follows_kubelet_rules(text: str, expected: str) -> None:
    assert expand(text, {"NAME": "pod-a"}) == expected


def test_parse_image_command_splits_pattern() -> None:
    assert parse_image_command("*stage*=python -m app") == ("*stage*", ["python", "-m", "app"])
    with pytest.raises(ValueError, match="PATTERN=COMMAND"):
        parse_image_command("no-separator")


def test_tmp_mount_leaves_agent_path_alone(tmp_path, monkeypatch) -> None:
    # A clone under /tmp puts its virtualenv on the agent's PATH; a pod that mounts an
    # emptyDir at /tmp must still find its executables there.
    from testenv.pod_setup import PodContext, prepare_container

    monkeypatch.setattr("sys.executable", "/tmp/clone/.venv/bin/python")
    pod = {
        "metadata": {"name": "stage", "namespace": "ns"},
        "spec": {"volumes": [{"name": "tmp", "emptyDir": {}}]},
    }
    container = {
        "name": "stage",
        "command": ["sh", "-c", "true"],
        "env": [{"name": "SCRATCH", "value": "/tmp/work"}],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    context = PodContext(pod=pod, pod_dir=tmp_path, node_name="node", api_host="127.0.0.1",
                         api_port=6443, image_commands={}, resolve=lambda *_: None,
                         request_token=lambda *_: "")
    launch = prepare_container(context, container, tmp_path / "attempt")
    assert launch.env["PATH"].startswith("/tmp/clone/.venv/bin:")
    assert launch.env["SCRATCH"] == str(tmp_path / "volumes" / "tmp" / "work")


def test_existing_host_path_under_a_mount_is_kept(tmp_path) -> None:
    # PYTHONPATH=/tmp/<checkout>/tests names the host, even when /tmp is also a mount.
    host_folder = tmp_path / "checkout" / "tests"
    host_folder.mkdir(parents=True)
    mounts = {str(tmp_path): Path("/pods/p1/volumes/tmp")}
    rewrite = path_rewriter(mounts)
    assert rewrite(str(host_folder)) == str(host_folder)
    assert rewrite(f"{tmp_path}/scratch") == "/pods/p1/volumes/tmp/scratch"
