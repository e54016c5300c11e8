"""`modelconv apply` on bad input and bad endings: each has its own exit code and one line
with what happened and what to do, never a traceback.

Exit codes: 1 failed, deleted or unreachable; 2 invalid input (the file, the kubeconfig, a
resource the API server rejects, missing rights); 3 timed out. The tests that need the API
server use the test control plane with the ModelConversion CRD and no operator.
"""

from __future__ import annotations

import copy
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import yaml

import operator_harness as harness
from recipes import VENV_BIN
from testenv.processes import wait_until

DOCUMENT = {
    "apiVersion": "modelconv.io/v1alpha1",
    "kind": "ModelConversion",
    "metadata": {"name": "mlp"},
    "spec": {
        "source": {"factory": {"entrypoint": "torch.nn:Linear",
                               "kwargs": {"in_features": 4, "out_features": 2}}},
        "inputs": [{"name": "x", "shape": [1, 4]}],
        "outputs": [{"name": "y"}],
        "publish": {"model": "mlp", "version": "1.0.0"},
    },
}


def write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def modelconv_apply(*args, home: Path, kubeconfig_env: str | None = None,
                    background: bool = False):
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    if kubeconfig_env is not None:
        env["KUBECONFIG"] = kubeconfig_env
    argv = [str(VENV_BIN / "modelconv"), "apply", *map(str, args)]
    if background:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def error_line(result, code: int, reason: str) -> str:
    """Check an ending before any wait: the exit code, and one stderr line with the reason."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"modelconv: {reason}: "), lines[0]
    return lines[0]


def failed_line(stdout: str, stderr: str, reason: str) -> str:
    """Check an ending after waiting: one `Failed:` line with the reason, no traceback."""
    assert "Traceback" not in stdout + stderr
    failed = [line for line in stdout.splitlines() if line.startswith("Failed: ")]
    assert len(failed) == 1, stdout
    assert failed[0].startswith(f"Failed: {reason}: "), failed[0]
    return failed[0]


def fake_kubeconfig(path: Path, *, current: str | None = "ci", server: str = "https://127.0.0.1:1"):
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server,
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "ci", "context": {"cluster": "c", "user": "u"}}],
    }
    if current:
        config["current-context"] = current
    path.write_text(yaml.safe_dump(config))
    return path


# --- before any request ---------------------------------------------------------------------


def test_missing_kubeconfig_exits_2(tmp_path):
    file = write(tmp_path / "mc.yaml", DOCUMENT)
    result = modelconv_apply(file, home=tmp_path, kubeconfig_env=str(tmp_path / "absent"))

    line = error_line(result, 2, "KubeconfigNotFound")
    assert "--kubeconfig" in line
    assert result.stdout == ""


def test_default_kubeconfig_is_looked_up_in_home(tmp_path):
    file = write(tmp_path / "mc.yaml", DOCUMENT)
    result = modelconv_apply(file, home=tmp_path)

    assert str(tmp_path / ".kube" / "config") in error_line(result, 2, "KubeconfigNotFound")


def test_kubeconfig_without_current_context_exits_2(tmp_path):
    file = write(tmp_path / "mc.yaml", DOCUMENT)
    config = fake_kubeconfig(tmp_path / "config", current=None)
    result = modelconv_apply(file, "--kubeconfig", config, home=tmp_path)

    line = error_line(result, 2, "ContextNotFound")
    assert "sets no current context" in line
    assert "--context NAME (one of: ci)" in line


def test_unknown_context_exits_2(tmp_path):
    file = write(tmp_path / "mc.yaml", DOCUMENT)
    config = fake_kubeconfig(tmp_path / "config")
    result = modelconv_apply(file, "--kubeconfig", config, "--context", "prod", home=tmp_path)

    line = error_line(result, 2, "ContextNotFound")
    assert "'prod' is not in the kubeconfig" in line
    assert "defined contexts: ci" in line


def test_invalid_file_exits_2_with_the_field_path(tmp_path):
    document = copy.deepcopy(DOCUMENT)
    document["spec"]["publish"]["verison"] = "1.0.1"
    file = write(tmp_path / "mc.yaml", document)
    result = modelconv_apply(file, home=tmp_path, kubeconfig_env=str(tmp_path / "absent"))

    assert "spec.publish.verison: unknown field" in error_line(result, 2, "InvalidSpec")


@pytest.mark.parametrize("options, message", [
    (["--junit", "out.xml"], "--junit need --wait"),
    (["--wait", "--timeout", "soon"], "is not a duration"),
])
def test_invalid_options_exit_2(tmp_path, options, message):
    file = write(tmp_path / "mc.yaml", DOCUMENT)
    result = modelconv_apply(file, *options, home=tmp_path)

    assert message in error_line(result, 2, "InvalidArgument")


def test_unreachable_api_server_exits_1(tmp_path):
    file = write(tmp_path / "mc.yaml", DOCUMENT)
    config = fake_kubeconfig(tmp_path / "config", server="https://127.0.0.1:1")
    result = modelconv_apply(file, "--kubeconfig", config, home=tmp_path)

    assert "cannot reach the API server" in error_line(result, 1, "ApiServerUnreachable")


# --- the API server's responses -------------------------------------------------------------


@pytest.fixture
def conversions(kube_api, modelconv_crd, namespace, cluster, tmp_path):
    """Apply helpers bound to a fresh namespace and the admin kubeconfig."""

    class Conversions:
        def __init__(self):
            self.namespace = namespace
            self.kubeconfig = cluster.kubeconfig

        def file(self, document=DOCUMENT, name="mc.yaml") -> Path:
            return write(tmp_path / name, document)

        def apply(self, *args, kubeconfig=None, background=False):
            return modelconv_apply(*args, "--kubeconfig", kubeconfig or self.kubeconfig,
                                   "--namespace", namespace, home=tmp_path,
                                   background=background)

    yield Conversions()
    harness.release_finalizers(kube_api, namespace)


def test_apply_creates_then_leaves_unchanged(conversions, kube_api):
    file = conversions.file()
    first = conversions.apply(file)
    second = conversions.apply(file)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert f"applied in namespace {conversions.namespace} (generation 1" in first.stdout
    assert "(generation 1" in second.stdout
    stored = harness.get(kube_api, conversions.namespace, "mlp")
    managers = [entry["manager"] for entry in stored["metadata"]["managedFields"]]
    assert managers == ["modelconv"]


@pytest.mark.parametrize("change, message", [
    (lambda document: document["spec"]["source"]["factory"].update(
        kwargs={f"k{index}": index for index in range(65)}),
     "spec.source.factory.kwargs: Too many: 65: must have at most 64"),
    (lambda document: document["metadata"].update(labels={"team name": "vision"}),
     "metadata.labels: Invalid value: \"team name\""),
])
def test_resource_rejected_by_the_api_server_exits_2(conversions, change, message):
    document = copy.deepcopy(DOCUMENT)
    change(document)
    result = conversions.apply(conversions.file(document))

    line = error_line(result, 2, "Invalid")
    assert "the API server rejected modelconversions.modelconv.io" in line
    assert message in line


def test_missing_namespace_exits_2(conversions, tmp_path):
    result = modelconv_apply(conversions.file(), "--kubeconfig", conversions.kubeconfig,
                             "--namespace", "no-such-namespace", home=tmp_path)

    assert "namespace no-such-namespace not found" in error_line(result, 2, "NotFound")


def test_fields_of_another_manager_exit_2_until_forced(conversions, kube_api):
    file = conversions.file()
    assert conversions.apply(file).returncode == 0
    kube_api.merge_patch(harness.conversions_path(conversions.namespace, "mlp"),
                         {"spec": {"publish": {"version": "2.0.0"}}})

    conflicting = conversions.apply(file)
    assert "--force-conflicts" in error_line(conflicting, 2, "Conflict")
    forced = conversions.apply(file, "--force-conflicts")
    assert forced.returncode == 0, forced.stderr
    stored = harness.get(kube_api, conversions.namespace, "mlp")
    assert stored["spec"]["publish"]["version"] == "1.0.0"


def test_missing_watch_right_exits_2_naming_the_verbs(conversions, ci_kubeconfig):
    rules = [{"apiGroups": ["modelconv.io"], "resources": ["modelconversions"],
              "verbs": ["get", "create", "patch"]}]
    kubeconfig = ci_kubeconfig(conversions.namespace, rules)
    result = conversions.apply(conversions.file(), "--wait", "--timeout", "60s",
                               kubeconfig=kubeconfig)

    assert result.returncode == 2, result.stdout + result.stderr
    line = failed_line(result.stdout, result.stderr, "Forbidden")
    assert "needs get, create, patch and watch on modelconversions.modelconv.io" in line


def test_ci_account_may_apply_and_wait(conversions, ci_kubeconfig):
    kubeconfig = ci_kubeconfig(conversions.namespace)
    result = conversions.apply(conversions.file(), "--wait", "--timeout", "3s",
                               kubeconfig=kubeconfig)

    # No operator runs here: the account may do everything and the wait ends by timeout.
    assert result.returncode == 3, result.stdout + result.stderr
    failed_line(result.stdout, result.stderr, "Timeout")


# --- endings while waiting ------------------------------------------------------------------


def test_timeout_exits_3_and_writes_junit(conversions, tmp_path):
    junit = tmp_path / "junit.xml"
    result = conversions.apply(conversions.file(), "--wait", "--timeout", "3s",
                               "--junit", junit)

    assert result.returncode == 3, result.stdout + result.stderr
    line = failed_line(result.stdout, result.stderr, "Timeout")
    assert "was not Ready within 3s" in line
    assert "the operator has not observed generation 1" in line
    assert "goes on with the run" not in line
    assert "once it does, it runs the conversion" in line
    assert result.stderr == ""
    root = ElementTree.parse(junit).getroot()
    export = next(case for case in root.iter("testcase") if case.get("name") == "export")
    assert export.find("failure").get("type") == "Timeout"


@pytest.mark.parametrize("finalizers", [[], ["example.com/hold"]])
def test_deleted_while_waiting_exits_1(conversions, kube_api, finalizers):
    document = copy.deepcopy(DOCUMENT)
    if finalizers:
        document["metadata"]["finalizers"] = finalizers
    waiting = conversions.apply(conversions.file(document), "--wait", "--timeout", "120s",
                                background=True)
    path = harness.conversions_path(conversions.namespace, "mlp")

    def created() -> bool:
        return bool(kube_api.get(harness.conversions_path(conversions.namespace))["items"])

    try:
        wait_until(created, 60, "the ModelConversion to be created")
        kube_api.delete(path)
        stdout, stderr = waiting.communicate(timeout=120)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()

    assert waiting.returncode == 1, stdout + stderr
    line = failed_line(stdout, stderr, "Deleted")
    assert "was deleted while waiting for it to become Ready" in line


def test_debug_adds_the_stack_trace(tmp_path):
    file = write(tmp_path / "mc.yaml", DOCUMENT)
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path),
           "KUBECONFIG": str(tmp_path / "absent")}
    result = subprocess.run([str(VENV_BIN / "modelconv"), "--debug", "apply", str(file)],
                            env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("modelconv: KubeconfigNotFound: ")


def test_newer_generation_ready_ends_the_wait(conversions, kube_api):
    path = harness.conversions_path(conversions.namespace, "mlp")
    waiting = conversions.apply(conversions.file(), "--wait", "--timeout", "120s",
                                background=True)
    try:
        wait_until(lambda: bool(kube_api.get(harness.conversions_path(conversions.namespace))
                                ["items"]), 60, "the ModelConversion to be created")
        # Someone applies generation 2, and the operator reports it Ready.
        kube_api.merge_patch(path, {"spec": {"publish": {"version": "1.0.1"}}})
        kube_api.merge_patch(f"{path}/status", {"status": ready_status(generation=2)})
        stdout, stderr = waiting.communicate(timeout=120)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()

    assert waiting.returncode == 0, stdout + stderr
    assert "Published s3://bucket/releases/mlp/1.0.1" in stdout
    assert "note: generation 2, applied after this one, is the one that became Ready" in stdout


def ready_status(generation: int) -> dict:
    """Return the status the operator writes when every stage of `generation` succeeded."""
    from modelconv.controller import summary

    names = ("export", "convert", "validate", "publish")
    records = {name: {"state": "Succeeded", "cacheHit": True, "message": "cached"}
               for name in names}
    release = {"location": "s3://bucket/releases/mlp/1.0.1"}
    conditions = summary.build_conditions([], names, records, release, generation=generation,
                                          now="2026-12-04T10:00:00Z")
    return {"observedGeneration": generation, "stage": "Done", "conditions": conditions,
            "stages": records, "release": release}
