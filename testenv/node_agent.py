"""A test-only node agent: one Node whose pods run as local processes.

It replaces both the scheduler and the kubelet of a one-node cluster:
- registers its Node, keeps it Ready with a status heartbeat and a Lease in kube-node-lease;
- keeps a watch-fed copy of the cluster's pods (testenv.pod_cache), as the kubelet does;
- binds pending pods that have no nodeName (default scheduler, nodeSelector matching the
  node's labels) to itself through the pods/binding subresource: there is no kube-scheduler;
- runs the containers of pods bound to it as local processes (see testenv.pod_setup for how
  a container spec maps to a process) and writes their status through pods/status;
- stops containers when their pod is deleted or passes activeDeadlineSeconds, then deletes
  the pod for good as the kubelet does;
- keeps its state in files, so after a restart (even after SIGKILL) it adopts the
  containers that still run and reports those that ended meanwhile.

Run it with `python -m testenv.node_agent --kubeconfig FILE --state-dir DIR`; SIGTERM or
SIGINT stop it and its containers (unless --keep-containers-on-exit).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from testenv.api import ApiError, KubeAPI
from testenv.node_registration import DEFAULT_NODE_NAME, NodeRegistration
from testenv.pod_cache import PodCache
from testenv.pod_lifecycle import PodLifecycle
from testenv.pod_runtime import RestartBackoff, kill_recorded_processes
from testenv.pod_setup import (
    DEFAULT_IMAGE_COMMANDS,
    ContainerConfigError,
    PodContext,
    parse_image_command,
)

log = logging.getLogger("testenv.node_agent")

RESYNC_SECONDS = 1.0
SHUTDOWN_GRACE_SECONDS = 5.0


class NodeAgent:
    """The agent's state: the API client, the node and one PodLifecycle per bound pod."""

    def __init__(self, api: KubeAPI, state_dir: Path, node_name: str = DEFAULT_NODE_NAME,
                 image_commands: dict[str, list[str]] | None = None,
                 backoff: RestartBackoff | None = None,
                 unpullable_images: tuple[str, ...] = ()) -> None:
        self.api = api
        self.state_dir = state_dir
        self.node_name = node_name
        self.image_commands = dict(DEFAULT_IMAGE_COMMANDS if image_commands is None
                                   else image_commands)
        self.backoff = backoff or RestartBackoff()
        self.unpullable_images = tuple(unpullable_images)
        self.pods: dict[str, PodLifecycle] = {}
        self.node = NodeRegistration(api, node_name)
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.cache = PodCache(api, self.wakeup.set)
        server = urlsplit(api.credentials.server)
        self.api_host, self.api_port = server.hostname or "127.0.0.1", server.port or 443
        (state_dir / "pods").mkdir(parents=True, exist_ok=True)

    # --- Main loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Register the node, then sync pods until `stopping` is set."""
        self.node.register()
        # An error here ends the agent with a traceback, before it reports ready.
        self.cache.relist()
        self.sync()
        (self.state_dir / "ready").write_text(str(os.getpid()))
        log.info("node %s ready; state in %s", self.node_name, self.state_dir)
        threading.Thread(target=self.cache.run, args=(self.stopping,), name="watch-pods",
                         daemon=True).start()
        while not self.stopping.is_set():
            self.wakeup.wait(RESYNC_SECONDS)
            self.wakeup.clear()
            try:
                self.node.heartbeat_when_due()
                self.sync()
            except (ApiError, OSError) as error:
                # The API server may be restarting or briefly overloaded; the next pass retries.
                log.warning("sync failed, retrying: %s", error)
                time.sleep(0.5)

    def shutdown(self, keep_containers: bool) -> None:
        """Stop every container (SIGTERM, then SIGKILL after a grace period) unless kept."""
        self.stopping.set()
        if keep_containers:
            return
        while True:
            now = time.time()
            for pod in self.pods.values():
                pod.stop(SHUTDOWN_GRACE_SECONDS, now)
            if all(pod.stopped() for pod in self.pods.values()):
                return
            time.sleep(0.1)

    # --- Pods --------------------------------------------------------------------------------

    def sync(self) -> None:
        """Bind unscheduled pods, bring each bound pod one step on, remove orphans."""
        pods = self.cache.snapshot()
        for pod in pods:
            if pod["spec"].get("nodeName"):
                continue
            try:
                self._bind_when_suitable(pod)
            except ApiError as error:
                metadata = pod["metadata"]
                log.warning("binding pod %s/%s failed; retrying on the next pass: %s",
                            metadata["namespace"], metadata["name"], error)
        bound = [pod for pod in pods if pod["spec"].get("nodeName") == self.node_name]
        now = time.time()
        for pod in bound:
            try:
                self._sync_pod(pod, now)
            except Exception:  # noqa: BLE001 - one pod's failure must not stall the others
                metadata = pod["metadata"]
                log.exception("sync of pod %s/%s (uid %s) failed; retrying on the next pass",
                              metadata["namespace"], metadata["name"], metadata["uid"])
        self._remove_orphans({pod["metadata"]["uid"] for pod in bound})

    def _bind_when_suitable(self, pod: dict[str, Any]) -> None:
        metadata, spec = pod["metadata"], pod["spec"]
        if metadata.get("deletionTimestamp"):
            return
        if (spec.get("schedulerName") or "default-scheduler") != "default-scheduler":
            return
        labels = self.node.labels
        if any(labels.get(key) != value for key, value in (spec.get("nodeSelector") or {}).items()):
            return
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": metadata["name"], "uid": metadata["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        path = f"/api/v1/namespaces/{metadata['namespace']}/pods/{metadata['name']}/binding"
        try:
            self.api.post(path, binding)
        except ApiError as error:
            # 409: bound meanwhile; 404: deleted meanwhile. Either way nothing is left to do.
            if error.status not in (404, 409):
                raise
            return
        log.info("bound pod %s/%s", metadata["namespace"], metadata["name"])

    def _sync_pod(self, pod: dict[str, Any], now: float) -> None:
        metadata = pod["metadata"]
        phase = (pod.get("status") or {}).get("phase")
        lifecycle = self.pods.get(metadata["uid"])
        if lifecycle is None:
            if phase in ("Succeeded", "Failed") and not self._pod_dir(pod).exists():
                # Finished before this agent knew it, and no process of it is left here.
                if metadata.get("deletionTimestamp"):
                    self._delete_for_good(pod)
                return
            lifecycle = self._lifecycle(pod)

        if metadata.get("deletionTimestamp"):
            grace = metadata.get("deletionGracePeriodSeconds") or 0
            lifecycle.stop(grace, now)
            if lifecycle.stopped():
                self._write_status(pod, lifecycle)
                if not lifecycle.deleted:
                    lifecycle.deleted = self._delete_for_good(pod)
            return
        if phase not in ("Succeeded", "Failed"):
            lifecycle.advance(pod, now)
        self._write_status(pod, lifecycle)

    def _lifecycle(self, pod: dict[str, Any]) -> PodLifecycle:
        context = PodContext(
            pod=pod,
            pod_dir=self._pod_dir(pod),
            node_name=self.node_name,
            api_host=self.api_host,
            api_port=self.api_port,
            image_commands=self.image_commands,
            resolve=self._resolve,
            request_token=self._request_token,
            unpullable_images=self.unpullable_images,
        )
        lifecycle = PodLifecycle(pod, self._pod_dir(pod), context, self.backoff,
                                 self.wakeup.set)
        self.pods[lifecycle.uid] = lifecycle
        return lifecycle

    def _pod_dir(self, pod: dict[str, Any]) -> Path:
        return self.state_dir / "pods" / pod["metadata"]["uid"]

    def _write_status(self, pod: dict[str, Any], lifecycle: PodLifecycle) -> None:
        current = pod.get("status") or {}
        if current.get("phase") in ("Succeeded", "Failed"):
            return  # A terminal phase is final; the API server rejects changes to it.
        status = lifecycle.status(pod)
        if all(current.get(key) == value for key, value in status.items()):
            return
        metadata = pod["metadata"]
        body = {"metadata": {"resourceVersion": metadata["resourceVersion"]}, "status": status}
        path = f"/api/v1/namespaces/{metadata['namespace']}/pods/{metadata['name']}/status"
        try:
            written = self.api.merge_patch(path, body)
        except ApiError as error:
            # 409: the pod changed since it was read; the next pass writes from the new one.
            if error.status not in (404, 409):
                raise
            self.wakeup.set()
            return
        self.cache.store_written(metadata["resourceVersion"], written)
        if status["phase"] != current.get("phase"):
            log.info("pod %s/%s is %s", metadata["namespace"], metadata["name"], status["phase"])

    def _delete_for_good(self, pod: dict[str, Any]) -> bool:
        """Delete the pod with grace period 0, as the kubelet does once its containers ended."""
        metadata = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": metadata["uid"]}}
        try:
            self.api.delete(f"/api/v1/namespaces/{metadata['namespace']}/pods/{metadata['name']}",
                            body)
        except ApiError as error:
            if error.status not in (404, 409):
                raise
        return True

    def _remove_orphans(self, bound_uids: set[str]) -> None:
        """Stop and forget pods that no longer exist in the API (deleted while away)."""
        now = time.time()
        for uid, lifecycle in list(self.pods.items()):
            if uid in bound_uids:
                continue
            if not lifecycle.stopped():
                lifecycle.stop(0, now)  # Forgotten on a later pass, once its processes end.
                continue
            del self.pods[uid]
            shutil.rmtree(lifecycle.dir, ignore_errors=True)
        for pod_dir in (self.state_dir / "pods").iterdir():
            if pod_dir.name not in bound_uids and pod_dir.name not in self.pods:
                kill_recorded_processes(pod_dir)
                shutil.rmtree(pod_dir, ignore_errors=True)

    # --- Lookups for pod setup ---------------------------------------------------------------

    def _resolve(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api.get(f"/api/v1/namespaces/{namespace}/{kind}/{name}")
        except ApiError as error:
            if error.status == 404:
                return None
            # The container waits with this reason and the agent tries again, as the
            # kubelet does when it cannot read a ConfigMap or Secret.
            raise ContainerConfigError(f"reading {kind[:-1]} {namespace}/{name} failed: "
                                       f"{error}") from error

    def _request_token(self, pod: dict[str, Any], audience: str | None,
                       expiration_seconds: int) -> str:
        metadata = pod["metadata"]
        spec: dict[str, Any] = {
            "expirationSeconds": expiration_seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": metadata["name"],
                               "uid": metadata["uid"]},
        }
        if audience:
            spec["audiences"] = [audience]
        account = pod["spec"].get("serviceAccountName") or "default"
        path = f"/api/v1/namespaces/{metadata['namespace']}/serviceaccounts/{account}/token"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        try:
            response = self.api.post(path, body)
        except ApiError as error:
            raise ContainerConfigError(
                f"requesting a token for ServiceAccount {metadata['namespace']}/{account} "
                f"failed: {error}"
            ) from error
        return response["status"]["token"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m testenv.node_agent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", type=Path, required=True,
                        help="kubeconfig of an identity allowed to manage nodes and pods")
    parser.add_argument("--state-dir", type=Path, required=True,
                        help="folder for pod state; reuse it to adopt containers after a restart")
    parser.add_argument("--node-name", default=DEFAULT_NODE_NAME, help="name of the Node")
    parser.add_argument("--image-command", action="append", default=[], metavar="PATTERN=CMD",
                        help="entry point for images matching the fnmatch PATTERN, used when "
                             "a container sets no command (repeatable; adds to the default "
                             f"{DEFAULT_IMAGE_COMMANDS})")
    parser.add_argument("--unpullable-image", action="append", default=[], metavar="PATTERN",
                        help="fnmatch PATTERN of image references this node cannot pull: their "
                             "containers wait with ErrImagePull and ImagePullBackOff "
                             "(repeatable; images from registry hosts under .invalid never "
                             "pull)")
    parser.add_argument("--restart-backoff", type=float, default=1.0, metavar="SECONDS",
                        help="first delay before restarting a container; doubles, at most 10x")
    parser.add_argument("--keep-containers-on-exit", action="store_true",
                        help="leave containers running on SIGTERM, to be adopted by a new agent")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    image_commands = dict(DEFAULT_IMAGE_COMMANDS)
    for text in args.image_command:
        pattern, command = parse_image_command(text)
        image_commands[pattern] = command
    backoff = RestartBackoff(args.restart_backoff, args.restart_backoff * 10)
    agent = NodeAgent(KubeAPI.from_kubeconfig(args.kubeconfig), args.state_dir.resolve(),
                      args.node_name, image_commands, backoff, tuple(args.unpullable_image))

    def request_stop(signum: int, frame: object) -> None:
        log.info("received signal %d; stopping", signum)
        agent.stopping.set()
        agent.wakeup.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        agent.run()
    finally:
        agent.shutdown(keep_containers=args.keep_containers_on_exit)
        log.info("node agent stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
