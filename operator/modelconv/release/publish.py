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
- a version with files but no manifest is left over from a publish that stopped early, and
  any publisher may take it over. A leftover file with the same bytes is kept. A leftover
  file with other bytes is never overwritten before the manifest exists: this publish
  stores its file under a content-addressed key instead,
  `<model>/<version>/objects/sha256-<hex>/<file>`, and the manifest records that key.

Why this is safe with concurrent publishers of one version: objects are created only if
absent and never replaced before a manifest lists them, and a content-addressed key only
ever receives bytes with its digest (`put_file` checks them). So every key a manifest lists
contains exactly the bytes the manifest names, whichever publisher created it. The
manifest itself is created if absent, so exactly one publisher wins. The others fail with
VersionExists. A leftover at a plain file name is replaced only after the winner's
manifest exists, with the bytes that manifest lists, so the plain names match the release
once the publish completes. Readers take each file's key from the manifest.

Failure classes: InvalidSpec (bad model, version or channel name), VersionExists and
IntegrityFailed (permanent), AccessDenied (permanent), StoreUnavailable (transient
unless the bucket or folder is missing).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import INTEGRITY_FAILED, STORE_UNAVAILABLE, VERSION_EXISTS, ConversionError
from ..store import Digest, ObjectInfo, Store, digest_file, encode_json
from .catalog import channel_key, index_key, move_channel, read_json, record_in_index
from .manifest import (
    MANIFEST_FILE,
    content_addressed_key,
    StoredManifest,
    build_manifest,
    check_file_name,
    check_manifest_fields,
    check_release_names,
    read_manifest,
    release_folder,
)

log = logging.getLogger(__name__)

# Differing files named in a VersionExists message, so that the condition message stays short.
MAX_DIFFERENCES_SHOWN = 2


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
        """The release's files by name from the manifest: `sha256`, `size` and maybe `key`."""
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
    started = time.time()

    stored = read_manifest(store, model, version)
    if stored is None:
        # Digests come from the bytes as they are uploaded, so the manifest describes
        # exactly what was stored even if a local file changes meanwhile.
        stored_files = [
            _store_file(store, folder, name, Path(path))
            for name, path in sorted(files.items())
        ]
        _require_unchanged(store, folder, stored_files, location)
        stored, created = _commit_manifest(store, model, version, stored_files, manifest, location)
    else:
        digests = {name: digest_file(Path(path)) for name, path in sorted(files.items())}
        _require_same_files(stored, digests, location)
        created = False

    # The version is visible from here on. What follows only makes it easier to find.
    try:
        _restore_plain_names(store, folder, stored.document, files)
        _remove_unfinished_writes(store, folder, started)
        record_in_index(store, model, version, stored.sha256, stored.document["createdAt"])
        for channel in channels:
            move_channel(store, model, channel, version, stored.sha256)
    except (ConversionError, OSError) as error:
        raise unindexed_release_error(error, location, channels, stored.sha256) from None
    log.info(
        "%s %s (%d files, manifest sha256 %s)",
        "published" if created else "already published:", location, len(files), stored.sha256,
    )
    return PublishedRelease(
        model, version, location, stored.document, stored.sha256, created, channels
    )


@dataclasses.dataclass(frozen=True)
class StoredFile:
    """A release file as this publish stored or found it.

    `key` is relative to the release folder: the file name, or a content-addressed key when
    an unfinished publish left other bytes under the name. `etag` is the ETag of the object.
    """

    name: str
    digest: Digest
    key: str
    etag: str


def _store_file(store: Store, folder: str, name: str, path: Path) -> StoredFile:
    """Create `<folder>/<name>` from `path`, or accept an existing object with the same bytes.

    When the name contains other bytes, left by a publish that did not finish (or by a
    concurrent publisher), the file goes to a content-addressed key instead, so nothing
    that another publisher may still list in its manifest is ever replaced.
    """
    key = f"{folder}/{name}"
    existing = store.head(key)
    if existing is None:
        result = store.put_file(key, path, if_absent=True)
        if result.written:
            return StoredFile(name, result.digest, name, result.etag)
        digest = result.digest
        existing = store.head(key)  # Another publisher created it in between.
    else:
        digest = digest_file(path)
    if existing is not None and _has_digest(store, existing, digest):
        return StoredFile(name, digest, name, existing.etag)
    log.info(
        "%s contains other bytes and %s has no %s: storing this publish's %s under its digest",
        store.url_of(key), store.url_of(folder), MANIFEST_FILE, name,
    )
    return _store_by_digest(store, folder, name, path, digest)


