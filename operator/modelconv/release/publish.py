"""Publishing an immutable, versioned release: files first, manifest last, then index and channels.

```
<model>/<version>/<file>...        created only if absent, each checked against its digest
<model>/<version>/manifest.json    created last, only if absent: the commit marker
<model>/index.json                 the version is added (compare-and-swap)
<model>/channels/<channel>.json    each channel is moved to the version
```

A reader trusts a version only when its manifest exists, and a manifest is written only
after every file it lists is stored with the listed digest. So no reader ever sees a
partial release, whatever point a publish stops at.

Publishing again is safe:
- the same files under an existing version succeed without writing anything, and the
  index and channels are brought up to date (a retry after a stop past the manifest);
- other files under an existing version fail with VersionExists;
- a version with files but no manifest is left over from a publish that stopped early.
  A retry with the same bytes keeps the files that match and completes the release.
  When a leftover file contains other bytes, the publish fails with VersionExists and
  overwrites nothing. Another publisher of the same version may be running right now,
  and a create-if-absent store offers no safe way to take a file over from it. The message
  names the file and explains how to clean up.

Failure classes: InvalidSpec (bad model, version or channel name), VersionExists and
IntegrityFailed (permanent), AccessDenied (permanent), StoreUnavailable (transient
unless the bucket or folder is missing).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import INTEGRITY_FAILED, VERSION_EXISTS, ConversionError
from ..store import Digest, ObjectInfo, Store, digest_file, encode_json
from .catalog import move_channel, record_in_index
from .manifest import (
    MANIFEST_FILE,
    StoredManifest,
    build_manifest,
    check_file_name,
    check_manifest_fields,
    check_release_names,
    read_manifest,
    release_folder,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PublishedRelease:
    """A release as it is stored; `created` is False when it had been published before."""

    model: str
    version: str
    location: str
    manifest: dict
    manifest_sha256: str
    created: bool
    channels: tuple[str, ...]

    @property
    def files(self) -> dict[str, dict]:
        """The release's files by name, each with `sha256` and `size`, from the manifest."""
        return self.manifest["files"]


def publish_release(
    store: Store,
    *,
    model: str,
    version: str,
    files: Mapping[str, Path],
    manifest: dict,
    channels: Iterable[str] = (),
) -> PublishedRelease:
    """Publish `files` as version `version` of `model`, then move `channels` to it.

    `files` maps release file names (e.g. model.mlpackage.zip) to local paths. `manifest`
    contains the caller's manifest fields; publish_release adds apiVersion, model, version,
    files and, when absent, createdAt and tools. Raises InvalidSpec for unsafe names and
    VersionExists when the version exists with other bytes (see the module docstring).
    """
    channels = tuple(channels)
    check_release_names(model, version, channels)
    for name, path in files.items():
        check_file_name(name)
        if not Path(path).is_file():
            raise ValueError(f"release file {name}: {path} is not a file")
    check_manifest_fields(manifest, model=model, version=version)
    folder = release_folder(model, version)
    location = store.url_of(folder)

    stored = read_manifest(store, model, version)
    if stored is None:
        # Digests come from the bytes as they are uploaded, so the manifest describes
        # exactly what was stored even if a local file changes meanwhile.
        stored_files = {
            name: _store_file(store, f"{folder}/{name}", Path(path), location)
            for name, path in sorted(files.items())
        }
        _require_unchanged(store, folder, stored_files, location)
        digests = {name: digest for name, (digest, _) in stored_files.items()}
        stored, created = _commit_manifest(store, model, version, digests, manifest, location)
    else:
        digests = {name: digest_file(Path(path)) for name, path in sorted(files.items())}
        _require_same_files(stored, digests, location)
        created = False

    # The version is visible from here on; index and channels only make it easier to find.
    record_in_index(store, model, version, stored.sha256, stored.document["createdAt"])
    for channel in channels:
        move_channel(store, model, channel, version, stored.sha256)
    log.info(
        "%s %s (%d files, manifest sha256 %s)",
        "published" if created else "already published:", location, len(files), stored.sha256,
    )
    return PublishedRelease(
        model, version, location, stored.document, stored.sha256, created, channels
    )


