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
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path

from ..errors import INVALID_MODEL, ConversionError
from ..store import CHUNK_SIZE, digest_file

FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = stat.S_IFREG | 0o644
FOLDER_MODE = stat.S_IFDIR | 0o755
# zipfile's `create_system` value for Unix, which makes unzip tools honor the modes above.
UNIX_SYSTEM = 3
# MS-DOS directory attribute, set on folder entries as zip tools expect.
DOS_DIRECTORY = 0x10


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
