"""One pod on the test node: starting and restarting its containers, stopping them, and
the pod status (phase, conditions, container statuses) that the kubelet would report.

Phases follow the kubelet: Pending until a container starts, Running while any container
runs or waits for a restart, then Succeeded when every container exited 0 and Failed
otherwise. restartPolicy Never, OnFailure and Always decide whether an ended container is
started again, after a back-off. A pod past its activeDeadlineSeconds is stopped and
fails with reason DeadlineExceeded.
"""

from __future__ import annotations

import calendar
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testenv.pod_runtime import ContainerRuntime, RestartBackoff, rfc3339
from testenv.pod_setup import ContainerLaunch, PodContext, prepare_container

DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
# A container whose configuration failed is tried again after this many seconds.
CONFIG_RETRY_SECONDS = 1.0


def parse_time(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


class PodLifecycle:
    """The containers of one pod bound to this node, rebuilt from its folder on restart."""

    def __init__(self, pod: dict[str, Any], pod_dir: Path, context: PodContext,
                 backoff: RestartBackoff, wake: Callable[[], None]) -> None:
        metadata = pod["metadata"]
        self.uid = metadata["uid"]
        self.namespace = metadata["namespace"]
        self.name = metadata["name"]
        self.dir = pod_dir
        self.context = context
        self.backoff = backoff
        self.wake = wake
        pod_dir.mkdir(parents=True, exist_ok=True)
        identity = {"namespace": self.namespace, "name": self.name, "uid": self.uid}
        (pod_dir / "pod.json").write_text(json.dumps(identity))
        self.containers = [
            ContainerRuntime(spec, pod_dir / "containers" / spec["name"])
            for spec in pod["spec"]["containers"]
        ]
        self.restart_policy = pod["spec"].get("restartPolicy") or "Always"
        self.start_time = (pod.get("status") or {}).get("startTime") or rfc3339(time.time())
        self.failure: tuple[str, str] | None = self._read_failure()
        self.stop_requested_at: float | None = None
        self.next_config_try = 0.0
        self.deleted = False
        self._adopt_lost_containers(pod)

    def _read_failure(self) -> tuple[str, str] | None:
        try:
            reason, message = json.loads((self.dir / "failure.json").read_text())
        except (OSError, ValueError):
            return None
        return reason, message

    def _adopt_lost_containers(self, pod: dict[str, Any]) -> None:
        """Containers the API shows as started but with no record here count as lost."""
        reported = {status["name"]: status
                    for status in (pod.get("status") or {}).get("containerStatuses") or []}
        for container in self.containers:
            state = (reported.get(container.name) or {}).get("state") or {}
            if not container.attempts and ("running" in state or "terminated" in state):
                container.mark_lost()

    # --- Running ---------------------------------------------------------------------------

    def restart_pending(self, container: ContainerRuntime) -> bool:
        """Return whether an ended container is to be started again."""
        if self.stop_requested_at is not None or self.failure is not None:
            return False
        finished = container.finished()
        if finished is None:
            return False
        if self.restart_policy == "Always":
            return True
        return self.restart_policy == "OnFailure" and finished["exitCode"] != 0

    def advance(self, pod: dict[str, Any], now: float) -> None:
        """Start what is due to start, and enforce activeDeadlineSeconds."""
        deadline = pod["spec"].get("activeDeadlineSeconds")
        if deadline is not None and self.failure is None:
            if now >= parse_time(self.start_time) + deadline:
                self.fail(DEADLINE_REASON, DEADLINE_MESSAGE)
        if self.failure is not None:
            self.stop(pod["spec"].get("terminationGracePeriodSeconds", 30), now)
            return
        for container in self.containers:
            if container.current is None or self.restart_pending(container):
                self._start_when_due(pod, container, now)

    def _start_when_due(self, pod: dict[str, Any], container: ContainerRuntime,
                        now: float) -> None:
        if pod["spec"].get("initContainers"):
            container.waiting = ("CreateContainerConfigError",
                                 "init containers are not supported by the test node agent")
            return
        finished = container.finished()
        if finished is not None:
            restarts = len(container.attempts) - 1
            if now < parse_time(finished["finishedAt"]) + self.backoff.delay(restarts):
                return
        if container.current is None and not container.image_present(
                now, self.backoff, self.context.unpullable_images):
            return
        if container.waiting and container.waiting[0] == "CreateContainerConfigError":
            if now < self.next_config_try:
                return
            self.next_config_try = now + CONFIG_RETRY_SECONDS

        def launch_for(attempt_dir: Path) -> ContainerLaunch:
            return prepare_container(self.context, container.spec, attempt_dir)

        container.start(launch_for, self.wake)

    def fail(self, reason: str, message: str) -> None:
        self.failure = (reason, message)
        (self.dir / "failure.json").write_text(json.dumps([reason, message]))

    def stop(self, grace_seconds: float, now: float) -> None:
        """Send SIGTERM to every running container once, and SIGKILL after the grace period."""
        if self.stop_requested_at is None:
            self.stop_requested_at = now
        for container in self.containers:
            attempt = container.current
            if attempt is None or not attempt.alive():
                continue
            if attempt.term_sent_at is None:
                attempt.term_sent_at = now
                (attempt.dir / "terminated-by-agent").touch()
                attempt.signal(signal.SIGTERM)
            elif now >= attempt.term_sent_at + grace_seconds:
                (attempt.dir / "killed").touch()
                attempt.signal(signal.SIGKILL)

    def stopped(self) -> bool:
        return not any(container.running() for container in self.containers)

    # --- Status ----------------------------------------------------------------------------

    def status(self, pod: dict[str, Any]) -> dict[str, Any]:
        """Return the pod status to write, keeping conditions that others own."""
        statuses = [container.status(self.restart_pending(container), self.backoff)
                    for container in self.containers]
        phase = self._phase()
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": self._conditions(pod, phase, statuses),
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
        }
        if self.failure is not None and phase == "Failed":
            status["reason"], status["message"] = self.failure
        return status

    def _phase(self) -> str:
        started = any(container.attempts for container in self.containers)
        if self.failure is not None:
            return "Failed" if self.stopped() else "Running"
        finished = [container.finished() for container in self.containers]
        if self.stop_requested_at is not None and self.stopped():
            succeeded = all(state is not None and state["exitCode"] == 0 for state in finished)
            return "Succeeded" if succeeded else "Failed"
        if all(state is not None for state in finished) and not any(
            self.restart_pending(container) for container in self.containers
        ):
            return "Succeeded" if all(state["exitCode"] == 0 for state in finished) else "Failed"
        return "Running" if started else "Pending"

    def _sandbox_ready(self) -> bool:
        """Return whether the pod's volumes are in place, or a container started earlier."""
        started = any(container.attempts for container in self.containers)
        return self.context.mounts is not None or started

    def _conditions(self, pod: dict[str, Any], phase: str,
                    statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
        existing = (pod.get("status") or {}).get("conditions") or []
        previous = {condition["type"]: condition for condition in existing}
        unready = [status["name"] for status in statuses if not status["ready"]]
        if phase == "Succeeded":
            not_ready = ("PodCompleted", "")
        else:
            names = " ".join(unready)
            not_ready = ("ContainersNotReady", f"containers with unready status: [{names}]")
        wanted = {
            "PodReadyToStartContainers": (self._sandbox_ready(), None),
            "Initialized": (True, None),
            "ContainersReady": (not unready, not_ready),
            "Ready": (not unready, not_ready),
        }
        if "PodScheduled" not in previous:
            wanted["PodScheduled"] = (True, None)

        now = rfc3339(time.time())
        conditions = [condition for condition in existing if condition["type"] not in wanted]
        for condition_type, (value, why) in wanted.items():
            condition = {"type": condition_type, "status": "True" if value else "False"}
            if not value and why:
                condition["reason"] = why[0]
                if why[1]:
                    condition["message"] = why[1]
            old = previous.get(condition_type)
            unchanged = old is not None and old.get("status") == condition["status"]
            condition["lastTransitionTime"] = old.get("lastTransitionTime") if unchanged else now
            condition["lastProbeTime"] = None
            conditions.append(condition)
        return conditions
