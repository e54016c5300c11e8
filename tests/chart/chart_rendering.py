"""Render the modelconv chart with the real helm and pick objects out of the result.

Other test suites use this to run under exactly the RBAC the chart installs, e.g.

    documents = render_chart(helm, {"watch": {"namespaces": [namespace]}}, namespace=namespace)
    rules = operator_rules(documents)

`helm` is a testenv.helm.Helm (the `helm` or `helm_without_cluster` fixture).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelconv"


def render_chart(helm: Any, values: Mapping[str, Any] | None = None, *,
                 release: str = "modelconv", namespace: str = "modelconv-system",
                 check: bool = True) -> list[dict]:
    """Return the documents of `helm template` for `values` (a dict, passed as JSON)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    if values:
        args += ["--set-json", _set_json(values)]
    result = helm.run(*args, check=check)
    if not check and result.returncode != 0:
        raise ChartRenderError(result.stdout + result.stderr)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class ChartRenderError(Exception):
    """helm refused to render the chart; the message is helm's output."""


def _set_json(values: Mapping[str, Any]) -> str:
    # One --set-json per top-level key would do too; a single JSON object keeps values whole.
    return ",".join(f"{key}={json.dumps(value)}" for key, value in values.items())


def find(documents: list[dict], kind: str, name: str | None = None,
         namespace: str | None = None) -> list[dict]:
    """Return the documents of `kind`, optionally with that name and namespace."""
    found = []
    for document in documents:
        metadata = document.get("metadata") or {}
        if document.get("kind") != kind:
            continue
        if name is not None and metadata.get("name") != name:
            continue
        if namespace is not None and metadata.get("namespace") != namespace:
            continue
        found.append(document)
    return found


def operator_deployment(documents: list[dict]) -> dict:
    (deployment,) = find(documents, "Deployment")
    return deployment


def operator_service_account(documents: list[dict]) -> tuple[str, str]:
    """Return (namespace, name) of the ServiceAccount the operator Deployment runs as."""
    deployment = operator_deployment(documents)
    return (deployment["metadata"]["namespace"],
            deployment["spec"]["template"]["spec"]["serviceAccountName"])


def bound_roles(documents: list[dict], namespace: str, service_account: str) -> list[dict]:
    """Return the Roles and ClusterRoles bound to the ServiceAccount, each with its scope.

    Each item is {"kind", "name", "namespace" (None for cluster-wide), "rules"}.
    """
    roles = {(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"]): doc
             for doc in documents if doc["kind"] in ("Role", "ClusterRole")}
    bound = []
    for binding in documents:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = binding.get("subjects") or []
        if not any(subject.get("kind") == "ServiceAccount"
                   and subject.get("name") == service_account
                   and subject.get("namespace") == namespace for subject in subjects):
            continue
        reference = binding["roleRef"]
        scope = binding["metadata"].get("namespace")
        role_namespace = scope if reference["kind"] == "Role" else None
        role = roles[(reference["kind"], role_namespace, reference["name"])]
        bound.append({"kind": reference["kind"], "name": reference["name"],
                      "namespace": scope, "rules": role["rules"]})
    return bound


def operator_rules(documents: list[dict]) -> list[dict]:
    """Return the roles bound to the operator's ServiceAccount (see `bound_roles`)."""
    namespace, name = operator_service_account(documents)
    return bound_roles(documents, namespace, name)


def install_rbac(documents: list[dict]) -> list[dict]:
    """Return only the ServiceAccounts, Roles, ClusterRoles and bindings of the rendering.

    Applying these to a test cluster lets an operator started outside a pod act with the
    chart's rights, through a kubeconfig for the operator's ServiceAccount.
    """
    kinds = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    return [document for document in documents if document["kind"] in kinds]