def _store_by_digest(
    store: Store, folder: str, name: str, path: Path, digest: Digest
) -> StoredFile:
    """Create `<folder>/objects/sha256-<hex>/<name>`, a key only bytes with that digest fill."""
    relative = content_addressed_key(name, digest.sha256)
    key = f"{folder}/{relative}"
    # With `sha256`, put_file creates nothing unless the bytes it reads have this digest.
    result = store.put_file(key, path, sha256=digest.sha256, if_absent=True)
    if result.written:
        return StoredFile(name, digest, relative, result.etag)
    existing = store.head(key)
    if existing is None or not _has_digest(store, existing, digest):
        raise ConversionError(
            INTEGRITY_FAILED,
            f"{store.url_of(key)} exists with bytes whose sha256 is not the one its key names: "
            "something other than modelconv wrote it. Delete that object and retry",
        )
    return StoredFile(name, digest, relative, existing.etag)


def _require_unchanged(
    store: Store, folder: str, stored_files: list[StoredFile], location: str
) -> None:
    """Raise VersionExists when an object changed after this publish stored or checked it.

    S3 and the folder store never replace an object created if absent, so this finds
    nothing there. It catches S3-compatible servers whose conditional writes are not
    atomic, where two concurrent publishers can both believe they created a file.
    """
    for stored in stored_files:
        key = f"{folder}/{stored.key}"
        current = store.head(key)
        if current is None or current.etag != stored.etag:
            raise ConversionError(
                VERSION_EXISTS,
                f"{store.url_of(key)} was replaced while this publish ran: "
                f"another publish of {location} is running; publish a new version",
            )


def _restore_plain_names(
    store: Store, folder: str, document: dict, files: Mapping[str, Path]
) -> None:
    """Give each file stored under a content-addressed key the same bytes at its plain name.

    Runs only after the manifest exists, so the leftover being replaced belongs to a publish
    that can no longer commit. Only the publisher whose files the manifest lists gets here
    (others fail with VersionExists first), and `sha256` makes the store reject other bytes.
    """
    for name, entry in sorted(document["files"].items()):
        if entry.get("key", name) == name:
            continue
        plain = store.head(f"{folder}/{name}")
        if plain is not None and _has_digest(store, plain, Digest(entry["size"], entry["sha256"])):
            continue
        store.put_file(f"{folder}/{name}", Path(files[name]), sha256=entry["sha256"],
                       if_absent=False)
        log.info(
            "replaced the leftover %s with the published bytes", store.url_of(f"{folder}/{name}")
        )


def _remove_unfinished_writes(store: Store, folder: str, started: float) -> None:
    """Remove the temporary files that killed publishes of this version left in its folder.

    Only files older than this publish are removed, because a newer one may belong to a
    concurrent publisher that is still writing. That publisher loses to this manifest anyway.
    """
    for key in store.remove_unfinished_writes(folder, older_than=started):
        log.info("removed %s, left by a stopped publish", store.url_of(key))


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
    stored_files: list[StoredFile],
    fields: dict,
    location: str,
) -> tuple[StoredManifest, bool]:
    """Write the manifest unless a concurrent publisher did; return it and whether it is ours."""
    digests = {stored.name: stored.digest for stored in stored_files}
    keys = {stored.name: stored.key for stored in stored_files}
    document = build_manifest(
        model=model, version=version, files=digests, keys=keys, fields=fields
    )
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
            # Twelve hex digits tell two files apart, and the full digests are in manifest.json.
            differences.append(
                f"{name} differs (published sha256 {published[name].sha256[:12]}..., "
                f"this publish {digests[name].sha256[:12]}...)"
            )
    listed = "; ".join(differences[:MAX_DIFFERENCES_SHOWN])
    if len(differences) > MAX_DIFFERENCES_SHOWN:
        listed += f"; and {len(differences) - MAX_DIFFERENCES_SHOWN} more"
    raise ConversionError(
        VERSION_EXISTS,
        f"{location} is already published with other files: {listed}. "
        "Published versions are immutable: publish under a new version",
    )


# --- a publish that stopped after its manifest ------------------------------------------------


