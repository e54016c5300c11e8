"""Deterministic zip archives of Core ML package folders.

The same `.mlpackage` folder always gives the same bytes, wherever and whenever it is
zipped, so a retried or repeated publish of an unchanged package finds identical bytes and
succeeds instead of failing with VersionExists:

- entries sorted by their slash-separated path, folders included (so empty folders survive);
- every timestamp 1980-01-01 00:00:00, the earliest a zip entry can record;
- permissions 0644 for files and 0755 for folders, Unix as the creating system;
- no extra fields, no comments, no data descriptors;
- entries stored without compression. Deflate output depends on the zlib build (zlib and
  zlib-ng differ), which would make the bytes depend on the machine. Core ML weights are
  mostly float16 data that deflate shrinks little.

`make_package_reproducible` removes what varies between two saves of one model by
coremltools 9.0: random item ids in the package's Manifest.json, and the order of protobuf
map entries in model.mlmodel. What remains is the conversion date in the model's metadata,
so the same model converted on the same day gives the same package bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
import zipfile
from pathlib import Path
from typing import Optional

from ..errors import INVALID_MODEL, ConversionError
from ..store import CHUNK_SIZE, digest_file

FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = stat.S_IFREG | 0o644
FOLDER_MODE = stat.S_IFDIR | 0o755
# zipfile's `create_system` value for Unix, which makes unzip tools honor the modes above.
UNIX_SYSTEM = 3
# MS-DOS directory attribute, set on folder entries as zip tools expect.
DOS_DIRECTORY = 0x10
# The package's table of contents: item ids, each with its author, name and path.
PACKAGE_MANIFEST = "Manifest.json"
# Namespace of the name-based (version 5) UUIDs that replace random item ids.
ITEM_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://modelconv.io/mlpackage-item")


def make_package_reproducible(mlpackage_dir: Path) -> bool:
    """Rewrite a saved package so that the same model always gives the same bytes.

    Replaces the random item ids and re-encodes the model spec with deterministic protobuf
    serialization (map entries sorted by key), which any protobuf reader parses to the same
    message. Returns False, changing nothing, when the Manifest.json does not have the
    expected form.
    """
    root = Path(mlpackage_dir)
    model_path = pin_item_identifiers(root)
    if model_path is None:
        return False
    from coremltools.proto import Model_pb2  # Loaded only where a package is converted.

    spec = Model_pb2.Model()
    spec.ParseFromString(model_path.read_bytes())
    model_path.write_bytes(spec.SerializeToString(deterministic=True))
    return True


def pin_item_identifiers(mlpackage_dir: Path) -> Optional[Path]:
    """Replace the random item ids in a package's Manifest.json with name-based UUIDs.

    coremltools 9.0 gives each item (model spec, weights) a random UUID. An id only has to
    be unique within the package and match `rootModelIdentifier`. A version 5 UUID of the
    item's author and path is both, because no two items share a path. Returns the path of
    the root model spec, or None, changing nothing, when the manifest has another form.
    """
    path = Path(mlpackage_dir) / PACKAGE_MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    entries = manifest.get("itemInfoEntries")
    root = manifest.get("rootModelIdentifier")
    if not isinstance(entries, dict) or root not in entries:
        return None
    pinned = {
        old: str(uuid.uuid5(ITEM_ID_NAMESPACE, f"{entry.get('author')}/{entry.get('path')}"))
        for old, entry in entries.items()
    }
    model_path = Path(mlpackage_dir, "Data", str(entries[root].get("path")))
    if len(set(pinned.values())) != len(pinned) or not model_path.is_file():
        return None
    manifest["itemInfoEntries"] = {pinned[old]: entry for old, entry in entries.items()}
    manifest["rootModelIdentifier"] = pinned[root]
    path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n", encoding="utf-8")
    return model_path


def zip_package(mlpackage_dir: Path, dest: Path) -> str:
    """Write a deterministic zip of `mlpackage_dir` to `dest` and return its SHA-256.

    Entries are named `<folder name>/<relative path>`, so unzipping recreates the package
    folder. Raises `ConversionError(InvalidModel)` when the folder is missing or contains
    a symbolic link or a special file, which a package never needs.
    """
    root = Path(mlpackage_dir)
    if not root.is_dir():
        raise ConversionError(INVALID_MODEL, f"{root} is not a folder; expected an .mlpackage")
    entries = _package_entries(root)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        _write_folder_entry(archive, root.name)
        for relative in entries:
            path = root / relative
            name = f"{root.name}/{relative}"
            if path.is_dir():
                _write_folder_entry(archive, name)
            else:
                _write_file_entry(archive, name, path)
    return digest_file(Path(dest)).sha256


def _package_entries(root: Path) -> list[str]:
    """Return the relative paths of every file and folder under `root`, sorted."""
    entries = []
    for folder, folder_names, file_names in os.walk(root, followlinks=False):
        for name in folder_names + file_names:
            path = Path(folder, name)
            mode = path.lstat().st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise ConversionError(
                    INVALID_MODEL,
                    f"{path} is a symbolic link or special file; a Core ML package must "
                    "contain only regular files and folders",
                )
            entries.append(path.relative_to(root).as_posix())
    return sorted(entries)


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_DATE_TIME)
    info.create_system = UNIX_SYSTEM
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_STORED
    return info


def _write_folder_entry(archive: zipfile.ZipFile, name: str) -> None:
    info = _entry(name + "/", FOLDER_MODE)
    info.external_attr |= DOS_DIRECTORY
    archive.writestr(info, b"")


def _write_file_entry(archive: zipfile.ZipFile, name: str, path: Path) -> None:
    info = _entry(name, FILE_MODE)
    # Announcing the size lets zipfile choose ZIP64 up front for files over 4 GiB, the same
    # way every time, instead of deciding while streaming.
    info.file_size = path.stat().st_size
    with open(path, "rb") as source, archive.open(info, "w", force_zip64=False) as target:
        shutil.copyfileobj(source, target, CHUNK_SIZE)
