"""The chart against the real control plane: server-side validation, install, upgrade, uninstall.

The operator pod runs on the test node agent as a local process, started from the chart's
own command line (`modelconv operator ...`), so the listen addresses are set to loopback and
the ports to free ones.

The operator logs in as the chart's ServiceAccount: the node agent mounts the pod's token at
the standard /var/run/secrets/kubernetes.io/serviceaccount path, so the tests run it under
exactly the chart's RBAC.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from api_validation import DryRunRejected, dry_run_create, install_crd
from chart_rendering import CHART, find, render_chart
from testenv.api import ApiError, KubeAPI
from testenv.processes import free_port, wait_until
from testenv.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from value_sets import VALUE_SETS

SERVICE_MONITOR_CRD = Path(__file__).with_name("servicemonitor-crd.yaml")
CRD_NAMES = ("modelconversions.modelconv.io", "coremlchecks.modelconv.io")
POD_RUNNING_TIMEOUT = 60.0
CONVERSION_READY_TIMEOUT = 900.0
DELETION_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def service_monitor_crd(kube_api: KubeAPI) -> Iterator[None]:
    """The reduced ServiceMonitor CRD, so the chart's ServiceMonitor can be validated."""
    document = yaml.safe_load(SERVICE_MONITOR_CRD.read_text())
    install_crd(kube_api, document)
    yield
    kube_api.delete(
        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{document['metadata']['name']}")


@pytest.fixture
def make_namespace(kube_api: KubeAPI) -> Iterator[Callable[[str], str]]:
    """make_namespace(prefix) creates a namespace and returns its name; all are deleted after."""
    created: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}-{secrets.token_hex(3)}"
        kube_api.post("/api/v1/namespaces",
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        created.append(name)
        return name

    yield make
    for name in created:
        kube_api.delete(f"/api/v1/namespaces/{name}")


def cluster_values(name: str, make_namespace: Callable[[str], str]) -> dict:
    """Return the value set `name` with its namespaces replaced by fresh ones."""
    values = copy.deepcopy(VALUE_SETS[name])
    if values.get("watch", {}).get("namespaces"):
        values["watch"]["namespaces"] = [make_namespace("watched") for _ in
                                         values["watch"]["namespaces"]]
    if values.get("runners", {}).get("namespace"):
        values["runners"]["namespace"] = make_namespace("runners")
    return values


# --- server-side validation ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_objects_pass_server_side_validation(helm, kube_client, namespace,
                                                      make_namespace, service_monitor_crd,
                                                      name):
    values = cluster_values(name, make_namespace)
    release = f"dry-{secrets.token_hex(3)}"
    documents = render_chart(helm, values, release=release, namespace=namespace)
    assert documents
    for document in documents:
        dry_run_create(kube_client, document)


def test_server_side_validation_rejects_an_unknown_field(helm, kube_client, namespace):
    documents = render_chart(helm, {}, release=f"dry-{secrets.token_hex(3)}", namespace=namespace)
    (deployment,) = find(documents, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(DryRunRejected) as raised:
        dry_run_create(kube_client, deployment)
    assert 'unknown field "spec.template.spec.containers[0].livenessProbes"' in str(raised.value)


# --- install, upgrade, uninstall -----------------------------------------------------------


def adopt_existing_crds(kube_api: KubeAPI, release: str, namespace: str) -> None:
    """Hand CRDs that exist already (applied from crds/ or kept by an uninstalled release)
    to `release`, with the ownership metadata helm checks before it takes an object over."""
    for name in CRD_NAMES:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        try:
            kube_api.get(path)
        except ApiError as error:
            if error.status == 404:
                continue
            raise
        kube_api.merge_patch(path, {"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": release,
                            "meta.helm.sh/release-namespace": namespace}}})


