"""Run one container's command and record its exit code in a file.

Usage: python container_shim.py ATTEMPT_DIR CWD -- COMMAND [ARG...]

The node agent starts this script in a new session (so its process group id is its pid)
with the container's environment. It writes the command's output to ATTEMPT_DIR/log and,
when the command ends, its exit code to ATTEMPT_DIR/exit-code: 128+N when signal N killed
it, as container runtimes report it. Because the result lands in a file, a restarted node
agent can still learn how a container it did not start ended.

The script imports nothing from the testenv package, so it runs as a plain file.
"""

import os
import signal
import subprocess
import sys

# Exit code of a container whose command could not be started, as containerd reports it.
START_ERROR_EXIT_CODE = 128


def _record(attempt_dir: str, exit_code: int) -> None:
    partial = os.path.join(attempt_dir, "exit-code.partial")
    with open(partial, "w") as file:
        file.write(f"{exit_code}\n")
    os.replace(partial, os.path.join(attempt_dir, "exit-code"))


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
        returncode = child.wait()

    exit_code = returncode if returncode >= 0 else 128 - returncode
    _record(attempt_dir, exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