def unindexed_release_error(
    error: Exception, location: str, channels: tuple[str, ...], manifest_sha256: str
) -> ConversionError:
    """Return the error of a publish whose manifest is written but whose index update failed.

    The message states that the version is published, and how to finish the index and channels.
    `metrics["published"]` marks the release as visible for reports and run summaries.
    """
    if isinstance(error, ConversionError):
        reason, detail, permanent = error.reason, error.message, error.permanent
    else:
        # An OSError's text may name the store's temporary file; its strerror is the cause.
        reason, permanent = STORE_UNAVAILABLE, False
        detail = error.strerror or (str(error) if error.filename is None else "")
        detail = detail or type(error).__name__
    failed = ConversionError(
        reason,
        f"{location} is published (its manifest.json is written), but updating index.json"
        f" and the channels failed: {detail}. {completion_hint(location, channels)}",
        permanent=permanent,
    )
    failed.metrics = {"published": True, "location": location, "manifest_sha256": manifest_sha256}
    return failed


def completion_hint(location: str, channels: tuple[str, ...]) -> str:
    """Return the sentence on how to finish the index entry and channels of a release."""
    hint = "Run the same `modelconv run` command again to record the version in index.json"
    if channels:
        hint += f" and move channel {', '.join(channels)} (or `modelconv promote {location}"
        hint += f" {channels[0]}`)"
    return hint + "; nothing is converted again"


def unfinished_steps(
    store: Store, stored: StoredManifest, channels: tuple[str, ...]
) -> tuple[bool, tuple[str, ...]]:
    """Return whether the index lacks the version, and the channels its publish did not move.

    A channel counts as not moved when it is missing, or points at another version and was
    last moved before this version's manifest was created: a later move (a promote of a
    newer version) is someone's decision and is kept.
    """
    model, version = stored.document["model"], stored.document["version"]
    index = read_json(store, index_key(model)) or {"versions": []}
    indexed = any(entry.get("version") == version for entry in index.get("versions", []))
    pending = []
    for channel in channels:
        pointer = read_json(store, channel_key(model, channel))
        if pointer is None:
            pending.append(channel)
        elif pointer.get("version") != version and (
            pointer.get("updatedAt", "") < stored.document.get("createdAt", "")
        ):
            pending.append(channel)
    return not indexed, tuple(pending)


def complete_release(
    store: Store, model: str, version: str, channels: tuple[str, ...], spec_sha256: str
) -> PublishedRelease | None:
    """Finish the index entry and channels of a version whose publish stopped after its manifest.

    Returns None, and changes nothing, when the version has no manifest, when its manifest
    was made from another spec (its `specSha256` differs), or when nothing is left to do.
    No file of the release is read or written again.
    """
    started = time.time()
    stored = read_manifest(store, model, version)
    if stored is None or stored.document.get("specSha256") != spec_sha256:
        return None
    _remove_unfinished_writes(store, release_folder(model, version), started)
    missing_from_index, pending = unfinished_steps(store, stored, tuple(channels))
    if not missing_from_index and not pending:
        return None
    record_in_index(store, model, version, stored.sha256, stored.document["createdAt"])
    for channel in pending:
        move_channel(store, model, channel, version, stored.sha256)
    location = store.url_of(release_folder(model, version))
    log.info("completed the publish of %s: index and channels %s", location, list(pending))
    return PublishedRelease(model, version, location, stored.document, stored.sha256, False,
                            pending)


@dataclasses.dataclass(frozen=True)
class PublishState:
    """The state of a stopped run's release in the store, and the sentence on how to finish it."""

    summary: str
    # Empty when the release is complete.
    next_step: str = ""

    def message(self) -> str:
        return f"{self.summary}. {self.next_step}" if self.next_step else self.summary


def publish_state(
    store: Store, model: str, version: str, channels: tuple[str, ...]
) -> PublishState:
    """Return what a stopped run left published (nothing, or a version to finish) and the next
    step."""
    stored = read_manifest(store, model, version)
    location = store.url_of(release_folder(model, version))
    if stored is None:
        return PublishState(
            f"nothing was published ({location} has no manifest.json)",
            f"Run the same `modelconv run` command again to convert and publish version {version}",
        )
    missing_from_index, pending = unfinished_steps(store, stored, tuple(channels))
    if not missing_from_index and not pending:
        return PublishState(f"{location} is published, with its index entry and channels")
    left = (["index.json"] if missing_from_index else []) + [f"channel {c}" for c in pending]
    return PublishState(
        f"{location} is published (its manifest.json is written), but these are not updated"
        f" yet: {', '.join(left)}",
        completion_hint(location, tuple(pending)),
    )