def install_values(namespace: str, s3_endpoint: str, bucket: str) -> dict:
    """Values of a release that watches `namespace` only and runs on the node agent."""
    return {
        "watch": {"namespaces": [namespace]},
        "runners": {"namespace": namespace},
        "health": {"address": "127.0.0.1", "port": free_port()},
        "metrics": {"address": "127.0.0.1", "port": free_port()},
        "logging": {"format": "json", "level": "info"},
        "store": {"uri": f"s3://{bucket}/releases", "endpoint": s3_endpoint,
                  "region": "us-east-1", "credentialsSecret": "modelconv-s3"},
        "stages": {"env": {"AWS_EC2_METADATA_DISABLED": "true"}},
        "recheckIntervalSeconds": 5,
    }


def create_credentials_secret(kube_api: KubeAPI, namespace: str) -> None:
    data = {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}
    kube_api.post(f"/api/v1/namespaces/{namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "modelconv-s3"},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    })


def set_json_args(values: dict) -> list[str]:
    args = []
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def operator_pods(kube_api: KubeAPI, namespace: str, release: str) -> list[dict]:
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    return kube_api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)["items"]


def wait_for_running_operator(kube_api: KubeAPI, namespace: str, release: str,
                              args_contain: str) -> dict:
    """Wait until one operator pod whose args contain `args_contain` runs; return it."""
    found: dict = {}

    def running() -> bool:
        for pod in operator_pods(kube_api, namespace, release):
            args = pod["spec"]["containers"][0]["args"]
            if pod["status"].get("phase") == "Running" and args_contain in args \
                    and "deletionTimestamp" not in pod["metadata"]:
                found.update(pod)
                return True
        return False

    wait_until(running, POD_RUNNING_TIMEOUT, f"an operator pod of {release} running with "
               f"{args_contain}")
    return found


def operator_logs(kube_api: KubeAPI, node_agent, namespace: str, release: str) -> str:
    """Return the end of each operator container's log, read from the node agent."""
    parts = []
    for pod in operator_pods(kube_api, namespace, release):
        name = pod["metadata"]["name"]
        try:
            log = node_agent.container_log(namespace, name)
        except FileNotFoundError as error:
            log = str(error)
        parts.append(f"--- {name} ({pod['status'].get('phase')}):\n{log[-4000:]}")
    return "\n".join(parts)


def wait_for_lease_holder(kube_api: KubeAPI, namespace: str, name: str,
                          diagnose: Callable[[], str] = lambda: "") -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
    holder: list[str] = []

    def held() -> bool:
        try:
            lease = kube_api.get(path)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        identity = lease.get("spec", {}).get("holderIdentity")
        if identity:
            holder.append(identity)
        return bool(identity)

    try:
        wait_until(held, POD_RUNNING_TIMEOUT, f"the operator to hold the Lease {namespace}/{name}")
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{diagnose()}") from None
    return holder[-1]


def leftover_objects(kube_api: KubeAPI, namespace: str, release: str) -> list[str]:
    """Return "Kind/name" of every object of the release that still exists."""
    selector = f"app.kubernetes.io/instance={release}"
    collections = {
        "Deployment": f"/apis/apps/v1/namespaces/{namespace}/deployments",
        "ServiceAccount": f"/api/v1/namespaces/{namespace}/serviceaccounts",
        "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
        "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "Pod": f"/api/v1/namespaces/{namespace}/pods",
    }
    left = []
    for kind, path in collections.items():
        for item in kube_api.get(path, labelSelector=selector)["items"]:
            left.append(f"{kind}/{item['metadata']['name']}")
    return left


