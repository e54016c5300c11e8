"""Classified failures shared by the pipeline, the store, the CLI and the controller.

Every failure that a user can act on is a `ConversionError` with a CamelCase `reason` (the
value that ends up in a status condition) and a message that states what to fix. Permanent
failures stop a run; transient ones (`permanent=False`) may be retried by whoever runs the
stage.
"""

from __future__ import annotations

import re

from .redaction import redact_urls

# Reasons, as they appear in status conditions, reports and `--output json`.
INVALID_SPEC = "InvalidSpec"
INVALID_ARGUMENT = "InvalidArgument"
SOURCE_NOT_FOUND = "SourceNotFound"
INVALID_MODEL = "InvalidModel"
EXPORT_FAILED = "ExportFailed"
CONVERSION_FAILED = "ConversionFailed"
UNSUPPORTED_OPERATOR = "UnsupportedOperator"
TOLERANCE_EXCEEDED = "ToleranceExceeded"
STORE_UNAVAILABLE = "StoreUnavailable"
ACCESS_DENIED = "AccessDenied"
VERSION_EXISTS = "VersionExists"
INTEGRITY_FAILED = "IntegrityFailed"
RELEASE_NOT_FOUND = "ReleaseNotFound"

# Exit codes of `modelconv run` and `modelconv stage`.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

# Reasons that mean the user's input must change; the CLI maps them to EXIT_BAD_INPUT.
BAD_INPUT_REASONS = frozenset({INVALID_SPEC, INVALID_ARGUMENT, SOURCE_NOT_FOUND, INVALID_MODEL})

# ANSI escape sequences: CSI sequences such as the colors `ESC[96m` and `ESC[0m` that torch
# puts in its messages, and two-character escapes.
ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences, which other libraries add for terminals, from `text`."""
    return ANSI_ESCAPE.sub("", text)


def plain_message(text: str) -> str:
    """Return a message from another library as plain text without URL credentials.

    Messages reach reports, JUnit files, `--output json` and status conditions, where escape
    sequences show up as stray characters.
    """
    return redact_urls(strip_ansi(text))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the signal lands so that `modelconv run` stops as on Ctrl-C.

    A subclass of KeyboardInterrupt, so every handler of Ctrl-C also cleans up after it.
    """


class ConversionError(Exception):
    """A classified failure with a CamelCase `reason` and a `message` stating what to do."""

    def __init__(
        self, reason: str, message: str, *, permanent: bool = True, details: dict | None = None
    ):
        # Messages reach logs, reports and status conditions and often quote another library's
        # exception, so they must contain no URL credentials and no terminal escape sequences.
        message = plain_message(message)
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent
        # Structured context for reports (e.g. the conversion attempts); never credentials.
        self.details = details or {}
        # Figures the failing stage measured before it failed, for the report and JUnit.
        self.metrics: dict = {}

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"

    @property
    def exit_code(self) -> int:
        return EXIT_BAD_INPUT if self.reason in BAD_INPUT_REASONS else EXIT_FAILED


class InvalidSpec(ConversionError):
    """The ModelConversion document is invalid; `path` names the offending field."""

    def __init__(self, path: str, message: str):
        super().__init__(INVALID_SPEC, f"{path}: {message}" if path else message)
        self.path = path
