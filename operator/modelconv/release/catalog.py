"""The per-model release index and channel pointers, and the operations that read them.

```
<model>/index.json              {"versions": [{"version", "manifestSha256", "createdAt"}...]}
<model>/channels/<channel>.json {"version", "manifestSha256", "updatedAt", "previousVersion"}
```

Both are updated with `Store.update_json` (ETag preconditions on S3, a lock in a folder),
so concurrent publishes of different versions all land in the index. A version enters the
index only after its manifest exists, and a channel only ever points at a version that has
a manifest. Concurrent moves of one channel are applied one after the other: the last
move wins.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from ..errors import INTEGRITY_FAILED, RELEASE_NOT_FOUND, ConversionError
from ..store import ObjectNotFound, Store, decode_json
from .manifest import (
    MANIFEST_FILE,
    check_release_names,
    read_manifest,
    release_folder,
    utc_timestamp,
)

INDEX_FILE = "index.json"
CHANNELS_FOLDER = "channels"
INDEX_API_VERSION = "modelconv.io/release-index/v1"
CHANNEL_API_VERSION = "modelconv.io/channel/v1"


@dataclasses.dataclass(frozen=True)
class ChannelPointer:
    """A channel and the release it points at."""

    channel: str
    version: str
    manifest_sha256: str
    updated_at: str
    previous_version: Optional[str] = None

    def to_dict(self) -> dict:
        return {
            "channel": self.channel,
            "version": self.version,
            "manifestSha256": self.manifest_sha256,
            "updatedAt": self.updated_at,
            "previousVersion": self.previous_version,
        }

    @classmethod
    def from_document(cls, document: dict) -> "ChannelPointer":
        return cls(
            channel=document["channel"],
            version=document["version"],
            manifest_sha256=document["manifestSha256"],
            updated_at=document["updatedAt"],
            previous_version=document.get("previousVersion"),
        )


@dataclasses.dataclass(frozen=True)
class ReleaseEntry:
    """One published version as the index records it, with the channels pointing at it."""

    version: str
    manifest_sha256: str
    created_at: str
    channels: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ReleaseCatalog:
    """The published versions of a model, oldest first, and its channels."""

    model: str
    location: str
    versions: tuple[ReleaseEntry, ...]
    channels: dict[str, ChannelPointer]
    # Versions with a manifest but no index entry: their publish stopped before the index.
    unindexed: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "location": self.location,
            "versions": [
                {
                    "version": entry.version,
                    "manifestSha256": entry.manifest_sha256,
                    "createdAt": entry.created_at,
                    "channels": list(entry.channels),
                    "location": f"{self.location}/{entry.version}",
                }
                for entry in self.versions
            ],
            "channels": {name: pointer.to_dict() for name, pointer in self.channels.items()},
            "unindexed": list(self.unindexed),
        }


def index_key(model: str) -> str:
    return f"{model}/{INDEX_FILE}"


def channel_key(model: str, channel: str) -> str:
    return f"{model}/{CHANNELS_FOLDER}/{channel}.json"


def record_in_index(
    store: Store, model: str, version: str, manifest_sha256: str, created_at: str
) -> None:
    """Add a published version to the model's index unless it is there already.

    Raises `ConversionError(IntegrityFailed)` when the index lists the version with another
    manifest digest, which means the manifest was changed after publishing.
    """

    def add_version(index: Optional[dict]) -> Optional[dict]:
        index = index or {"apiVersion": INDEX_API_VERSION, "model": model, "versions": []}
        for entry in index["versions"]:
            if entry["version"] != version:
                continue
            if entry["manifestSha256"] != manifest_sha256:
                raise ConversionError(
                    INTEGRITY_FAILED,
                    f"{store.url_of(index_key(model))} lists version {version} with manifest "
                    f"sha256 {entry['manifestSha256']}, but its manifest.json has "
                    f"{manifest_sha256}: the release was changed after it was published",
                )
            return None
        index["versions"].append(
            {"version": version, "manifestSha256": manifest_sha256, "createdAt": created_at}
        )
        return index

    store.update_json(index_key(model), add_version)


def move_channel(
    store: Store, model: str, channel: str, version: str, manifest_sha256: str
) -> ChannelPointer:
    """Point `channel` at a published version and return the pointer as stored."""
    updated_at = utc_timestamp()

    def point(current: Optional[dict]) -> Optional[dict]:
        target = (version, manifest_sha256)
        if current and (current["version"], current["manifestSha256"]) == target:
            return None
        document = {
            "apiVersion": CHANNEL_API_VERSION,
            "model": model,
            "channel": channel,
            "version": version,
            "manifestSha256": manifest_sha256,
            "updatedAt": updated_at,
        }
        if current:
            document["previousVersion"] = current["version"]
        return document

    return ChannelPointer.from_document(store.update_json(channel_key(model, channel), point))


def promote(store: Store, model: str, version: str, channel: str) -> ChannelPointer:
    """Point `channel` at an existing release.

    Raises `ConversionError(ReleaseNotFound)` when the version has no manifest: a version
    whose publish never finished cannot be promoted. Also records the version in the index
    when a publish stopped between writing the manifest and updating the index.
    """
    check_release_names(model, version, [channel])
    stored = read_manifest(store, model, version)
    if stored is None:
        raise ConversionError(
            RELEASE_NOT_FOUND,
            f"{store.url_of(release_folder(model, version))} has no manifest.json: version "
            f"{version} of {model} was never published, or its publish has not finished",
        )
    record_in_index(store, model, version, stored.sha256, stored.document.get("createdAt", ""))
    return move_channel(store, model, channel, version, stored.sha256)


def list_releases(store: Store, model: str) -> ReleaseCatalog:
    """Return the versions of `model` recorded in its index, and its channels.

    A model without releases gives an empty catalog. `versions` contains the versions in the
    index. A version whose publish stopped after writing its manifest but before updating the
    index is in `unindexed` until a rerun or a promote records it. Finding those lists every
    object of the model.
    """
    check_release_names(model)
    index = read_json(store, index_key(model)) or {"versions": []}
    channels = {}
    for key in store.list(f"{model}/{CHANNELS_FOLDER}/"):
        document = read_json(store, key) if key.endswith(".json") else None
        if document:
            pointer = ChannelPointer.from_document(document)
            channels[pointer.channel] = pointer
    versions = tuple(
        ReleaseEntry(
            version=entry["version"],
            manifest_sha256=entry["manifestSha256"],
            created_at=entry["createdAt"],
            channels=tuple(
                sorted(name for name, pointer in channels.items()
                       if pointer.version == entry["version"])
            ),
        )
        for entry in sorted(index["versions"], key=lambda entry: entry["createdAt"])
    )
    indexed = {entry.version for entry in versions}
    unindexed = tuple(
        key.split("/")[1]
        for key in store.list(f"{model}/")
        if key.count("/") == 2 and key.endswith(f"/{MANIFEST_FILE}")
        and key.split("/")[1] not in indexed
    )
    return ReleaseCatalog(
        model, store.url_of(model), versions, dict(sorted(channels.items())), unindexed
    )


def read_json(store: Store, key: str) -> Optional[dict]:
    """Return the JSON object stored under `key`, or None when there is none."""
    try:
        return decode_json(store.url_of(key), store.get_bytes(key))
    except ObjectNotFound:
        return None
