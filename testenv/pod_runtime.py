"""The containers of one pod as local processes, and the pod status they add up to.

Each run of a container is an attempt with its own folder under the pod's state folder:

    <pod dir>/containers/<container>/<attempt number>/
        process              pid, its start time in clock ticks, and the start time (JSON)
        termination-policy   the container's terminationMessagePolicy
        log                  stdout and stderr of the command
        termination-log      where terminationMessagePath points inside the container
        exit-code            written by container_shim.py when the command ends
        start-error          written by container_shim.py when the command cannot start
        terminated-by-agent  written by the agent before it sends SIGTERM
        killed               written by the agent before it sends SIGKILL
        memory-limit         the container's memory limit in bytes, enforced by the shim
        fixed-mounts.json    container path -> local folder, bind-mounted by the shim
        oom-killed           written by container_shim.py when it killed the command for
                             exceeding the memory limit
        terminated.json      the final state, written once by the agent

Everything the pod status needs is in these files, so an agent that restarts rebuilds the
same state and adopts processes that are still running (they run in sessions of their own
and outlive the agent).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testenv.container_limits import (
    MEMORY_LIMIT_FILE,
    OOM_KILLED_FILE,
    memory_limit_bytes,
    pull_failure,
)
from testenv.pod_setup import ContainerConfigError, ContainerLaunch

SHIM = Path(__file__).with_name("container_shim.py")
# The kubelet's limits: 4096 bytes of termination message; from the log, the last 80 lines
# and at most 2048 bytes.
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
LOST_EXIT_CODE = 137
LOST_MESSAGE = "The container could not be located when the pod was terminated"


def rfc3339(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _process_identity(pid: int) -> tuple[int, str] | None:
    """Return (start time in clock ticks, state letter) of `pid`, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after it don't.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19]), fields[0]


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Attempt:
    """One run of a container, backed by its folder."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.number = int(directory.name)
        self.popen: subprocess.Popen | None = None
        record = self._read_json("process") or {}
        self.pid: int | None = record.get("pid")
        self.start_ticks: int | None = record.get("start_ticks")
        self.started_at: str | None = record.get("started_at")
        self.term_sent_at: float | None = None

    @property
    def container_id(self) -> str:
        """testenv://<pod uid>/<container name>/<attempt number>"""
        pod_uid = self.dir.parent.parent.parent.name
        return f"testenv://{pod_uid}/{self.dir.parent.name}/{self.number}"

    def _read_json(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.dir / name).read_text())
        except (OSError, ValueError):
            return None

    def start(self, launch: ContainerLaunch, wake: Callable[[], None]) -> None:
        """Start the shim in a new session; a thread reaps it and calls `wake`."""
        with open(self.dir / "log", "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, str(SHIM), str(self.dir), str(launch.cwd), "--", *launch.argv],
                env=launch.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )
        self.pid = self.popen.pid
        identity = _process_identity(self.pid)
        self.start_ticks = identity[0] if identity else None
        self.started_at = rfc3339(time.time())
        record = {"pid": self.pid, "start_ticks": self.start_ticks, "started_at": self.started_at}
        (self.dir / "process").write_text(json.dumps(record))
        popen = self.popen

        def reap() -> None:
            popen.wait()
            wake()

        threading.Thread(target=reap, name=f"reap-{self.pid}", daemon=True).start()

    def alive(self) -> bool:
        """Return whether the shim still runs (a zombie or a reused pid counts as gone)."""
        if self.popen is not None:
            return self.popen.poll() is None
        if self.pid is None:
            return False
        identity = _process_identity(self.pid)
        return identity is not None and identity[0] == self.start_ticks and identity[1] != "Z"

    def signal(self, sig: int) -> None:
        if self.pid is not None and self.alive():
            _signal_group(self.pid, sig)

    def terminated(self) -> dict[str, Any] | None:
        """Return the final state (containerStatuses[].state.terminated) once it has ended."""
        final = self._read_json("terminated.json")
        if final is not None:
            return final
        if self.alive():
            return None
        final = self._finish()
        (self.dir / "terminated.json").write_text(json.dumps(final))
        # Descendants the command left behind would outlive the container otherwise.
        if self.pid is not None:
            _signal_group(self.pid, signal.SIGKILL)
        return final

    def _finish(self) -> dict[str, Any]:
        exit_path = self.dir / "exit-code"
        finished = time.time()
        try:
            exit_code = int(exit_path.read_text())
            finished = exit_path.stat().st_mtime
            reason = "Completed" if exit_code == 0 else "Error"
            if (self.dir / OOM_KILLED_FILE).exists():
                reason = "OOMKilled"
        except (OSError, ValueError):
            # No exit code: the agent killed the shim with SIGKILL, or SIGTERM reached the
            # shim before it could handle it, or the process vanished while no agent watched.
            exit_code, reason = LOST_EXIT_CODE, "ContainerStatusUnknown"
            if (self.dir / "killed").exists():
                reason = "Error"
            elif (self.dir / "terminated-by-agent").exists():
                exit_code, reason = 128 + signal.SIGTERM, "Error"
        if (self.dir / "start-error").exists():
            reason = "StartError"
        state = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": self.started_at or rfc3339(finished),
            "finishedAt": rfc3339(finished),
            "containerID": self.container_id,
        }
        message = self._message(exit_code, reason)
        if message:
            state["message"] = message
        return state

    def _message(self, exit_code: int, reason: str) -> str:
        if reason == "ContainerStatusUnknown":
            return LOST_MESSAGE
        if reason == "StartError":
            return (self.dir / "start-error").read_text(errors="replace")
        message = _read_tail(self.dir / "termination-log", MAX_MESSAGE_BYTES)
        policy_file = self.dir / "termination-policy"
        policy = policy_file.read_text() if policy_file.exists() else "File"
        if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
            log = _read_tail(self.dir / "log", FALLBACK_LOG_BYTES * 4)
            lines = log.splitlines()[-FALLBACK_LOG_LINES:]
            message = "\n".join(lines).encode()[-FALLBACK_LOG_BYTES:].decode(errors="replace")
        return message


