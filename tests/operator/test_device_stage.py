"""The device stage end to end: the operator hands a CoreMLCheck to the runner pool.

The operator runs under a ServiceAccount bound to exactly the rules of
modelconv.controller.rbac, with its reconcile rules in the conversions' namespace and its
pool rules in a separate runner pool namespace. A `modelconv agent` process with the
mil-reference backend and the agent Role of examples/macos/agent-rbac.yaml serves the pool.
The stages before the device check run as real Jobs on the node agent.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import operator_harness as harness
from operator_harness import apply, condition, conversion, get, wait_for_condition
from modelconv.controller import rbac
from testenv.api import ApiError
from testenv.processes import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_RBAC = REPO_ROOT / "examples" / "macos" / "agent-rbac.yaml"
CHECKS = "/apis/modelconv.io/v1alpha1/namespaces/{}/coremlchecks"
AGENT_ACCOUNT = "modelconv-agent"
# Strings of presigned URLs that must never reach a status or a log.
URL_SECRETS = ("X-Amz-Signature", "X-Amz-Credential")


@pytest.fixture
def pool_namespace(kube_api, operators):
    """A runner pool namespace apart from the conversions', with the pool Role bound to the
    operator's ServiceAccount and the agent Role to the agent's."""
    name = f"pool-{secrets.token_hex(4)}"
    kube_api.post("/api/v1/namespaces",
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{name}"
    kube_api.post(f"{base}/roles", rbac.role("Role", "operator-pool", rbac.POOL_RULES, name))
    kube_api.post(f"{base}/rolebindings", rbac.binding(
        "RoleBinding", "operator-pool", "operator-pool", harness.OPERATOR_ACCOUNT,
        operators.namespace, name))
    for document in yaml.safe_load_all(AGENT_RBAC.read_text()):
        document["metadata"]["namespace"] = name
        plural = {"ServiceAccount": "/api/v1/namespaces/{}/serviceaccounts",
                  "Role": base.replace(name, "{}") + "/roles",
                  "RoleBinding": base.replace(name, "{}") + "/rolebindings"}[document["kind"]]
        kube_api.post(plural.format(name), document)
    try:
        yield name
    finally:
        kube_api.delete(f"/api/v1/namespaces/{name}", {"propagationPolicy": "Background"})


class Agent:
    """`modelconv agent --backend mil-reference` serving the pool, logging to a file."""

    def __init__(self, kubeconfig: Path, namespace: str, workdir: Path, lease_seconds: int = 6):
        self.log_path = workdir / "agent.log"
        argv = [str(Path(sys.executable).parent / "modelconv"), "--debug", "agent",
                "--kubeconfig", str(kubeconfig), "--namespace", namespace,
                "--name", "linux-reference", "--labels", "chip=cpu,macos=15",
                "--backend", "mil-reference", "--lease-seconds", str(lease_seconds),
                "--workdir", str(workdir / "agent-work")]
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS")}
        # The agent has no S3 credentials: it fetches everything through presigned URLs.
        env.update(AWS_EC2_METADATA_DISABLED="true", OMP_NUM_THREADS="1",
                   NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, stdin=subprocess.DEVNULL)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.resume()
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def checks_in(api, namespace: str) -> list[dict]:
    return api.get(CHECKS.format(namespace))["items"]


def device_conversion(name: str, required: bool, version: str = "1.0.0",
                      timeout_seconds: int = 3600) -> dict:
    device = {"device": {"enabled": True, "required": required, "computeUnits": ["cpuOnly"],
                         "timeoutSeconds": timeout_seconds}}
    return conversion(name, version=version, validation=device)


def runner_leases(api, namespace: str) -> list[dict]:
    return api.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases")["items"]


def test_reference_runner_check_then_publish(
        kube_api, operators, pool_namespace, sa_kubeconfig, s3_server, tmp_path):
    namespace = operators.namespace
    # The agent registers, then stops (SIGSTOP) until the operator has adopted the check.
    # Its Lease stays live meanwhile, so the check waits for it instead of being skipped.
    agent = Agent(sa_kubeconfig(pool_namespace, AGENT_ACCOUNT), pool_namespace, tmp_path,
                  lease_seconds=300)
    operator = operators.start("replica-a", "--pool-namespace", pool_namespace)
    try:
        wait_until(lambda: runner_leases(kube_api, pool_namespace), 120,
                   "the agent's runner Lease", interval=0.5)
        agent.pause()
        apply(kube_api, namespace,
              device_conversion("mlp-device", required=False, timeout_seconds=900))

        # The check appears in the pool namespace, labelled with its conversion.
        wait_until(lambda: checks_in(kube_api, pool_namespace), harness.RUN_TIMEOUT,
                   "the CoreMLCheck to be created", interval=0.5)
        (check,) = checks_in(kube_api, pool_namespace)
        metadata = check["metadata"]
        assert metadata["labels"]["modelconv.io/conversion"] == "mlp-device"
        assert metadata["annotations"]["modelconv.io/conversion-namespace"] == namespace
        assert "ownerReferences" not in metadata  # they cannot cross namespaces
        created = datetime.datetime.fromisoformat(metadata["creationTimestamp"])
        deadline = datetime.datetime.fromisoformat(check["spec"]["deadline"])
        # The operator stamps the deadline before the API server stamps the creation (both
        # on this machine's clock, the creation truncated to whole seconds).
        assert 840 <= (deadline - created).total_seconds() <= 901

        # A restarted operator adopts the check instead of creating a twin. Its periodic
        # re-check is an hour apart, so only the device poll can see the runner's result.
        operator.kill()
        operator = operators.start("replica-b", "--pool-namespace", pool_namespace,
                                   "--recheck-interval", "3600", "--device-poll-interval", "1")
        wait_until(lambda: "became the leader" in operator.log_text(), 120,
                   "replica-b to lead", interval=0.5)
        harness.settle(3)  # replica-b lists the conversion and reads the Pending check
        assert get(kube_api, namespace, "mlp-device")["status"]["stages"]["device"][
            "state"] == "Running"
        agent.resume()
        done = wait_for_condition(kube_api, namespace, "mlp-device", "Ready", "True",
                                  operators=(operator,))
    finally:
        agent_code = agent.stop()
    assert agent_code == 0, agent.log()[-3000:]

    verified = condition(done, "DeviceVerified")
    assert verified["status"] == "False"
    assert verified["reason"] == "ReferenceOnly"
    assert "mil-reference results do not verify a device" in verified["message"]
    assert condition(done, "Published")["status"] == "True"
    assert done["status"]["release"]["location"] == f"{operators.store}/mlp-device/1.0.0"

    (after,) = checks_in(kube_api, pool_namespace)
    assert after["metadata"]["uid"] == metadata["uid"]
    assert after["status"]["state"] == "Succeeded"
    assert after["status"]["runner"] == "linux-reference"
    assert after["status"]["attempts"] == 1

    # Results per compute unit and the report's location are in the conversion's status.
    record = done["status"]["stages"]["device"]
    assert record["state"] == "Skipped"
    assert record["check"] == f"{pool_namespace}/{metadata['name']}"
    assert record["runner"] == "linux-reference"
    (result,) = record["results"]
    assert result["backend"] == "mil-reference"
    assert result["passed"] is True
    assert result["maxAbsError"] < 1e-3
    assert "deviceLatencyP50Ms" not in done["status"]["metrics"]  # reference latency is no device's
    report_prefix = f"{operators.store}/.cache/device/"
    assert record["report"].startswith(report_prefix)
    report_key = "releases/" + record["report"][len(f"{operators.store}/"):]
    head = s3_server.client().head_object(Bucket=operators.bucket, Key=report_key)
    assert head["ContentLength"] > 0

    # The release carries the check's results, named by their backend, and no compiled
    # model: only a coreml runner compiles one.
    manifest = json.loads(s3_server.client().get_object(
        Bucket=operators.bucket, Key="releases/mlp-device/1.0.0/manifest.json")["Body"].read())
    assert manifest["device"]["backend"] == "mil-reference"
    assert manifest["device"]["verified"] is False
    assert manifest["device"]["reason"] == "ReferenceOnly"
    assert manifest["device"]["results"][0]["passed"] is True
    assert "model.mlmodelc.zip" not in manifest["files"]
    for secret in URL_SECRETS:
        assert secret not in str(done["status"])
        assert secret not in operator.log_text()
        assert secret not in agent.log()

    # Deleting the conversion deletes its check in the other namespace.
    kube_api.delete(harness.conversions_path(namespace, "mlp-device"))

    def gone() -> bool:
        try:
            get(kube_api, namespace, "mlp-device")
            return False
        except ApiError as error:
            if error.status != 404:
                raise
        return not checks_in(kube_api, pool_namespace)

    wait_until(gone, 120, "the conversion and its CoreMLCheck to be deleted")


def test_no_runner_skips_or_waits(
        kube_api, operators, pool_namespace):
    namespace = operators.namespace
    operator = operators.start("replica-a", "--pool-namespace", pool_namespace)
    apply(kube_api, namespace, device_conversion("optional", required=False))
    done = wait_for_condition(kube_api, namespace, "optional", "Ready", "True",
                              operators=(operator,))
    skipped = condition(done, "DeviceVerified")
    assert skipped["status"] == "False"
    assert skipped["reason"] == "Skipped"
    assert "no live runner" in skipped["message"]
    assert condition(done, "Published")["status"] == "True"
    # No runner took the check, so it is deleted: a runner that starts later must not run it.
    wait_until(lambda: not checks_in(kube_api, pool_namespace), 60,
               "the skipped check to be deleted")

    # The same model, required: the earlier stages are cache hits, and the run waits.
    apply(kube_api, namespace, device_conversion("required", required=True, version="2.0.0"))
    waiting = wait_for_condition(kube_api, namespace, "required", "DeviceVerified", "False",
                                 operators=(operator,))
    missing = condition(waiting, "DeviceVerified")
    assert missing["reason"] == "NoRunnerAvailable"
    assert "backend coreml" in missing["message"]
    assert condition(waiting, "Converted")["reason"] == "CacheHit"
    assert condition(waiting, "Ready")["status"] == "Unknown"
    assert condition(waiting, "Published")["status"] == "Unknown"
    (check,) = checks_in(kube_api, pool_namespace)
    assert check["spec"]["requirements"]["backend"] == "coreml"
    assert check["status"]["reason"] == "NoRunnerAvailable"
    harness.settle(6)
    assert condition(get(kube_api, namespace, "required"), "Published")["status"] == "Unknown"

    # Another device setting supersedes the run: its check goes, the new run's comes.
    kube_api.merge_patch(harness.conversions_path(namespace, "required"), {
        "spec": {"validation": {"device": {"computeUnits": ["all"]}}}})

    def replaced() -> bool:
        names = [item["metadata"]["name"] for item in checks_in(kube_api, pool_namespace)]
        return len(names) == 1 and names[0] != check["metadata"]["name"]

    wait_until(replaced, 120, "the superseded run's check to be replaced", interval=0.5)
    (new_check,) = checks_in(kube_api, pool_namespace)
    assert new_check["spec"]["computeUnits"] == ["all"]


def test_pool_without_operator_rights_is_runner_pool_missing(kube_api, operators):
    # A pool namespace where the operator's pool Role is not bound: every request on
    # CoreMLChecks, reads included, gets 403.
    pool = f"pool-{secrets.token_hex(4)}"
    kube_api.post("/api/v1/namespaces",
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": pool}})
    namespace = operators.namespace
    operator = operators.start("replica-a", "--pool-namespace", pool)
    try:
        apply(kube_api, namespace, device_conversion("optional", required=False))
        apply(kube_api, namespace, device_conversion("required", required=True,
                                                     version="2.0.0"))
        done = wait_for_condition(kube_api, namespace, "optional", "Ready", "True",
                                  operators=(operator,))
        failed = wait_for_condition(kube_api, namespace, "required", "Ready", "False",
                                    operators=(operator,))
    finally:
        kube_api.delete(f"/api/v1/namespaces/{pool}", {"propagationPolicy": "Background"})
    skipped = condition(done, "DeviceVerified")
    assert skipped["reason"] == "Skipped"
    assert f"lacks rights on the runner pool in namespace {pool}" in skipped["message"]
    assert condition(done, "Published")["status"] == "True"
    missing = condition(failed, "DeviceVerified")
    assert missing["status"] == "False"
    assert missing["reason"] == "RunnerPoolMissing"
    assert "grant it the pool rules" in missing["message"]
    assert condition(failed, "Published")["status"] != "True"
