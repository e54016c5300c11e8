"""The operator's least-privilege RBAC rules, as data.

`RECONCILE_RULES` apply wherever the operator reconciles ModelConversions: in a ClusterRole
when it watches all namespaces, or in a Role per watched namespace. `LEASE_RULES` apply in
the operator's own namespace only, and `POOL_RULES` in the runner pool namespace. The Helm
chart renders the same rules, and the end-to-end tests run the operator under a
ServiceAccount bound to exactly these.

The operator needs no Secret access, because stage Jobs read the store Secret through
envFrom, which the kubelet resolves. It needs no rights on Namespaces or CRDs, because Kopf's
cluster scanning is off, and no `get` on Jobs or Pods, because it reads them from watches.
"""

from __future__ import annotations

import dataclasses

from ..crd import PLURAL
from ..spec import API_GROUP


@dataclasses.dataclass(frozen=True)
class Rule:
    """One PolicyRule, with the reason the operator needs it."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str
    resource_names: tuple[str, ...] = ()

    def as_policy_rule(self) -> dict:
        rule = {"apiGroups": list(self.api_groups), "resources": list(self.resources),
                "verbs": list(self.verbs)}
        if self.resource_names:
            rule["resourceNames"] = list(self.resource_names)
        return rule


RECONCILE_RULES = (
    Rule((API_GROUP,), (PLURAL,), ("get", "list", "watch", "patch"),
         "watch ModelConversions; Kopf patches its finalizer onto them (the periodic "
         "re-check needs one) and removes it on deletion"),
    Rule((API_GROUP,), (f"{PLURAL}/status",), ("patch",),
         "write conditions, stage records and the release into status"),
    Rule((API_GROUP,), (f"{PLURAL}/finalizers",), ("update",),
         "set blockOwnerDeletion in the ownerReferences of Jobs and ConfigMaps, which "
         "clusters with the OwnerReferencesPermissionEnforcement admission plugin require"),
    Rule(("batch",), ("jobs",), ("list", "watch", "create", "delete"),
         "run each stage as a Job, follow it, and delete the Jobs of a superseded run"),
    Rule(("",), ("pods",), ("list", "watch"),
         "read container states of stage pods: termination messages, OOMKilled, image "
         "pull errors"),
    Rule(("",), ("configmaps",), ("create", "delete"),
         "create the immutable run file of each run and delete it when the run is superseded"),
    Rule(("",), ("events",), ("create",),
         "post an Event for every stage and Ready transition"),
)


# Rules in the runner pool namespace (`--pool-namespace`), for the device stage.
POOL_RULES = (
    Rule((API_GROUP,), ("coremlchecks",), ("get", "list", "create", "delete"),
         "create each run's CoreMLCheck, read its progress, and delete the checks of "
         "superseded runs and deleted ModelConversions (owner references cannot cross "
         "namespaces)"),
    Rule((API_GROUP,), ("coremlchecks/status",), ("update",),
         "requeue a check whose runner stopped sending heartbeats and fail one past its "
         "deadline, conditioned on resourceVersion"),
    Rule(("coordination.k8s.io",), ("leases",), ("list",),
         "read the runners' Leases to report NoRunnerAvailable when no live runner matches"),
)


def lease_rules(lease_name: str) -> tuple[Rule, ...]:
    """Return the rules for the leader election Lease named `lease_name`."""
    return (
        Rule(("coordination.k8s.io",), ("leases",), ("create",),
             "create the leader election Lease the first time (create cannot be limited "
             "to a resource name)"),
        Rule(("coordination.k8s.io",), ("leases",), ("get", "update"),
             "read, renew, take over and release the leader election Lease",
             resource_names=(lease_name,)),
    )


def role(kind: str, name: str, rules: tuple[Rule, ...], namespace: str = "") -> dict:
    """Return a Role (with `namespace`) or a ClusterRole manifest holding `rules`."""
    metadata = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata,
            "rules": [rule.as_policy_rule() for rule in rules]}


def binding(kind: str, name: str, role_name: str, service_account: str,
            service_account_namespace: str, namespace: str = "") -> dict:
    """Return a RoleBinding (with `namespace`) or ClusterRoleBinding to a ServiceAccount."""
    metadata = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    role_kind = "ClusterRole" if kind == "ClusterRoleBinding" else "Role"
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account,
                      "namespace": service_account_namespace}],
    }
