"""Fixtures of the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_runs import tiny_document, write_document


@pytest.fixture
def conversion_file(tmp_path: Path):
    """Write a tiny conversion with the given spec changes; return the file's path."""

    def write(name: str = "conversion.yaml", document: dict | None = None, **spec_changes):
        return write_document(tmp_path / name, document or tiny_document(**spec_changes))

    return write
