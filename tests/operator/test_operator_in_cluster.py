"""The operator as a pod on the test node, with in-cluster credentials and no kubeconfig.

The API server's ServiceAccount admission adds the token volume to the pod, and the node
agent mounts it at /var/run/secrets/kubernetes.io/serviceaccount in the container's own
mount namespace (docs/test-environment.md), where Kopf and the operator's client look for it.
"""

from __future__ import annotations

import subprocess

import pytest

import operator_harness as harness
from operator_harness import apply, conversion, get, wait_for_job
from testenv.api import ApiError
from testenv.processes import wait_until

POD = "operator-in-cluster"


def _mount_namespaces_allowed() -> bool:
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


def operator_pod(operators) -> dict:
    env = [{"name": key, "value": value} for key, value in sorted(operators.s3_env.items())]
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD},
        "spec": {
            "serviceAccountName": harness.OPERATOR_ACCOUNT,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "operator", "image": "modelconv/modelconv-operator:test",
                "command": [harness.MODELCONV, "operator", *operators.operator_args()],
                "env": env,
            }],
        },
    }


@pytest.mark.skipif(not _mount_namespaces_allowed(),
                    reason="the node agent needs CAP_SYS_ADMIN to mount the token")
def test_operator_pod_uses_in_cluster_credentials(kube_api, operators, node_agent):
    namespace = operators.namespace
    pods = f"/api/v1/namespaces/{namespace}/pods"
    kube_api.post(pods, operator_pod(operators))
    try:
        apply(kube_api, namespace, conversion("in-cluster", width=9))

        # The operator read the conversion, created its first Job and wrote its status.
        try:
            job = wait_for_job(kube_api, namespace, "export", timeout=120)
        except TimeoutError as error:
            log = node_agent.container_log(namespace, POD, "operator")
            pytest.fail(f"{error}; the operator's log ends with:\n{log[-3000:]}")
        assert job["metadata"]["labels"]["modelconv.io/conversion"] == "in-cluster"
        wait_until(lambda: (get(kube_api, namespace, "in-cluster").get("status") or {})
                   .get("stage") == "export", 60, "the operator to write the status")
        # In a pod the operator's Lease identity is its pod name.
        lease = kube_api.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/"
                             f"{operators.lease_name}")
        assert lease["spec"]["holderIdentity"] == POD
        assert (kube_api.get(f"{pods}/{POD}")["status"]["phase"]) == "Running"
    finally:
        try:
            kube_api.delete(f"{pods}/{POD}")
        except ApiError as error:
            if error.status != 404:
                raise