def _read_tail(path: Path, limit: int) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace")


def kill_recorded_processes(pod_dir: Path) -> None:
    """Kill (SIGKILL) every container process recorded under a pod folder that still runs."""
    for attempt_dir in pod_dir.glob("containers/*/*"):
        if attempt_dir.name.isdigit():
            Attempt(attempt_dir).signal(signal.SIGKILL)


@dataclass
class RestartBackoff:
    """Delay before restart number n: initial * 2**n, capped at maximum (seconds)."""

    initial: float = 1.0
    maximum: float = 10.0

    def delay(self, restarts: int) -> float:
        return min(self.initial * 2 ** restarts, self.maximum)


class ContainerRuntime:
    """One container of a pod: its attempts and what comes next."""

    def __init__(self, spec: dict[str, Any], directory: Path) -> None:
        self.spec = spec
        self.name = spec["name"]
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        numbers = sorted(int(child.name) for child in directory.iterdir() if child.name.isdigit())
        self.attempts = [Attempt(directory / str(number)) for number in numbers]
        self.waiting: tuple[str, str] | None = ("ContainerCreating", "")
        # Failed pulls of the image so far, and when the next one may be tried (time.time()).
        self.pull_failures = 0
        self.next_pull_at = 0.0

    @property
    def current(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def running(self) -> bool:
        return self.current is not None and self.current.alive()

    def finished(self) -> dict[str, Any] | None:
        """Return the current attempt's terminated state, or None when none has ended."""
        return self.current.terminated() if self.current else None

    def image_present(self, now: float, backoff: RestartBackoff,
                      unpullable: tuple[str, ...]) -> bool:
        """Pull the image when due; return whether it is present, else set the waiting reason.

        As with the kubelet, a failed pull shows ErrImagePull, and the wait before the next
        try shows ImagePullBackOff. The waits double, as the restart back-off does.
        """
        image = self.spec.get("image") or ""
        failure = pull_failure(image, unpullable)
        if failure is None:
            return True
        if now < self.next_pull_at:
            self.waiting = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
            return False
        self.next_pull_at = now + backoff.delay(self.pull_failures)
        self.pull_failures += 1
        self.waiting = ("ErrImagePull", failure)
        return False

    def mark_lost(self) -> None:
        """Record that the container ran but no process or record of it is left."""
        attempt_dir = self.dir / str(len(self.attempts))
        attempt_dir.mkdir()
        self.attempts.append(Attempt(attempt_dir))

    def start(self, launch_for: Callable[[Path], ContainerLaunch],
              wake: Callable[[], None]) -> None:
        """Start a new attempt; a config error leaves the container waiting with its reason."""
        attempt_dir = self.dir / str(len(self.attempts))
        attempt_dir.mkdir(exist_ok=True)
        try:
            launch = launch_for(attempt_dir)
        except ContainerConfigError as error:
            shutil.rmtree(attempt_dir, ignore_errors=True)
            self.waiting = ("CreateContainerConfigError", str(error))
            return
        except BaseException:
            # An empty attempt folder would read as a lost container after an agent restart.
            shutil.rmtree(attempt_dir, ignore_errors=True)
            raise
        policy = self.spec.get("terminationMessagePolicy") or "File"
        (attempt_dir / "termination-policy").write_text(policy)
        limit = memory_limit_bytes(self.spec)
        if limit is not None:
            (attempt_dir / MEMORY_LIMIT_FILE).write_text(str(limit))
        if launch.fixed_mounts:
            mounts = {path: str(folder) for path, folder in launch.fixed_mounts.items()}
            (attempt_dir / "fixed-mounts.json").write_text(json.dumps(mounts))
        attempt = Attempt(attempt_dir)
        attempt.start(launch, wake)
        self.attempts.append(attempt)
        self.waiting = None

    def status(self, restart_pending: bool, backoff: RestartBackoff) -> dict[str, Any]:
        """Return this container's entry of status.containerStatuses."""
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image") or "",
            "imageID": "",
            "restartCount": max(len(self.attempts) - 1, 0),
            "ready": False,
            "started": False,
        }
        current = self.current
        finished = self.finished()
        previous = self.attempts[-2].terminated() if len(self.attempts) > 1 else None
        if current is None:
            reason, message = self.waiting or ("ContainerCreating", "")
            status["state"] = {"waiting": _waiting(reason, message)}
        elif finished is None:
            status["state"] = {"running": {"startedAt": current.started_at}}
            status["containerID"] = current.container_id
            status["ready"] = status["started"] = True
        elif restart_pending:
            delay = backoff.delay(len(self.attempts) - 1)
            status["state"] = {"waiting": _waiting(
                "CrashLoopBackOff", f"back-off {delay:.0f}s restarting failed container={self.name}"
            )}
            previous = finished
        else:
            status["state"] = {"terminated": finished}
            status["containerID"] = finished["containerID"]
        status["lastState"] = {"terminated": previous} if previous else {}
        return status


def _waiting(reason: str, message: str) -> dict[str, str]:
    return {"reason": reason, "message": message} if message else {"reason": reason}
