"""Ctrl-C (exit code 130) and SIGTERM (143) end `modelconv` with one line, imports to stages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from cli_runs import MODELCONV

from modelconv import cli


def _open_writer(fifo, attempts: int = 300) -> int:
    """Open the FIFO's write end once `modelconv` has opened its read end; return the descriptor."""
    for _ in range(attempts):
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            time.sleep(0.1)
    raise AssertionError(f"modelconv did not open {fifo} within {attempts} attempts")


def test_interrupt_during_command_imports(monkeypatch, capsys):
    def interrupted_import():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted_import)
    assert cli.main(["--help"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "modelconv: interrupted\n"
    assert captured.out == ""


def test_entry_point_module_imports_nothing_slow():
    # Python has loaded os and sys before the console script runs. Anything the module imports
    # at the top runs outside main's KeyboardInterrupt handler.
    program = (
        "import sys; loaded = set(sys.modules); import modelconv.cli;"
        " print(sorted(set(sys.modules) - loaded))"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            check=True, timeout=120)
    assert result.stdout.strip() == "['__future__', 'modelconv', 'modelconv.cli']"


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


# A factory that blocks while it reads a FIFO, so that a signal lands in the export stage
# after the work directory exists.
BLOCKING_FACTORY = '''
import json
import os

import torch


def linear():
    with open(os.environ["BLOCKING_FACTORY_FIFO"]) as fifo:
        fifo.read()
    return torch.nn.Linear(8, 4)
'''


def _run_until_export(tmp_path, conversion_file):
    """Start `modelconv run` and return (process, FIFO writer) once the export stage waits."""
    (tmp_path / "blocking_factory.py").write_text(BLOCKING_FACTORY)
    fifo = tmp_path / "factory.fifo"
    os.mkfifo(fifo)
    conversion = conversion_file(source={"factory": {"entrypoint": "blocking_factory:linear"}})
    environment = dict(os.environ, PYTHONPATH=str(tmp_path), BLOCKING_FACTORY_FIFO=str(fifo))
    process = subprocess.Popen(
        [MODELCONV, "run", str(conversion), "--store", str(tmp_path / "releases"),
         "--workdir", str(tmp_path / "work")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
    )
    # Importing torch comes first, and takes long on a busy machine.
    return process, _open_writer(fifo, attempts=3000)


def test_interrupt_during_a_stage_names_the_rerun(tmp_path, conversion_file):
    process, writer = _run_until_export(tmp_path, conversion_file)
    try:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        os.close(writer)

    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    (message,) = [line for line in stderr.splitlines() if line.startswith("modelconv:")]
    assert message.startswith("modelconv: interrupted; nothing was published")
    assert f"the files made so far are in {tmp_path / 'work'}" in message
    assert message.endswith(
        "Run the same `modelconv run` command again to convert and publish version 1.0.0"
    )
    assert (tmp_path / "work" / "report.json").is_file()


def test_sigterm_during_a_stage_stops_like_ctrl_c(tmp_path, conversion_file):
    process, writer = _run_until_export(tmp_path, conversion_file)
    try:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        os.close(writer)

    assert process.returncode == 143, stdout + stderr
    assert "Traceback" not in stderr
    (message,) = [line for line in stderr.splitlines() if line.startswith("modelconv:")]
    assert message.startswith("modelconv: terminated (SIGTERM); nothing was published")
    assert message.endswith("Run the same `modelconv run` command again to convert and publish"
                            " version 1.0.0")
    report = json.loads((tmp_path / "work" / "report.json").read_text())
    assert report["reason"] == "Interrupted"
    assert report["message"] == "stopped by SIGTERM before any stage finished"
