"""Fixtures of the real test environment (package `testenv` at the repository root).

Session-scoped, started on first use only:
- `cluster`: a running testenv.Cluster (etcd, kube-apiserver, kube-controller-manager);
  `cluster.kubeconfig` is the admin kubeconfig.
- `kube_api`: testenv.api.KubeAPI, a JSON REST client authenticated as the admin.
- `kube_client`: kubernetes.client.ApiClient for the admin kubeconfig.
- `node_agent`: testenv.NodeAgentProcess; with it, pods really run (as local processes).
- `s3_server`: testenv.S3Server (moto) on loopback; `.client()` returns a boto3 client.
- `helm`: testenv.helm.Helm with KUBECONFIG of the cluster; `helm_without_cluster` for lint
  and template, which need no cluster.

Per test:
- `namespace`: a fresh namespace (name str) whose default ServiceAccount and kube-root-ca.crt
  exist; deleted afterwards.
- `sa_kubeconfig(namespace, name)`: creates the ServiceAccount when missing and returns the
  Path of a kubeconfig that authenticates as it (TokenRequest token).
- `s3_bucket`: the name of a new, empty bucket; emptied and deleted afterwards.

Tests that use the cluster fixtures are marked `cluster`, those that use S3 are marked `s3`.
When hack/build-k8s.sh has not been run, they fail (not skip) with a message saying so.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# No AWS client in a test may look for credentials at the instance-metadata address.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

from testenv import Cluster, MissingBinaryError, NodeAgentProcess, S3Server, binaries  # noqa: E402
from testenv.api import ApiError, KubeAPI  # noqa: E402
from testenv.helm import Helm  # noqa: E402
from testenv.processes import wait_until  # noqa: E402
from testenv.service_accounts import issue_service_account_kubeconfig  # noqa: E402

CLUSTER_FIXTURES = {"cluster", "kube_api", "kube_client", "namespace", "sa_kubeconfig",
                    "node_agent", "helm"}
S3_FIXTURES = {"s3_server", "s3_bucket"}
NAMESPACE_READY_TIMEOUT = 60.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)
        if fixtures & S3_FIXTURES:
            item.add_marker(pytest.mark.s3)


def _dns_label(text: str, limit: int) -> str:
    """Turn a test name into the start of a DNS label: lowercase, digits and '-'."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return label[:limit].rstrip("-") or "test"


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    try:
        binaries.control_plane_binaries()
    except MissingBinaryError as error:
        missing = str(error)
    else:
        missing = ""
    if missing:
        pytest.fail(f"the test cluster cannot start: {missing}", pytrace=False)
    started = Cluster().start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def kube_api(cluster: Cluster) -> Iterator[KubeAPI]:
    api = cluster.api()
    yield api
    api.close()


@pytest.fixture(scope="session")
def kube_client(cluster: Cluster):
    import kubernetes  # Imported here: tests without the cluster don't load it.

    client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield client
    client.close()


@pytest.fixture
def namespace(kube_api: KubeAPI, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"{_dns_label(request.node.name, 40)}-{secrets.token_hex(3)}"
    kube_api.post("/api/v1/namespaces",
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # The API server rejects pods until the ServiceAccount controller has made "default".
    # The kube-api-access volume needs the CA ConfigMap that the root-ca publisher writes.
    def ready() -> bool:
        try:
            kube_api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default")
            kube_api.get(f"/api/v1/namespaces/{name}/configmaps/kube-root-ca.crt")
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    wait_until(ready, NAMESPACE_READY_TIMEOUT, f"namespace {name} to get its default "
               "ServiceAccount and kube-root-ca.crt")
    yield name
    try:
        kube_api.delete(f"/api/v1/namespaces/{name}", {"propagationPolicy": "Background"})
    except ApiError as error:
        if error.status != 404:
            raise


@pytest.fixture
def sa_kubeconfig(kube_api: KubeAPI, tmp_path: Path) -> Callable[[str, str], Path]:
    def issue(namespace: str, name: str) -> Path:
        path = tmp_path / f"{namespace}-{name}.kubeconfig"
        return issue_service_account_kubeconfig(kube_api, namespace, name, path)

    return issue


@pytest.fixture(scope="session")
def node_agent(cluster: Cluster) -> Iterator[NodeAgentProcess]:
    agent = NodeAgentProcess(cluster.kubeconfig).start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server, request: pytest.FixtureRequest) -> Iterator[str]:
    # S3 bucket names: 3 to 63 characters of lowercase letters, digits and '-'.
    name = f"{_dns_label(request.node.name, 48)}-{secrets.token_hex(4)}"
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    yield name
    for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
        for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
            client.delete_object(Bucket=name, Key=entry["Key"], VersionId=entry["VersionId"])
    client.delete_bucket(Bucket=name)


def _helm(home: Path, kubeconfig: Path | None) -> Helm:
    try:
        binaries.binary("helm")
    except MissingBinaryError as error:
        missing = str(error)
    else:
        missing = ""
    if missing:
        pytest.fail(f"helm is not available: {missing}", pytrace=False)
    return Helm.create(home, kubeconfig)


@pytest.fixture(scope="session")
def helm(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return _helm(tmp_path_factory.mktemp("helm"), cluster.kubeconfig)


@pytest.fixture(scope="session")
def helm_without_cluster(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return _helm(tmp_path_factory.mktemp("helm-offline"), None)
