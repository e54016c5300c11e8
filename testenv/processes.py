"""Child processes of the test environment and their cleanup.

Every server the environment starts (etcd, kube-apiserver, kube-controller-manager, the S3
server, the node agent) runs in its own process group with its output in a log file. Each
one is registered here, and so is each temporary folder, so that they are stopped and removed
on normal exit (atexit), on SIGTERM and SIGHUP, and when the owner calls `stop()`.

Where util-linux's `setpriv` is present, children also get a parent-death signal (SIGKILL),
so they die with the process that started them even when that process is killed with
SIGKILL and no Python code runs. The signal is tied to the thread that started the child:
start servers from a thread that lives as long as they should.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_SETPRIV = shutil.which("setpriv")
_cleanups: list[Callable[[], None]] = []
_cleanups_lock = threading.Lock()
_atexit_registered = False
_signals_installed = False


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagedProcess:
    """One child process in its own process group, with stdout and stderr in `log_path`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        command = self.argv
        if _SETPRIV:
            command = [_SETPRIV, "--pdeathsig", "SIGKILL", "--", *self.argv]
        with open(log_path, "ab") as log_file:
            self.popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        self.pid = self.popen.pid
        register_cleanup(self.stop)
        log.debug("started %s (pid %d): %s", name, self.pid, " ".join(self.argv))

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Send SIGTERM to the process group, then SIGKILL after `timeout` seconds."""
        unregister_cleanup(self.stop)
        if self.popen.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it",
                            self.name, self.pid, timeout)
                _signal_group(self.pid, signal.SIGKILL)
                self.popen.wait()
        return self.popen.returncode

    def kill(self) -> None:
        """Kill the process group at once (SIGKILL), as a crash would."""
        unregister_cleanup(self.stop)
        _signal_group(self.pid, signal.SIGKILL)
        self.popen.wait()

    def log_tail(self, lines: int = 30) -> str:
        """Return the last `lines` lines of the process's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(log {self.log_path} unreadable: {error})"
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        # The group is gone already; a PermissionError means the id was reused by a group
        # that is not ours, which must not be touched either.
        pass


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.1,
    process: ManagedProcess | None = None,
) -> None:
    """Poll `condition` until it is true; raise TimeoutError naming `what` after `timeout` s.

    When `process` exits while waiting, raise RuntimeError at once with the end of its log.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if process is not None and not process.running():
            raise RuntimeError(
                f"{process.name} exited with code {process.popen.returncode} while waiting "
                f"for {what}; end of {process.log_path}:\n{process.log_tail()}"
            )
        if time.monotonic() > deadline:
            tail = f"; end of {process.log_path}:\n{process.log_tail()}" if process else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        time.sleep(interval)


def register_cleanup(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` at interpreter exit or on SIGTERM/SIGHUP, newest first.

    The signal handlers are installed by the first registration made in the main thread,
    since Python accepts signal handlers from the main thread only.
    """
    global _atexit_registered
    with _cleanups_lock:
        _cleanups.append(cleanup)
        if not _atexit_registered:
            _atexit_registered = True
            atexit.register(run_cleanups)
    _install_signal_handlers()


def unregister_cleanup(cleanup: Callable[[], None]) -> None:
    with _cleanups_lock:
        if cleanup in _cleanups:
            _cleanups.remove(cleanup)


def remove_dir_at_exit(path: Path) -> Callable[[], None]:
    """Register removal of `path`; return the remover, which also unregisters itself."""

    def remove() -> None:
        unregister_cleanup(remove)
        shutil.rmtree(path, ignore_errors=True)

    register_cleanup(remove)
    return remove


def run_cleanups() -> None:
    """Run every registered cleanup; a failing one is logged and the rest still run."""
    while True:
        with _cleanups_lock:
            if not _cleanups:
                return
            cleanup = _cleanups.pop()
        try:
            cleanup()
        except Exception:  # noqa: BLE001 - cleanup must go on for the other processes
            log.exception("cleanup %r failed", cleanup)


def _install_signal_handlers() -> None:
    """Clean up on SIGTERM and SIGHUP, then die of the same signal.

    SIGINT is left alone: Python turns it into KeyboardInterrupt, which unwinds through
    `finally` blocks and pytest's fixture teardown, and atexit runs after that.
    """
    global _signals_installed
    if _signals_installed or threading.current_thread() is not threading.main_thread():
        return
    _signals_installed = True
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)
        if previous == signal.SIG_IGN:
            continue  # Ignored on purpose (nohup, for one); the process must not die of it.
        signal.signal(sig, _make_handler(sig, previous))


def _make_handler(sig: int, previous: object) -> Callable[[int, object], None]:
    def handle(signum: int, frame: object) -> None:
        run_cleanups()
        if callable(previous):
            previous(signum, frame)
            return
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)

    return handle
