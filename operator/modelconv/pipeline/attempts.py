"""Attempts of the export and conversion ladders: one-line error summaries and operator names.

Exporters and converters report a missing or broken operator in several ways; the patterns
below pick the operator's name out of each, so a failure can say which op to look at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from typing import Iterator, Optional

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
    """Return one line that says why an attempt failed, without a stack trace."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # Exporters put the cause first and advice after it; keep the first informative line.
    informative = [line for line in lines if not line.startswith(("For more information", "The error above"))]
    text = informative[0] if informative else ""
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


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