def _store_file(store: Store, key: str, path: Path, location: str) -> tuple[Digest, str]:
    """Create `key` from `path`, or accept an existing object with the same bytes.

    Returns the digest of the file's bytes as uploaded (or as hashed, when the object
    existed already) and the ETag of the stored object.
    """
    existing = store.head(key)
    if existing is None:
        result = store.put_file(key, path, if_absent=True)
        if result.written:
            return result.digest, result.etag
        digest = result.digest
        existing = store.head(key)  # Another publisher created it in between.
    else:
        digest = digest_file(path)
    if existing is None or not _has_digest(store, existing, digest):
        found = f"sha256 {existing.sha256}, " if existing and existing.sha256 else ""
        size = existing.size if existing else "unknown"
        raise ConversionError(
            VERSION_EXISTS,
            f"{store.url_of(key)} exists with other bytes ({found}{size} bytes; this publish has "
            f"sha256 {digest.sha256}, {digest.size} bytes). An earlier publish of this version "
            f"did not finish, or another one is running: {location} has no {MANIFEST_FILE}, so "
            f"it is not published. Objects are never overwritten: publish a new version, or "
            f"delete {location}/ once no other publish of it is running, then retry",
        )
    return digest, existing.etag


def _require_unchanged(
    store: Store, folder: str, stored_files: dict[str, tuple[Digest, str]], location: str
) -> None:
    """Raise VersionExists when an object changed after this publish stored or checked it.

    S3 and the folder store never replace an object created if absent, so this finds
    nothing there. It catches S3-compatible servers whose conditional writes are not
    atomic, where two concurrent publishers can both believe they created a file.
    """
    for name, (_, etag) in stored_files.items():
        current = store.head(f"{folder}/{name}")
        if current is None or current.etag != etag:
            raise ConversionError(
                VERSION_EXISTS,
                f"{store.url_of(f'{folder}/{name}')} was replaced while this publish ran: "
                f"another publish of {location} is running; publish a new version",
            )


def _has_digest(store: Store, existing: ObjectInfo, digest: Digest) -> bool:
    """Return whether the stored object has the digest, downloading it if needed."""
    if existing.size != digest.size:
        return False
    if existing.sha256 is not None:
        return existing.sha256 == digest.sha256
    # Stored without a digest in its metadata (S3 multipart uploads get none): hash it.
    with tempfile.TemporaryDirectory(prefix="modelconv-check-") as folder:
        return store.get_file(existing.key, Path(folder, "object")) == digest


def _commit_manifest(
    store: Store,
    model: str,
    version: str,
    digests: dict[str, Digest],
    fields: dict,
    location: str,
) -> tuple[StoredManifest, bool]:
    """Write the manifest unless a concurrent publisher did; return it and whether it is ours."""
    document = build_manifest(model=model, version=version, files=digests, fields=fields)
    data = encode_json(document)
    result = store.put_bytes(f"{release_folder(model, version)}/{MANIFEST_FILE}", data)
    stored = read_manifest(store, model, version)
    # Read back even after a successful create: on a server whose conditional writes are
    # not atomic, a concurrent publisher's manifest may have replaced this one.
    if result.written and stored is not None and stored.sha256 == result.digest.sha256:
        return stored, True
    if stored is None:
        raise ConversionError(
            INTEGRITY_FAILED,
            f"{location}/{MANIFEST_FILE} existed a moment ago and is gone: something deletes "
            "manifests, which must never happen to a published release",
        )
    _require_same_files(stored, digests, location)
    return stored, False


def _require_same_files(stored: StoredManifest, digests: dict[str, Digest], location: str) -> None:
    """Raise VersionExists unless the published manifest lists exactly these files."""
    published = {
        name: Digest(entry["size"], entry["sha256"])
        for name, entry in stored.document["files"].items()
    }
    if published == digests:
        return
    differences = []
    for name in sorted(set(published) | set(digests)):
        if name not in digests:
            differences.append(f"{name} is missing from this publish")
        elif name not in published:
            differences.append(f"{name} is not in the published release")
        elif published[name] != digests[name]:
            differences.append(
                f"{name} differs (published sha256 {published[name].sha256}, "
                f"this publish {digests[name].sha256})"
            )
    raise ConversionError(
        VERSION_EXISTS,
        f"{location} is already published with other files: {'; '.join(differences)}. "
        "Published versions are immutable: publish under a new version",
    )