def test_chart_installs_upgrades_and_uninstalls_cleanly(helm, kube_api, namespace, node_agent,
                                                        s3_server, s3_bucket):
    release = f"mc-{secrets.token_hex(3)}"
    fullname = f"{release}-modelconv"
    values = install_values(namespace, s3_server.endpoint_url, s3_bucket)
    create_credentials_secret(kube_api, namespace)
    adopt_existing_crds(kube_api, release, namespace)

    # Install: the operator pod runs the chart's command line and takes the Lease.
    helm.run("install", release, str(CHART), "--namespace", namespace,
             *set_json_args(values), "--wait", "--timeout", "180s")
    pod = wait_for_running_operator(kube_api, namespace, release, "--log-level=info")
    assert pod["spec"]["containers"][0]["command"] == ["modelconv"]
    assert pod["spec"]["serviceAccountName"] == fullname
    logs = lambda: operator_logs(kube_api, node_agent, namespace, release)  # noqa: E731
    first_holder = wait_for_lease_holder(kube_api, namespace, fullname, logs)
    assert first_holder

    # Upgrade with a changed value: a new pod with the new argument takes over the Lease.
    helm.run("upgrade", release, str(CHART), "--namespace", namespace,
             *set_json_args(values), "--set", "logging.level=debug", "--wait",
             "--timeout", "180s")
    wait_for_running_operator(kube_api, namespace, release, "--log-level=debug")
    wait_until(lambda: wait_for_lease_holder(kube_api, namespace, fullname, logs) != first_holder,
               POD_RUNNING_TIMEOUT, "the upgraded operator to take over the Lease")
    history = helm.run("history", release, "--namespace", namespace, "--output", "json")
    assert [entry["revision"] for entry in json.loads(history.stdout)] == [1, 2]

    # Uninstall: every object of the release goes, the CRDs stay (crds.keep).
    helm.run("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
    wait_until(lambda: not leftover_objects(kube_api, namespace, release), DELETION_TIMEOUT,
               f"the objects of {release} to be deleted")
    assert leftover_objects(kube_api, namespace, release) == []
    for name in CRD_NAMES:
        crd = kube_api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def linear_conversion(name: str) -> dict:
    """A ModelConversion of a 4-to-2 torch.nn.Linear, small enough to convert in seconds."""
    return {
        "apiVersion": "modelconv.io/v1alpha1",
        "kind": "ModelConversion",
        "metadata": {"name": name},
        "spec": {
            "source": {"factory": {"entrypoint": "torch.nn:Linear",
                                   "kwargs": {"in_features": 4, "out_features": 2}}},
            "inputs": [{"name": "x", "shape": [1, 4]}],
            "outputs": [{"name": "y"}],
            "coreml": {"precision": "float32"},
            "publish": {"model": "linear", "version": "1.0.0"},
        },
    }


def test_installed_operator_makes_a_conversion_ready(helm, kube_api, namespace, node_agent,
                                                     s3_server, s3_bucket):
    release = f"mc-{secrets.token_hex(3)}"
    values = install_values(namespace, s3_server.endpoint_url, s3_bucket)
    create_credentials_secret(kube_api, namespace)
    adopt_existing_crds(kube_api, release, namespace)
    helm.run("install", release, str(CHART), "--namespace", namespace,
             *set_json_args(values), "--wait", "--timeout", "180s")
    wait_for_lease_holder(kube_api, namespace, f"{release}-modelconv",
                          lambda: operator_logs(kube_api, node_agent, namespace, release))

    conversions = f"/apis/modelconv.io/v1alpha1/namespaces/{namespace}/modelconversions"
    kube_api.post(conversions, linear_conversion("linear"))
    last_seen: dict = {}

    def ready() -> bool:
        status = kube_api.get(f"{conversions}/linear").get("status") or {}
        last_seen.update(status)
        for condition in status.get("conditions") or []:
            if condition["type"] == "Ready" and condition["status"] == "True":
                return True
        return False

    deadline = time.monotonic() + CONVERSION_READY_TIMEOUT
    while not ready():
        assert time.monotonic() < deadline, (
            f"the conversion did not become Ready; last status: {json.dumps(last_seen)}")
        failed = [condition for condition in last_seen.get("conditions") or []
                  if condition["status"] == "False"
                  and condition["reason"] not in ("Pending", "Running", "InProgress", "Skipped")]
        assert not failed, f"the conversion failed: {json.dumps(failed)}"
        time.sleep(2)
    release_status = last_seen.get("release") or {}
    assert release_status.get("location", "").startswith(f"s3://{s3_bucket}/releases/linear/1.0.0")
    keys = [entry["Key"] for entry in s3_server.client().list_objects_v2(
        Bucket=s3_bucket, Prefix="releases/linear/1.0.0/").get("Contents", [])]
    assert "releases/linear/1.0.0/manifest.json" in keys

    helm.run("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
