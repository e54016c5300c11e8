"""The release manifest (`manifest.json`) and the names that may appear in a release path.

A manifest records every file of a release with its SHA-256 and size, plus what the caller
knows about how the release was made (source digest, spec digest, tool versions, inputs and
outputs, validation and device metrics). Its JSON Schema is `docs/manifest.schema.json`.

Model names, versions and channels become key segments in the store, so they are checked
against the same rules as the ModelConversion spec before anything is read or written.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import importlib.metadata
import re
from typing import Any, Iterable, Optional

from pydantic import ValidationError

from ..errors import INTEGRITY_FAILED, ConversionError, InvalidSpec
from ..spec import PublishSettings, describe_error
from ..store import Digest, ObjectNotFound, Store, check_key, decode_json, redact_url

MANIFEST_FILE = "manifest.json"
MANIFEST_API_VERSION = "modelconv.io/manifest/v1"
# Release file names: one key segment, never the manifest itself.
FILE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Fields that publish_release sets itself; a caller's manifest may not change them.
RESERVED_FIELDS = ("apiVersion", "model", "version", "files")
# Distributions whose versions decide what a conversion produces.
TOOL_DISTRIBUTIONS = (
    "modelconv", "torch", "coremltools", "onnx", "onnxruntime", "onnxscript", "onnx2torch",
)
# Folder, inside a release folder, of files stored under content-addressed keys.
OBJECTS_FOLDER = "objects"
URL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclasses.dataclass(frozen=True)
class StoredManifest:
    """A manifest as read from the store: the document and the SHA-256 of its bytes."""

    document: dict
    sha256: str


def release_folder(model: str, version: str) -> str:
    """Return the store key of a release folder, `<model>/<version>`."""
    return f"{model}/{version}"


def content_addressed_key(name: str, sha256: str) -> str:
    """Return the key, relative to the release folder, of a file stored under its digest."""
    return f"{OBJECTS_FOLDER}/sha256-{sha256}/{name}"


def file_key(folder: str, name: str, entry: dict) -> str:
    """Return the store key of a release file from its manifest entry.

    An entry without `key` is stored under its name. An entry with `key`, relative to the
    folder, is stored there: publish sets it when an unfinished publish had left other
    bytes under the name.
    """
    return f"{folder}/{entry.get('key', name)}"


def check_release_names(
    model: str, version: Optional[str] = None, channels: Iterable[str] = ()
) -> None:
    """Raise `InvalidSpec` unless model, version and channels follow the spec's rules.

    The rules are those of `PublishSettings`: lowercase model names, versions without
    slashes or `..`, bounded lengths, so no name can address a key outside its folder.
    Without `version`, only the model and channels are checked.
    """
    try:
        # "0" is a valid placeholder version for checks of the model name alone.
        PublishSettings(
            model=model, version="0" if version is None else version, channels=list(channels)
        )
    except ValidationError as error:
        detail = error.errors(include_url=False)[0]
        field = ".".join(str(part) for part in detail["loc"])
        message = describe_error(detail)
        if detail["type"] != "string_pattern_mismatch":
            message = f"{str(detail.get('input', ''))[:80]!r} is invalid: {message}"
        raise InvalidSpec(f"publish.{field}", message) from None


def check_file_name(name: str) -> None:
    """Raise ValueError unless `name` can be a release file (one safe segment, not the manifest)."""
    if not FILE_NAME_PATTERN.match(name) or ".." in name or name == MANIFEST_FILE:
        raise ValueError(
            f"invalid release file name {name!r}: use letters, digits, '.', '_' and '-', "
            f"at most 128 characters, no '..', and not {MANIFEST_FILE}"
        )


def check_manifest_fields(fields: dict, *, model: str, version: str) -> None:
    """Raise ValueError when `fields` sets a field that publish_release owns to another value."""
    fixed = {"apiVersion": MANIFEST_API_VERSION, "model": model, "version": version}
    for name in RESERVED_FIELDS:
        if name in fields and (name not in fixed or fields[name] != fixed[name]):
            raise ValueError(f"manifest field {name!r} is set by publish_release; remove it")


def utc_timestamp(moment: Optional[datetime.datetime] = None) -> str:
    """Return an RFC 3339 UTC timestamp with second precision, e.g. 2026-01-31T12:00:00Z."""
    moment = moment or datetime.datetime.now(datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def tool_versions() -> dict[str, str]:
    """Return the installed versions of the tools that shape a conversion, by name."""
    versions = {}
    for name in TOOL_DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def build_manifest(
    *,
    model: str,
    version: str,
    files: dict[str, Digest],
    fields: dict,
    keys: Optional[dict[str, str]] = None,
) -> dict:
    """Return the manifest document for a release.

    `keys` maps a file name to its key relative to the release folder, where that is not
    the name itself; such entries get a `key` field. `fields` contains what the caller
    knows (source, specSha256, tools, inputs, outputs, validation, device); createdAt
    defaults to now and tools to `tool_versions()`. URLs
    anywhere in `fields` lose user info and credential query parameters.
    Raises ValueError as `check_manifest_fields` does.
    """
    check_manifest_fields(fields, model=model, version=version)
    document = redact_urls(copy.deepcopy(fields))
    document.setdefault("createdAt", utc_timestamp())
    document.setdefault("tools", tool_versions())
    document.update(
        apiVersion=MANIFEST_API_VERSION,
        model=model,
        version=version,
        files={
            name: _file_entry(digest, (keys or {}).get(name, name), name)
            for name, digest in sorted(files.items())
        },
    )
    return document


def _file_entry(digest: Digest, key: str, name: str) -> dict:
    entry = {"sha256": digest.sha256, "size": digest.size}
    if key != name:
        entry["key"] = key
    return entry


def redact_urls(value: Any) -> Any:
    """Return `value` with every URL string inside it passed through `redact_url`."""
    if isinstance(value, str):
        return redact_url(value) if URL_PATTERN.match(value) else value
    if isinstance(value, dict):
        return {key: redact_urls(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_urls(item) for item in value]
    return value


def read_manifest(store: Store, model: str, version: str) -> Optional[StoredManifest]:
    """Return the release's manifest, or None when the version has none (not published)."""
    key = f"{release_folder(model, version)}/{MANIFEST_FILE}"
    try:
        data = store.get_bytes(key)
    except ObjectNotFound:
        return None
    document = decode_json(store.url_of(key), data)
    files = document.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
        and isinstance(entry.get("size"), int) and _valid_file_key(entry.get("key"))
        for entry in files.values()
    ):
        raise ConversionError(
            INTEGRITY_FAILED,
            f"{store.url_of(key)} has no valid 'files' map of name to sha256, size and an"
            f" optional key under {OBJECTS_FOLDER}/",
        )
    return StoredManifest(document, hashlib.sha256(data).hexdigest())


def _valid_file_key(key: Any) -> bool:
    """Return whether a manifest's `key` field is absent or a safe key under objects/."""
    if key is None:
        return True
    if not isinstance(key, str) or not key.startswith(f"{OBJECTS_FOLDER}/"):
        return False
    try:
        check_key(key)
    except ValueError:
        return False
    return True
