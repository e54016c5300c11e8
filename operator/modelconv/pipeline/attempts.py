"""Attempts of the export and conversion ladders: one-line error summaries and operator names.

Exporters and converters report a missing or broken operator in several ways; the patterns
below pick the operator's name out of each, so a failure can say which op to look at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from pathlib import PurePath
from typing import Iterator, Optional

from ..errors import plain_message

# Patterns that name the failing operator, from the tools' own messages (torch 2.13,
# coremltools 9.0, onnx2torch 1.5).
OPERATOR_PATTERNS = (
    re.compile(r"convert function for op '([\w.:]+)' not implemented"),
    re.compile(r"Unsupported fx node [^,]*, kind ([\w.:]+)"),
    re.compile(r"Exporting the operator '?([\w.:]+)'? to ONNX"),
    re.compile(r"operation_type='(\w+)'"),
    re.compile(r"\b(aten[.:]{1,2}\w+(?:\.\w+)?)"),
)
# coremltools logs the op whose translation raised before re-raising the error.
CONVERTING_OP = re.compile(r"converting '([\w.:]+)' op")

# torch.onnx's dynamo exporter opens every failure with the same advice to PyTorch developers
# ("Failed to export the model with torch.export. This is step 1/3 of exporting the model to
# ONNX. Next steps: ...") and chains the error that stopped it as __cause__ (torch 2.13,
# torch/onnx/_internal/exporter/_core.py).
TORCH_ONNX_STEP = re.compile(r"^(Failed to .*?)\. This is step \d/3 of exporting the model")
# The "## Exception summary" that the same messages end with: the innermost error comes first.
TORCH_ONNX_SUMMARY = re.compile(r"## Exception summary\s+<class '(?:[\w.]+\.)?(\w+)'>: ([^\n]+)")
# torch.export's pointer to the line of the model that raised.
RAISING_CALL = re.compile(
    r'The following call raised this error:\s*\n'
    r'\s*File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]+)'
)
# Maximum length of the error text kept per attempt, in characters.
MAX_ERROR_TEXT = 300


@dataclasses.dataclass
class Attempt:
    """One rung of a ladder: which path ran, whether it worked, and why not."""

    path: str
    succeeded: bool
    error: str = ""
    operator: Optional[str] = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def summarize_error(error: BaseException) -> str:
    """Return one line with the reason an attempt failed, without a stack trace.

    A torch.onnx failure whose first line is only torch's step advice gets the error that
    caused it instead.
    """
    text = _first_informative_line(error)
    step = TORCH_ONNX_STEP.match(text)
    if step is not None:
        text = f"{step.group(1)}: {_torch_onnx_cause(error)}"
    return f"{type(error).__name__}: {text[:MAX_ERROR_TEXT]}" if text else type(error).__name__


def _first_informative_line(error: BaseException) -> str:
    lines = [line.strip() for line in plain_message(str(error)).splitlines() if line.strip()]
    # Exporters put the cause first and advice after it; keep the first informative line.
    informative = [line for line in lines if not line.startswith(("For more information", "The error above"))]
    return informative[0] if informative else ""


def _torch_onnx_cause(error: BaseException) -> str:
    """Describe the innermost chained error of a torch.onnx failure, and the model line that
    raised it when torch names one."""
    message = plain_message(str(error))
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    if root is not error:
        cause = f"{type(root).__name__}: {_first_informative_line(root)}"
    else:
        # Without a chained error, the summary that torch appends is the only record.
        summary = TORCH_ONNX_SUMMARY.search(message)
        cause = f"{summary.group(1)}: {summary.group(2)}" if summary else "torch gave no cause"
    call = RAISING_CALL.search(message)
    if call is not None:
        cause += f" (at {PurePath(call.group(1)).name}:{call.group(2)}: {call.group(3).strip()})"
    return cause


def operator_name(error: BaseException, logged: list[str] = ()) -> Optional[str]:
    """Return the operator an error names, or that the converter logged while failing."""
    for message in logged:
        match = CONVERTING_OP.search(message)
        if match:
            return match.group(1)
    text = str(error)
    for pattern in OPERATOR_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def converter_errors_logged() -> Iterator[list[str]]:
    """Collect the error lines coremltools logs while a conversion runs."""
    collector = _Collector()
    logger = logging.getLogger("coremltools")
    logger.addHandler(collector)
    try:
        yield collector.messages
    finally:
        logger.removeHandler(collector)


def describe_attempts(attempts: list[Attempt]) -> str:
    """Return the failed attempts as `path: error` clauses for a failure message."""
    return "; ".join(f"{item.path}: {item.error}" for item in attempts if not item.succeeded)
