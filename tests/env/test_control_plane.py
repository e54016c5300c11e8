"""The local control plane is the real thing: pinned version, CRD schemas with CEL rules,
garbage collection, and RBAC for ServiceAccount kubeconfigs."""

from __future__ import annotations

import kubernetes
import pytest

from testenv.api import ApiError, KubeAPI
from testenv.binaries import pinned_versions
from testenv.processes import wait_until

CRD_GROUP = "envcheck.modelconv.test"
CEL_MESSAGE = "minReplicas must not exceed maxReplicas"


def test_apiserver_reports_pinned_version(kube_api: KubeAPI, kube_client) -> None:
    version = kube_api.get("/version")
    seen_by_client = kubernetes.client.VersionApi(kube_client).get_code()

    assert version["gitVersion"] == pinned_versions()["KUBE_VERSION"]
    assert version["gitTreeState"] == "clean"
    assert seen_by_client.git_version == version["gitVersion"]


def _widget_crd() -> dict:
    spec_schema = {
        "type": "object",
        "required": ["minReplicas", "maxReplicas"],
        "properties": {
            "minReplicas": {"type": "integer", "minimum": 0},
            "maxReplicas": {"type": "integer"},
        },
        "x-kubernetes-validations": [
            {"rule": "self.minReplicas <= self.maxReplicas", "message": CEL_MESSAGE},
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": spec_schema},
                }},
            }],
        },
    }


def _widget(name: str, minimum: int, maximum: int) -> dict:
    return {
        "apiVersion": f"{CRD_GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"minReplicas": minimum, "maxReplicas": maximum, "colour": "pruned"},
    }


@pytest.fixture
def widget_crd(kube_api: KubeAPI):
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    kube_api.post(path, _widget_crd())

    def established() -> bool:
        crd = kube_api.get(f"{path}/widgets.{CRD_GROUP}")
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_until(established, 30, "the Widget CRD to be established")
    yield
    kube_api.delete(f"{path}/widgets.{CRD_GROUP}")


def test_crd_cel_rule_rejects_violating_object(
    kube_api: KubeAPI, namespace: str, widget_crd: None
) -> None:
    widgets = f"/apis/{CRD_GROUP}/v1/namespaces/{namespace}/widgets"

    # Discovery can lag a moment behind the Established condition.
    def create_valid() -> bool:
        try:
            kube_api.post(widgets, _widget("valid", 1, 3))
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    wait_until(create_valid, 30, "the widgets resource to be served")
    stored = kube_api.get(f"{widgets}/valid")
    with pytest.raises(ApiError) as rejected:
        kube_api.post(widgets, _widget("invalid", 5, 2))

    assert "colour" not in stored["spec"], "a structural schema prunes unknown fields"
    assert rejected.value.status == 422
    assert CEL_MESSAGE in rejected.value.message


def test_deleting_owner_collects_dependents(kube_api: KubeAPI, namespace: str) -> None:
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    owner = kube_api.post(configmaps, {"metadata": {"name": "owner"}, "data": {"k": "v"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                 "uid": owner["metadata"]["uid"]}
    for name in ("dependent-a", "dependent-b"):
        kube_api.post(configmaps, {"metadata": {"name": name, "ownerReferences": [reference]}})
    kube_api.post(configmaps, {"metadata": {"name": "bystander"}})

    kube_api.delete(f"{configmaps}/owner", {"propagationPolicy": "Background"})

    def dependents_gone() -> bool:
        names = {item["metadata"]["name"] for item in kube_api.get(configmaps)["items"]}
        return not names & {"owner", "dependent-a", "dependent-b"}

    wait_until(dependents_gone, 60, "the garbage collector to delete the dependents")
    kept = {item["metadata"]["name"] for item in kube_api.get(configmaps)["items"]}
    assert "bystander" in kept


def test_service_account_limited_to_role(
    kube_api: KubeAPI, namespace: str, sa_kubeconfig
) -> None:
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    kube_api.post(f"{rbac}/roles", {
        "metadata": {"name": "configmap-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
    })
    kube_api.post(f"{rbac}/rolebindings", {
        "metadata": {"name": "runner-reads-configmaps"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "configmap-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "runner", "namespace": namespace}],
    })
    kubeconfig = sa_kubeconfig(namespace, "runner")
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    core = kubernetes.client.CoreV1Api(client)

    # RBAC changes reach the authorizer's cache within moments; wait for the grant itself.
    def can_list() -> bool:
        try:
            core.list_namespaced_config_map(namespace)
        except kubernetes.client.ApiException as error:
            if error.status == 403:
                return False
            raise
        return True

    wait_until(can_list, 30, "the RoleBinding to take effect")
    rejected = {}
    for action, call in {
        "create configmaps": lambda: core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "written-by-runner"}}),
        "list secrets": lambda: core.list_namespaced_secret(namespace),
        "list configmaps in kube-system": lambda: core.list_namespaced_config_map("kube-system"),
    }.items():
        with pytest.raises(kubernetes.client.ApiException) as error:
            call()
        rejected[action] = error.value.status
    client.close()

    assert rejected == {"create configmaps": 403, "list secrets": 403,
                       "list configmaps in kube-system": 403}
