"""The node agent as a child process, for tests and `python -m testenv up`.

Running the agent in its own process keeps its threads out of the test process and makes a
real crash possible. `restart(crash=True)` kills it with SIGKILL mid-work. The next agent
then adopts the containers that still run, from the shared state folder.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from testenv.binaries import REPO_ROOT
from testenv.node_registration import DEFAULT_NODE_NAME
from testenv.processes import ManagedProcess, register_cleanup, unregister_cleanup, wait_until
from testenv.pod_runtime import kill_recorded_processes

START_TIMEOUT = 30.0


class NodeAgentProcess:
    """A running `python -m testenv.node_agent` for one cluster."""

    def __init__(self, kubeconfig: Path, node_name: str = DEFAULT_NODE_NAME,
                 image_commands: dict[str, str] | None = None,
                 restart_backoff: float = 1.0,
                 unpullable_images: tuple[str, ...] = ()) -> None:
        self.kubeconfig = kubeconfig
        self.node_name = node_name
        self.image_commands = dict(image_commands or {})
        self.restart_backoff = restart_backoff
        self.unpullable_images = tuple(unpullable_images)
        self.state_dir = Path(tempfile.mkdtemp(prefix="modelconv-node-agent-"))
        # Registered as a whole: removing the state folder alone would orphan containers.
        register_cleanup(self.stop)
        self.log_path = self.state_dir / "agent.log"
        self.process: ManagedProcess | None = None

    def __enter__(self) -> NodeAgentProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> NodeAgentProcess:
        """Start the agent and wait until it has registered the node and synced once."""
        ready_file = self.state_dir / "ready"
        ready_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "testenv.node_agent",
                "--kubeconfig", str(self.kubeconfig),
                "--state-dir", str(self.state_dir),
                "--node-name", self.node_name,
                "--restart-backoff", str(self.restart_backoff),
                # Containers outlive a stopped agent, so a restart adopts them; stop() kills
                # them through their records in the state folder.
                "--keep-containers-on-exit"]
        for pattern, command in self.image_commands.items():
            argv += ["--image-command", f"{pattern}={command}"]
        for pattern in self.unpullable_images:
            argv += ["--unpullable-image", pattern]
        self.process = ManagedProcess("node-agent", argv, self.log_path, cwd=REPO_ROOT)
        process = self.process
        wait_until(lambda: ready_file.exists() and ready_file.read_text() == str(process.pid),
                   START_TIMEOUT, "the node agent to register its node", process=process)
        return self

    def restart(self, crash: bool = True) -> None:
        """Stop the agent (SIGKILL when `crash`, else SIGTERM) and start a new one.

        Either way the containers keep running and the new agent adopts them.
        """
        assert self.process is not None, "the node agent is not running"
        if crash:
            self.process.kill()
        else:
            self.process.stop(timeout=15)
        self.start()

    def stop(self) -> None:
        """Stop the agent and its containers, and remove the state folder."""
        unregister_cleanup(self.stop)
        if self.process is not None:
            self.process.stop(timeout=15)
            self.process = None
        # Containers whose agent died without stopping them are still recorded here.
        for pod_dir in (self.state_dir / "pods").glob("*"):
            kill_recorded_processes(pod_dir)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def crash(self) -> None:
        """Kill the agent with SIGKILL, leaving its containers running; `start()` resumes."""
        assert self.process is not None, "the node agent is not running"
        self.process.kill()
        self.process = None

    def _attempt_dir(self, namespace: str, pod: str, container: str | None,
                     attempt: int | None) -> Path:
        for pod_dir in (self.state_dir / "pods").glob("*"):
            try:
                identity = json.loads((pod_dir / "pod.json").read_text())
            except (OSError, ValueError):
                continue
            if (identity["namespace"], identity["name"]) != (namespace, pod):
                continue
            containers = sorted((pod_dir / "containers").iterdir())
            folder = pod_dir / "containers" / container if container else containers[0]
            attempts = sorted(int(child.name) for child in folder.iterdir()
                              if child.name.isdigit())
            if attempts:
                return folder / str(attempts[-1] if attempt is None else attempt)
        raise FileNotFoundError(f"no container of pod {namespace}/{pod} ran on this node")

    def container_log(self, namespace: str, pod: str, container: str | None = None,
                      attempt: int | None = None) -> str:
        """Return the stdout and stderr of a container (first container, latest attempt
        by default).

        There is no kubelet API, so `kubectl logs` does not work against this node; tests
        read logs here instead. Raises FileNotFoundError when no such container ran here.
        """
        attempt_dir = self._attempt_dir(namespace, pod, container, attempt)
        return (attempt_dir / "log").read_text(errors="replace")

    def container_pid(self, namespace: str, pod: str, container: str | None = None) -> int:
        """Return the process id of the container's latest attempt (its process group id)."""
        attempt_dir = self._attempt_dir(namespace, pod, container, None)
        return json.loads((attempt_dir / "process").read_text())["pid"]
