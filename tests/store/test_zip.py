"""zip_package: the same .mlpackage folder always gives the same bytes."""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from pathlib import Path

import pytest

from modelconv.errors import INVALID_MODEL, ConversionError
from modelconv.release import zip_package

PACKAGE_FILES = {
    "Manifest.json": b'{"fileFormatVersion": "1.0.0"}',
    "Data/com.apple.CoreML/model.mlmodel": b"\x08\x09program" * 50,
    "Data/com.apple.CoreML/weights/weight.bin": bytes(range(256)) * 64,
}


def make_package(root: Path, files: dict[str, bytes], reverse: bool = False) -> Path:
    package = root / "model.mlpackage"
    names = sorted(files, reverse=reverse)
    for name in names:
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name])
    (package / "Data" / "empty").mkdir(parents=True, exist_ok=True)
    return package


def test_same_package_gives_same_sha256(tmp_path: Path) -> None:
    first = make_package(tmp_path / "a", PACKAGE_FILES)
    second = make_package(tmp_path / "b", PACKAGE_FILES, reverse=True)
    # Different times, permissions and creation order must not matter.
    for path in second.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
        if path.is_file():
            path.chmod(0o600)

    first_sha = zip_package(first, tmp_path / "a.zip")
    second_sha = zip_package(second, tmp_path / "b.zip")

    assert first_sha == second_sha
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert first_sha == hashlib.sha256((tmp_path / "a.zip").read_bytes()).hexdigest()


def test_changed_content_changes_sha256(tmp_path: Path) -> None:
    changed = dict(PACKAGE_FILES, **{"Manifest.json": b'{"fileFormatVersion": "1.0.1"}'})

    original = zip_package(make_package(tmp_path / "a", PACKAGE_FILES), tmp_path / "a.zip")
    modified = zip_package(make_package(tmp_path / "b", changed), tmp_path / "b.zip")

    assert original != modified


def test_entries_are_sorted_with_fixed_metadata(tmp_path: Path) -> None:
    zip_package(make_package(tmp_path, PACKAGE_FILES), tmp_path / "m.zip")

    with zipfile.ZipFile(tmp_path / "m.zip") as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]

    assert names == sorted(names)
    assert names[0] == "model.mlpackage/"
    assert "model.mlpackage/Data/empty/" in names
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.extra == b""
        assert info.compress_type == zipfile.ZIP_STORED
        mode = info.external_attr >> 16
        expected = 0o755 if info.is_dir() else 0o644
        assert stat.S_IMODE(mode) == expected, info.filename


def test_zip_unpacks_to_the_package(tmp_path: Path) -> None:
    zip_package(make_package(tmp_path / "src", PACKAGE_FILES), tmp_path / "m.zip")

    with zipfile.ZipFile(tmp_path / "m.zip") as archive:
        archive.extractall(tmp_path / "out")

    for name, data in PACKAGE_FILES.items():
        assert (tmp_path / "out" / "model.mlpackage" / name).read_bytes() == data
    assert (tmp_path / "out" / "model.mlpackage" / "Data" / "empty").is_dir()


def test_symbolic_link_in_package_is_rejected(tmp_path: Path) -> None:
    package = make_package(tmp_path, PACKAGE_FILES)
    (package / "Data" / "link").symlink_to("/etc/hostname")

    with pytest.raises(ConversionError) as failure:
        zip_package(package, tmp_path / "m.zip")

    assert failure.value.reason == INVALID_MODEL
    assert "link" in failure.value.message


def test_missing_package_folder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConversionError) as failure:
        zip_package(tmp_path / "nothing.mlpackage", tmp_path / "m.zip")

    assert failure.value.reason == INVALID_MODEL
