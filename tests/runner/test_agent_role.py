"""The agent Role of examples/macos/agent-rbac.yaml, enforced by the real API server.

A runner's kubeconfig may read CoreMLChecks, write their status and keep its Lease. It may
not read Secrets or ModelConversions, change a check's spec, create or delete checks, or
list Leases.
"""

from __future__ import annotations

import pytest
from kubernetes import client as kube
from kubernetes.client.exceptions import ApiException

from modelconv.runner.kube import CheckApi, LeaseApi, api_client
from modelconv.runner.lease import RunnerLease
from modelconv.runner.pool import lease_labels


@pytest.fixture
def agent_client(pool):
    client = api_client(str(pool.agent_kubeconfig))
    yield client
    client.close()


def _forbidden(call) -> int:
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value.status


def _can(client, namespace: str, verb: str, resource: str, group: str = "",
         subresource: str = "") -> bool:
    review = kube.V1SelfSubjectAccessReview(spec=kube.V1SelfSubjectAccessReviewSpec(
        resource_attributes=kube.V1ResourceAttributes(
            namespace=namespace, verb=verb, group=group, resource=resource,
            subresource=subresource or None)))
    return kube.AuthorizationV1Api(client).create_self_subject_access_review(review).status.allowed


def test_agent_cannot_read_secrets(pool, agent_client):
    core = kube.CoreV1Api(agent_client)
    assert _forbidden(lambda: core.list_namespaced_secret(pool.namespace)) == 403
    assert _forbidden(lambda: core.read_namespaced_secret("any", pool.namespace)) == 403
    assert not _can(agent_client, pool.namespace, "get", "secrets")


def test_agent_cannot_read_model_conversions(pool, agent_client):
    custom = kube.CustomObjectsApi(agent_client)
    status = _forbidden(lambda: custom.list_namespaced_custom_object(
        "modelconv.io", "v1alpha1", pool.namespace, "modelconversions"))
    # 403 when the ModelConversion CRD is installed, 404 when it is not: either way no data.
    assert status in (403, 404)
    assert not _can(agent_client, pool.namespace, "list", "modelconversions", "modelconv.io")
    assert not _can(agent_client, pool.namespace, "get", "modelconversions", "modelconv.io")


def test_agent_reads_checks_and_writes_only_their_status(pool, agent_client):
    checks = CheckApi(agent_client, pool.namespace)
    items, _ = checks.list()
    assert items == []
    assert _can(agent_client, pool.namespace, "watch", "coremlchecks", "modelconv.io")
    assert _can(agent_client, pool.namespace, "update", "coremlchecks", "modelconv.io", "status")
    for verb in ("create", "update", "patch", "delete"):
        assert not _can(agent_client, pool.namespace, verb, "coremlchecks", "modelconv.io"), verb
    manifest = {"apiVersion": "modelconv.io/v1alpha1", "kind": "CoreMLCheck",
                "metadata": {"name": "made-by-agent"}, "spec": {}}
    assert _forbidden(lambda: checks.create(manifest)) == 403


def test_agent_keeps_its_lease_but_cannot_list_leases(pool, agent_client):
    leases = LeaseApi(agent_client, pool.namespace)
    lease = RunnerLease(leases, "mac-rbac", lease_labels({"chip": "m2"}, "coreml"), 30, 1)
    lease.acquire()
    lease.renew()
    lease.release()
    assert _forbidden(lambda: leases.list("app.kubernetes.io/component=runner")) == 403
    assert not _can(agent_client, pool.namespace, "delete", "leases", "coordination.k8s.io")


def test_agent_has_no_access_outside_the_pool_namespace(pool, agent_client):
    assert not _can(agent_client, "default", "list", "coremlchecks", "modelconv.io")
    assert not _can(agent_client, "default", "create", "leases", "coordination.k8s.io")
