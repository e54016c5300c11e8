"""Failures of the Core ML program executor.

All of them derive from `MilError`, so a caller can catch the executor's failures in one place
and tell them apart from bugs. Each message names the program element (input, op, var) and tells
the caller what to change.
"""

from __future__ import annotations


class MilError(Exception):
    """A failure to load or execute a Core ML program."""


class ProgramLoadError(MilError):
    """The file is not a Core ML program package that the executor can read."""


class InvalidInput(MilError, ValueError):
    """An input given to `execute` is missing, unknown, or has the wrong shape."""


class UnsupportedOp(MilError):
    """The program uses an op type (or an op option) that the executor does not implement.

    `op_type` is the MIL op type, `op_name` the name of the op in the program.
    """

    def __init__(self, op_type: str, op_name: str, detail: str = ""):
        self.op_type = op_type
        self.op_name = op_name
        self.detail = detail
        what = f"MIL op type {op_type!r} (op {op_name!r})"
        if detail:
            message = f"{what}: {detail} is not supported by the Linux executor"
        else:
            message = f"{what} is not supported by the Linux executor"
        super().__init__(message)


class ExecutionError(MilError):
    """An op failed while running, or produced a result that contradicts the program.

    `op_name` and `op_type` name the op; the message carries the cause.
    """

    def __init__(self, op_type: str, op_name: str, message: str):
        self.op_type = op_type
        self.op_name = op_name
        super().__init__(f"op {op_name!r} ({op_type}): {message}")
