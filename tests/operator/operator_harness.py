"""Helpers of the operator tests on the real control plane: the CRD, an operator process
under its RBAC ServiceAccount, ModelConversion documents and bounded waits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from modelconv.controller import rbac
from testenv.api import ApiError, KubeAPI
from testenv.processes import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crds" / "modelconversion.yaml"
CHECK_CRD_FILE = REPO_ROOT / "crds" / "coremlcheck.yaml"
MODELCONV = str(Path(sys.executable).parent / "modelconv")
GROUP_PATH = "/apis/modelconv.io/v1alpha1"
OPERATOR_ACCOUNT = "modelconv-operator"
STORE_SECRET = "store-credentials"
# Four stages that each import torch take about a minute and a half on two shared cores;
# the bound leaves room for a loaded machine.
RUN_TIMEOUT = 420.0


def install_crd(api: KubeAPI, crd_file: Path = CRD_FILE) -> None:
    """Create or update a CRD (default: ModelConversion) and wait until it is established."""
    crd = yaml.safe_load(crd_file.read_text())
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    try:
        api.post(path, crd)
    except ApiError as error:
        if error.status != 409:
            raise
        current = api.get(f"{path}/{crd['metadata']['name']}")
        crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        api.put(f"{path}/{crd['metadata']['name']}", crd)

    def established() -> bool:
        status = api.get(f"{path}/{crd['metadata']['name']}").get("status") or {}
        return any(item["type"] == "Established" and item["status"] == "True"
                   for item in status.get("conditions") or [])

    wait_until(established, 60, f"the CRD {crd['metadata']['name']} to be established")
    # The API server serves a new CRD a moment after it is established.
    plural = crd["spec"]["names"]["plural"]
    wait_until(lambda: _lists(api, plural), 60, f"{plural} to be served")


def _lists(api: KubeAPI, plural: str) -> bool:
    try:
        api.get(f"{GROUP_PATH}/{plural}")
    except ApiError:
        return False
    return True


def grant_operator_rbac(api: KubeAPI, namespace: str, lease_name: str) -> None:
    """Bind the operator's ServiceAccount to exactly the rules of modelconv.controller.rbac."""
    # The runner pool is the operator's own namespace here (--pool-namespace defaults to it).
    rules = rbac.RECONCILE_RULES + rbac.lease_rules(lease_name) + rbac.POOL_RULES
    role = rbac.role("Role", OPERATOR_ACCOUNT, rules, namespace)
    binding = rbac.binding("RoleBinding", OPERATOR_ACCOUNT, OPERATOR_ACCOUNT, OPERATOR_ACCOUNT,
                           namespace, namespace)
    base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    api.post(f"{base}/roles", role)
    api.post(f"{base}/rolebindings", binding)


def create_store_secret(api: KubeAPI, namespace: str, env: dict[str, str]) -> None:
    data = {key: env[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    api.post(f"/api/v1/namespaces/{namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": STORE_SECRET},
        "stringData": data})


class OperatorProcess:
    """`modelconv operator` in a child process, logging to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path):
        self.argv = argv
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def running(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it."""
        if self.running():
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """SIGTERM, then SIGKILL when it does not exit within `timeout` seconds."""
        if self.running():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class OperatorHarness:
    """Starts operators for one namespace, bucket and ServiceAccount kubeconfig."""

    def __init__(self, namespace: str, kubeconfig: Path, bucket: str, s3_env: dict[str, str],
                 log_dir: Path, lease_name: str):
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.bucket = bucket
        self.s3_env = s3_env
        self.log_dir = log_dir
        self.lease_name = lease_name
        self.processes: list[OperatorProcess] = []

    @property
    def store(self) -> str:
        return f"s3://{self.bucket}/releases"

    def start(self, identity: str = "replica-a", *extra: str) -> OperatorProcess:
        argv = [MODELCONV, "operator", "--kubeconfig", str(self.kubeconfig),
                "--identity", identity, *self.operator_args(*extra)]
        env = {key: value for key, value in os.environ.items() if not key.startswith("KUBE")}
        env.update(self.s3_env)
        # The operator reads the store with its own credentials, as it would in a cluster.
        process = OperatorProcess(argv, env, self.log_dir / f"operator-{identity}-"
                                  f"{len(self.processes)}.log")
        self.processes.append(process)
        return process

    def operator_args(self, *extra: str) -> list[str]:
        """Return the arguments of `modelconv operator` but the credentials and identity."""
        return [
            "--namespace", self.namespace,
            "--lease-namespace", self.namespace,
            "--lease-name", self.lease_name,
            "--store", self.store,
            "--store-secret", STORE_SECRET,
            "--s3-endpoint", self.s3_env["AWS_ENDPOINT_URL"],
            "--stage-env", f"PYTHONPATH={REPO_ROOT}",
            "--stage-env", "AWS_EC2_METADATA_DISABLED=true",
            "--recheck-interval", "3",
            "--lease-duration", "6", "--renew-deadline", "4", "--retry-period", "1",
            "--metrics-port", "0", "--health-port", "0",
            "--log-format", "text",
            *extra,
        ]

    def stop_all(self) -> None:
        for process in self.processes:
            process.kill()


