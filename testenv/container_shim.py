"""Run one container's command and record its exit code in a file.

Usage: python container_shim.py ATTEMPT_DIR CWD -- COMMAND [ARG...]

The node agent starts this script in a new session (so its process group id is its pid)
with the container's environment. It writes the command's output to ATTEMPT_DIR/log and,
when the command ends, its exit code to ATTEMPT_DIR/exit-code: 128+N when signal N killed
it, as container runtimes report it. Because the result lands in a file, a restarted node
agent can still learn how a container it did not start ended.

When ATTEMPT_DIR/memory-limit contains a number of bytes, the shim enforces it as a memory
cgroup would, by sampling: every 0.1 s it adds up the resident set size of the processes in
its session (the command and its descendants, not the shim itself). Over the limit, it
writes ATTEMPT_DIR/oom-killed and kills them with SIGKILL, so the command ends with exit code
137 and the agent reports the container as OOMKilled (testenv/container_limits.py).

When ATTEMPT_DIR/fixed-mounts.json maps container paths under /run (or /var/run) to local
folders, the shim moves into a mount namespace of its own, covers /run with an empty tmpfs
there and bind-mounts each folder at its path, so the command finds, for example, its
ServiceAccount token where Kubernetes clients look for it. The host's /run is then hidden
from the command, as a container's is. Creating the namespace needs CAP_SYS_ADMIN; without
it the shim notes that in the log and runs the command without the mounts.

The script imports nothing from the testenv package, so it runs as a plain file.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys

# Exit code of a container whose command could not be started, as containerd reports it.
START_ERROR_EXIT_CODE = 128
# The same names and interval as in testenv/container_limits.py.
MEMORY_LIMIT_FILE = "memory-limit"
OOM_KILLED_FILE = "oom-killed"
MEMORY_SAMPLE_SECONDS = 0.1
FIXED_MOUNTS_FILE = "fixed-mounts.json"
# From <sched.h> and <sys/mount.h>.
CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def _record(attempt_dir: str, exit_code: int) -> None:
    partial = os.path.join(attempt_dir, "exit-code.partial")
    with open(partial, "w") as file:
        file.write(f"{exit_code}\n")
    os.replace(partial, os.path.join(attempt_dir, "exit-code"))


def _memory_limit(attempt_dir: str) -> int | None:
    try:
        with open(os.path.join(attempt_dir, MEMORY_LIMIT_FILE)) as file:
            return int(file.read())
    except FileNotFoundError:
        return None


def _session_memory(session: int) -> tuple[int, list[int]]:
    """Return the total RSS in bytes of the session's processes but this one, and their pids."""
    page_size = os.sysconf("SC_PAGE_SIZE")
    total, pids = 0, []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
            # The command name may contain spaces and parentheses; the fields after it don't.
            if int(stat[stat.rindex(")") + 2:].split()[3]) != session:
                continue
            with open(f"/proc/{entry}/statm") as file:
                resident_pages = int(file.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while it was read
        total += resident_pages * page_size
        pids.append(int(entry))
    return total, pids


def _wait_within_memory(child: subprocess.Popen, limit: int, attempt_dir: str) -> int:
    """Wait for the command; kill its session's processes once their RSS exceeds `limit`."""
    session = os.getsid(0)
    while True:
        try:
            return child.wait(timeout=MEMORY_SAMPLE_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        used, pids = _session_memory(session)
        if used <= limit:
            continue
        with open(os.path.join(attempt_dir, OOM_KILLED_FILE), "w") as file:
            file.write(f"{used} bytes resident, limit {limit} bytes\n")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return child.wait()


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    encoded = [None if value is None else value.encode() for value in (source, target, fstype,
                                                                        data)]
    if libc.mount(encoded[0], encoded[1], encoded[2], flags, encoded[3]) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount {source} at {target}: {os.strerror(error)}")


def _bind_fixed_mounts(attempt_dir: str) -> str | None:
    """Bind the fixed mounts in a new mount namespace; return why not, or None when done."""
    try:
        with open(os.path.join(attempt_dir, FIXED_MOUNTS_FILE)) as file:
            mounts = json.load(file)
    except FileNotFoundError:
        return None
    # Only paths inside the tmpfs: a mount point elsewhere would have to be created on the
    # host's file system.
    inside_run = {target: source for target, source in mounts.items()
                  if os.path.realpath(target).startswith("/run/")}
    if not inside_run:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        return f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}"
    try:
        # Private first, so that nothing mounted here shows on the host.
        _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
        _mount("tmpfs", "/run", "tmpfs", 0, "mode=0755")
        for target, source in inside_run.items():
            os.makedirs(os.path.realpath(target), exist_ok=True)
            _mount(source, os.path.realpath(target), None, MS_BIND | MS_REC, None)
    except OSError as error:
        return str(error)
    return None


def main(argv: list[str]) -> int:
    attempt_dir, cwd, separator, *command = argv
    if separator != "--" or not command:
        print("usage: container_shim.py ATTEMPT_DIR CWD -- COMMAND [ARG...]", file=sys.stderr)
        return 2

    # The agent stops a container by signalling its whole process group. The shim outlives
    # the signal so it can record how the command ended, and passes it on to the command:
    # a signal that arrives before or while the command starts would miss it otherwise.
    # exec resets the handler in the child, so the command gets the default action.
    received: list[int] = []
    child: subprocess.Popen | None = None

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        if child is not None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)

    with open(os.path.join(attempt_dir, "log"), "ab", buffering=0) as log:
        problem = _bind_fixed_mounts(attempt_dir)
        if problem is not None:
            log.write(f"test node agent: fixed paths not mounted ({problem}); the command "
                      "runs without them\n".encode())
        try:
            child = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log)
        except OSError as error:
            message = f"failed to start {command[0]!r}: {error}"
            with open(os.path.join(attempt_dir, "start-error"), "w") as file:
                file.write(message)
            log.write(f"{message}\n".encode())
            _record(attempt_dir, START_ERROR_EXIT_CODE)
            return START_ERROR_EXIT_CODE
        for signum in received:
            child.send_signal(signum)
        limit = _memory_limit(attempt_dir)
        if limit is None:
            returncode = child.wait()
        else:
            returncode = _wait_within_memory(child, limit, attempt_dir)

    exit_code = returncode if returncode >= 0 else 128 - returncode
    _record(attempt_dir, exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
