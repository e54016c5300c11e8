"""Verification of a published release: every byte of every file against its manifest.

`verify_release` downloads each file the manifest lists and compares its size and SHA-256.
It also checks that the manifest names the release it is stored under and that its digest
matches the one in the model's index. Each file is read from the key its manifest entry
names (its name, or a content-addressed key under objects/). Objects in the release folder
that the manifest does not list are reported but do not fail verification: readers never
use them.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import INTEGRITY_FAILED, ConversionError
from ..store import ObjectNotFound, Store
from .catalog import RELEASE_NOT_FOUND, index_key, read_json
from .manifest import (
    MANIFEST_FILE, check_release_names, file_key, read_manifest, release_folder,
)


@dataclasses.dataclass(frozen=True)
class FileCheck:
    """The verification of one release file; `problem` is empty when it matched."""

    name: str
    expected_size: int
    expected_sha256: str
    size: Optional[int]
    sha256: Optional[str]
    problem: str = ""


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """The outcome of `verify_release`: per-file checks and release-level problems."""

    model: str
    version: str
    location: str
    manifest_sha256: str
    files: tuple[FileCheck, ...]
    problems: tuple[str, ...]
    unlisted: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems and all(not check.problem for check in self.files)

    def failures(self) -> list[str]:
        """Return one line per problem, file problems named by file."""
        return list(self.problems) + [f"{c.name}: {c.problem}" for c in self.files if c.problem]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "version": self.version,
            "location": self.location,
            "manifestSha256": self.manifest_sha256,
            "ok": self.ok,
            "files": [
                {
                    "name": check.name,
                    "expectedSize": check.expected_size,
                    "expectedSha256": check.expected_sha256,
                    "size": check.size,
                    "sha256": check.sha256,
                    "problem": check.problem,
                }
                for check in self.files
            ],
            "problems": list(self.problems),
            "unlisted": list(self.unlisted),
        }


class ReleaseIntegrityError(ConversionError):
    """A release failed verification; `report` has every check."""

    def __init__(self, report: VerifyReport):
        failures = report.failures()
        super().__init__(
            INTEGRITY_FAILED,
            f"{report.location} failed verification: {failures[0]}"
            + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""),
        )
        self.report = report


def verify_release(store: Store, model: str, version: str) -> VerifyReport:
    """Download and check every file of a release; return the report when all match.

    Raises `ConversionError(ReleaseNotFound)` when the version has no manifest, and
    `ReleaseIntegrityError` (reason IntegrityFailed, naming the first bad file) when a
    file is missing or differs, or the manifest does not match the index.
    """
    check_release_names(model, version)
    folder = release_folder(model, version)
    stored = read_manifest(store, model, version)
    if stored is None:
        raise ConversionError(
            RELEASE_NOT_FOUND,
            f"{store.url_of(folder)} has no {MANIFEST_FILE}: no such release, or its publish "
            "has not finished",
        )
    listed = stored.document["files"]
    with tempfile.TemporaryDirectory(prefix="modelconv-verify-") as scratch:
        checks = tuple(
            _check_file(store, file_key(folder, name, listed[name]), name, listed[name],
                        Path(scratch))
            for name in sorted(listed)
        )
    # `list` leaves out the temporary files of stopped writes, so they are added here.
    found = store.list(f"{folder}/") + store.unfinished_writes(folder)
    stored_keys = {key.removeprefix(f"{folder}/") for key in found}
    # A file stored under a content-addressed key has a copy under its plain name as well.
    listed_keys = {entry.get("key", name) for name, entry in listed.items()} | set(listed)
    report = VerifyReport(
        model=model,
        version=version,
        location=store.url_of(folder),
        manifest_sha256=stored.sha256,
        files=checks,
        problems=tuple(_manifest_problems(store, model, version, stored.document, stored.sha256)),
        unlisted=tuple(sorted(stored_keys - listed_keys - {MANIFEST_FILE})),
    )
    if not report.ok:
        raise ReleaseIntegrityError(report)
    return report


def _check_file(store: Store, key: str, name: str, expected: dict, scratch: Path) -> FileCheck:
    download = scratch / "download"
    try:
        digest = store.get_file(key, download)
    except ObjectNotFound:
        return FileCheck(name, expected["size"], expected["sha256"], None, None, "missing")
    finally:
        download.unlink(missing_ok=True)
    problem = ""
    if digest.size != expected["size"]:
        problem = f"size {digest.size} differs from the manifest ({expected['size']})"
    elif digest.sha256 != expected["sha256"]:
        problem = f"sha256 {digest.sha256} differs from the manifest ({expected['sha256']})"
    return FileCheck(
        name, expected["size"], expected["sha256"], digest.size, digest.sha256, problem
    )


def _manifest_problems(
    store: Store, model: str, version: str, document: dict, manifest_sha256: str
) -> list[str]:
    problems = []
    if (document.get("model"), document.get("version")) != (model, version):
        problems.append(
            f"{MANIFEST_FILE} describes {document.get('model')} {document.get('version')}, "
            f"not {model} {version}"
        )
    index = read_json(store, index_key(model)) or {"versions": []}
    for entry in index.get("versions", []):
        if entry.get("version") == version and entry.get("manifestSha256") != manifest_sha256:
            problems.append(
                f"{MANIFEST_FILE} has sha256 {manifest_sha256}, but index.json records "
                f"{entry.get('manifestSha256')}: the manifest was changed after publishing"
            )
    return problems