def conversion(name: str, *, width: int = 8, version: str = "1.0.0", **spec: Any) -> dict:
    """Return a ModelConversion of the test MLP (tests/operator/factories.py)."""
    document = {
        "apiVersion": "modelconv.io/v1alpha1",
        "kind": "ModelConversion",
        "metadata": {"name": name},
        "spec": {
            "source": {"factory": {"entrypoint": "tests.operator.factories:mlp",
                                   "kwargs": {"width": width}}},
            "inputs": [{"name": "x", "shape": [1, 4]}],
            "outputs": [{"name": "logits"}],
            "coreml": {"precision": "float32"},
            # Each resource publishes a model of its own name: versions are immutable.
            "publish": {"model": name, "version": version},
        },
    }
    document["spec"].update(spec)
    return document


def conversions_path(namespace: str, name: str = "") -> str:
    return f"{GROUP_PATH}/namespaces/{namespace}/modelconversions" + (f"/{name}" if name else "")


def apply(api: KubeAPI, namespace: str, document: dict) -> dict:
    return api.request("POST", conversions_path(namespace), document,
                       params={"fieldValidation": "Strict"})


def get(api: KubeAPI, namespace: str, name: str) -> dict:
    return api.get(conversions_path(namespace, name))


def condition(body: dict, type_: str) -> dict:
    for item in (body.get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return item
    return {}


def wait_for_condition(api: KubeAPI, namespace: str, name: str, type_: str, status: str,
                       timeout: float = RUN_TIMEOUT, operators: tuple = ()) -> dict:
    """Wait until condition `type_` has `status`; return the conversion."""
    found: dict = {}

    def reached() -> bool:
        for process in operators:
            if not process.running():
                raise AssertionError(f"the operator exited with {process.popen.returncode}:\n"
                                     f"{process.log_text()[-3000:]}")
        found.update(get(api, namespace, name))
        failed = condition(found, "Ready").get("status") == "False"
        if (type_, status) == ("Ready", "True") and failed:
            raise AssertionError(f"{name} failed: {found['status']}")
        return condition(found, type_).get("status") == status

    try:
        wait_until(reached, timeout, f"{name}: {type_}={status}", interval=0.5)
    except TimeoutError as error:
        status_now = (found.get("status") or {})
        raise AssertionError(f"{error}; status now: {status_now}") from None
    return found


def jobs_of(api: KubeAPI, namespace: str) -> list[dict]:
    return api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]


def stage_of(job: dict) -> str:
    return job["metadata"]["labels"]["modelconv.io/stage"]


def wait_for_job(api: KubeAPI, namespace: str, stage: str, timeout: float = RUN_TIMEOUT,
                 where: Callable[[dict], bool] = lambda job: True) -> dict:
    """Wait until a Job of `stage` exists (and satisfies `where`); return it."""
    found: list = []

    def exists() -> bool:
        found[:] = [job for job in jobs_of(api, namespace)
                    if stage_of(job) == stage and where(job)]
        return bool(found)

    wait_until(exists, timeout, f"a Job of stage {stage}", interval=0.3)
    return found[0]


def wait_for_no_job(api: KubeAPI, namespace: str, stage: str, what: str,
                    timeout: float = 120) -> None:
    """Wait until no Job of `stage` is left; `what` names it in the timeout message."""
    wait_until(lambda: not [job for job in jobs_of(api, namespace) if stage_of(job) == stage],
               timeout, what)


def request_retry(api: KubeAPI, namespace: str, name: str, value: str = "1") -> None:
    """Set the modelconv.io/retry annotation and wait until the operator starts that run."""
    retries = (get(api, namespace, name).get("status") or {}).get("retries") or 0
    api.merge_patch(conversions_path(namespace, name),
                    {"metadata": {"annotations": {"modelconv.io/retry": value}}})
    wait_until(lambda: get(api, namespace, name)["status"].get("retries") == retries + 1,
               60, f"the operator to start the retry run of {name}")


def release_finalizers(api: KubeAPI, namespace: str) -> None:
    """Remove Kopf's finalizer from conversions left behind, so the namespace can go."""
    for item in api.get(conversions_path(namespace))["items"]:
        if item["metadata"].get("finalizers"):
            api.merge_patch(conversions_path(namespace, item["metadata"]["name"]),
                            {"metadata": {"finalizers": None}})


def settle(seconds: float) -> None:
    """Give the operator a few re-check intervals to act on something it should ignore."""
    time.sleep(seconds)
