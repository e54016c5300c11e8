"""Ctrl-C outside a running pipeline ends `modelconv` with exit code 130 and one line."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from cli_runs import MODELCONV


def _open_writer(fifo, attempts: int = 300) -> int:
    """Open the FIFO's write end once `modelconv` has opened its read end; return the descriptor."""
    for _ in range(attempts):
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            time.sleep(0.1)
    raise AssertionError(f"modelconv did not open {fifo} within {attempts} attempts")


def test_interrupt_while_reading_the_file(tmp_path):
    # The conversion file is a FIFO, so `modelconv run` waits inside the file read until
    # the test sends SIGINT, as a user's Ctrl-C would.
    fifo = tmp_path / "conversion.yaml"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [MODELCONV, "run", str(fifo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    writer = _open_writer(fifo)
    try:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        os.close(writer)

    assert process.returncode == 130
    assert "modelconv: interrupted" in stderr
    assert "Traceback" not in stderr
    assert stdout == ""
