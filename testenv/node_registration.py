"""The Node object of the test node agent, its Ready status and its Lease heartbeat.

Like the kubelet, the agent renews a Lease in kube-node-lease every 10 s (duration 40 s)
and reports node status, so the node looks alive to anything that checks. The reported
capacity is this machine's CPU count and memory.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from testenv.api import ApiError, KubeAPI

DEFAULT_NODE_NAME = "testenv-node"
HEARTBEAT_SECONDS = 10.0
LEASE_DURATION_SECONDS = 40
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _micro_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


def _memory_kib() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/meminfo has no MemTotal line")


class NodeRegistration:
    """Registration of the agent's Node: creates it, keeps it Ready, renews its Lease."""

    def __init__(self, api: KubeAPI, node_name: str) -> None:
        self.api = api
        self.node_name = node_name
        architecture = _ARCHITECTURES.get(platform.machine(), platform.machine())
        self.labels = {
            "kubernetes.io/hostname": node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": architecture,
        }
        self.node_uid = ""
        self.next_heartbeat = 0.0
        # The conditions never change while the agent runs, so they changed when it started.
        self.transition_time = _now()

    def register(self) -> None:
        """Create the Node unless it exists, mark it Ready and renew its Lease."""
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node_name, "labels": self.labels}}
        try:
            node = self.api.post("/api/v1/nodes", body)
        except ApiError as error:
            if error.status != 409:
                raise
            node = self.api.get(f"/api/v1/nodes/{self.node_name}")
        self.node_uid = node["metadata"]["uid"]
        self.heartbeat()
        self._remove_not_ready_taint()

    def heartbeat_when_due(self) -> None:
        if time.monotonic() >= self.next_heartbeat:
            self.heartbeat()

    def heartbeat(self) -> None:
        """Report Ready status and renew the Lease; recreate the Node if it was deleted."""
        try:
            self.api.merge_patch(f"/api/v1/nodes/{self.node_name}/status",
                                 {"status": self._status()})
        except ApiError as error:
            if error.status != 404:
                raise
            self.register()
            return
        self._renew_lease()
        self.next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS

    def _status(self) -> dict[str, Any]:
        now = _now()
        memory = f"{_memory_kib()}Ki"
        resources = {"cpu": str(os.cpu_count() or 1), "memory": memory, "pods": "110"}

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {"type": kind, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": self.transition_time}

        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("Ready", "True", "KubeletReady", "test node agent is posting status"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", ""),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", ""),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", ""),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node_name}],
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": platform.release(), "osImage": "testenv node agent",
                "containerRuntimeVersion": "testenv://local-process",
                "kubeletVersion": "testenv", "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": self.labels["kubernetes.io/arch"],
            },
        }

    def _remove_not_ready_taint(self) -> None:
        """Drop the not-ready taint that admission adds to a new Node.

        The node lifecycle controller would remove it once the node is Ready, but the test
        cluster does not run that controller.
        """
        node = self.api.get(f"/api/v1/nodes/{self.node_name}")
        taints = node["spec"].get("taints") or []
        kept = [taint for taint in taints if taint["key"] != NOT_READY_TAINT]
        if len(kept) != len(taints):
            self.api.merge_patch(f"/api/v1/nodes/{self.node_name}",
                                 {"spec": {"taints": kept or None}})

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        spec = {"holderIdentity": self.node_name,
                "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": _micro_now()}
        try:
            lease = self.api.get(path)
        except ApiError as error:
            if error.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.node_name,
                     "uid": self.node_uid}
            self.api.post(path.rsplit("/", 1)[0], {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node_name, "ownerReferences": [owner]},
                "spec": spec,
            })
            return
        lease["spec"].update(spec)
        self.api.put(path, lease)
