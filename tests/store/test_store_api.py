"""The Store API behaves the same on S3 (moto over HTTP) and in a local folder."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from pathlib import Path

import pytest

from modelconv.errors import (
    ACCESS_DENIED, INTEGRITY_FAILED, INVALID_ARGUMENT, STORE_UNAVAILABLE, ConversionError,
)
from modelconv.store import ObjectNotFound, open_store
from modelconv.store.folder import TEMP_PREFIX, FolderStore
from modelconv.store.s3 import S3Store

from release_fixtures import write_random_file


def test_put_file_creates_an_object_only_once(store, tmp_path: Path) -> None:
    first = write_random_file(tmp_path / "first.bin", 3000, seed=1)
    second = write_random_file(tmp_path / "second.bin", 3000, seed=2)

    created = store.put_file("m/1/model.bin", first)
    again = store.put_file("m/1/model.bin", second)

    assert created.written
    assert created.digest.sha256 == hashlib.sha256(first.read_bytes()).hexdigest()
    assert not again.written
    assert store.get_bytes("m/1/model.bin") == first.read_bytes()


def test_put_bytes_creates_an_object_only_once(store) -> None:
    assert store.put_bytes("m/doc.json", b"{}").written
    assert not store.put_bytes("m/doc.json", b'{"other": 1}').written
    assert store.get_bytes("m/doc.json") == b"{}"


def test_put_bytes_replaces_when_asked(store) -> None:
    store.put_bytes("m/doc.json", b"1")
    assert store.put_bytes("m/doc.json", b"2", if_absent=False).written
    assert store.get_bytes("m/doc.json") == b"2"


def test_head_reports_size_and_sha256(store, tmp_path: Path) -> None:
    path = write_random_file(tmp_path / "a.bin", 1234, seed=3)
    store.put_file("a.bin", path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())

    info = store.head("a.bin")

    assert info is not None
    assert info.size == 1234
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.etag
    assert store.head("missing.bin") is None


def test_get_file_returns_digest_of_download(store, tmp_path: Path) -> None:
    path = write_random_file(tmp_path / "a.bin", 70_000, seed=4)
    store.put_file("x/a.bin", path)

    digest = store.get_file("x/a.bin", tmp_path / "download.bin")

    assert (tmp_path / "download.bin").read_bytes() == path.read_bytes()
    assert digest.size == 70_000
    assert digest.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_keys_raise_object_not_found(store, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        store.get_bytes("nothing/here.json")
    with pytest.raises(ObjectNotFound):
        store.get_file("nothing/here.bin", tmp_path / "out.bin")


def test_list_returns_sorted_keys_under_prefix(store) -> None:
    for key in ("m/2/b", "m/1/a", "n/1/a", "m/1/c"):
        store.put_bytes(key, b"x")

    assert store.list("m/") == ["m/1/a", "m/1/c", "m/2/b"]
    assert store.list("m/1/") == ["m/1/a", "m/1/c"]
    assert store.list("none/") == []
    assert store.list() == ["m/1/a", "m/1/c", "m/2/b", "n/1/a"]


@pytest.mark.parametrize("key", ["../escape", "/absolute", "a//b", "a/./b", "a/../b", "", "a\\b"])
def test_keys_outside_the_root_are_rejected(store, key: str) -> None:
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError):
        store.head(key)


def test_wrong_expected_sha256_writes_nothing(store, tmp_path: Path) -> None:
    path = write_random_file(tmp_path / "a.bin", 5000, seed=5)

    with pytest.raises(ConversionError) as failure:
        store.put_file("a.bin", path, sha256="0" * 64)

    assert failure.value.reason == INTEGRITY_FAILED
    assert store.head("a.bin") is None
    assert store.list() == []


def test_update_json_loses_no_concurrent_update(store) -> None:
    writers, entries = 8, 5

    def adding(entry: str):
        def add(document):
            document = document or {"entries": []}
            if entry in document["entries"]:
                return None
            document["entries"].append(entry)
            return document

        return add

    def work(writer: int) -> None:
        for number in range(entries):
            store.update_json("m/index.json", adding(f"{writer}-{number}"))

    threads = [threading.Thread(target=work, args=(writer,)) for writer in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    stored = json.loads(store.get_bytes("m/index.json"))
    expected = {f"{writer}-{number}" for writer in range(writers) for number in range(entries)}
    assert sorted(stored["entries"]) == sorted(expected)


class LostUpdateS3Store(S3Store):
    """An S3 store whose first JSON write is lost: right after it, another writer's version
    replaces it, as on servers whose conditional writes are not atomic."""

    lost = False

    def _put_json_if_unchanged(self, key, document, etag):
        written = super()._put_json_if_unchanged(key, document, etag)
        if written and not self.lost:
            self.lost = True
            self.client.put_object(Bucket=self.bucket, Key=self._key(key),
                                   Body=b'{"entries": ["other"]}')
        return written


def test_update_json_repairs_a_lost_update(s3_url) -> None:
    store = LostUpdateS3Store.from_url(s3_url)

    def add_mine(document):
        document = document or {"entries": []}
        if "mine" in document["entries"]:
            return None
        document["entries"].append("mine")
        return document

    result = store.update_json("m/index.json", add_mine)

    assert store.lost
    assert sorted(result["entries"]) == ["mine", "other"]
    assert json.loads(store.get_bytes("m/index.json")) == result


def test_update_json_skips_write_when_unchanged(store) -> None:
    store.update_json("doc.json", lambda current: {"a": 1})
    etag = store.head("doc.json").etag

    result = store.update_json("doc.json", lambda current: None)
    same = store.update_json("doc.json", lambda current: dict(current))

    assert result == {"a": 1}
    assert same == {"a": 1}
    assert store.head("doc.json").etag == etag


def test_invalid_json_document_is_an_integrity_failure(store) -> None:
    store.put_bytes("doc.json", b"not json")

    with pytest.raises(ConversionError) as failure:
        store.update_json("doc.json", lambda current: {"a": 1})

    assert failure.value.reason == INTEGRITY_FAILED
    assert "doc.json" in failure.value.message


def test_describe_names_the_store(s3_store, folder_store, s3_bucket: str, tmp_path: Path) -> None:
    assert s3_store.describe() == f"s3://{s3_bucket}/releases"
    assert folder_store.describe() == (tmp_path / "releases").as_uri()


@pytest.mark.parametrize(
    ("url", "kind"),
    [("s3://models-bucket/a/b/", S3Store), ("file:///tmp/releases", FolderStore),
     ("relative/releases", FolderStore)],
)
def test_open_store_picks_the_kind_from_the_url(url: str, kind: type) -> None:
    assert isinstance(open_store(url), kind)


def test_open_store_strips_prefix_slashes() -> None:
    store = open_store("s3://models-bucket/a/b/")
    assert store.prefix == "a/b"
    assert store.describe() == "s3://models-bucket/a/b"


@pytest.mark.parametrize(
    "url",
    ["s3://B/prefix", "s3://x/prefix", "s3://bucket/../up", "gs://bucket/x",
     "file://otherhost/x", "https://user:secret@example.invalid/x"],
)
def test_open_store_rejects_invalid_urls(url: str) -> None:
    with pytest.raises(ConversionError) as failure:
        open_store(url)
    # A malformed location is a usage error (exit code 2), not an unreachable store.
    assert failure.value.reason == INVALID_ARGUMENT
    assert failure.value.exit_code == 2
    assert "secret" not in failure.value.message


@pytest.fixture
def immutable_folder(tmp_path: Path):
    """A folder that not even root can write to (`chattr +i`), made writable again afterwards."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_unwritable_folder_store_is_found_by_check_writable(immutable_folder: Path) -> None:
    store = open_store(str(immutable_folder))

    with pytest.raises(ConversionError) as failure:
        store.check_writable()

    assert failure.value.reason == ACCESS_DENIED
    assert "cannot write to the store folder" in failure.value.message
    assert list(immutable_folder.iterdir()) == []


def test_check_writable_leaves_no_probe_file(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "new" / "releases"))

    store.check_writable()

    assert list((tmp_path / "new" / "releases").iterdir()) == []


def test_folder_store_under_a_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    store = open_store(str(tmp_path / "file" / "releases"))

    with pytest.raises(ConversionError) as failure:
        store.check_writable()

    assert failure.value.reason == STORE_UNAVAILABLE
    assert "is a file, not a folder" in failure.value.message


def test_folder_list_skips_writes_in_progress(folder_store) -> None:
    folder_store.put_bytes("m/a", b"x")
    (folder_store.root / "m" / f"{TEMP_PREFIX}123").write_bytes(b"partial")

    assert folder_store.list() == ["m/a"]


def test_folder_store_requires_hard_links(
    folder_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(ConversionError) as failure:
        folder_store.put_bytes("m/a", b"x")

    assert failure.value.reason == STORE_UNAVAILABLE
    assert "hard links" in failure.value.message
    assert folder_store.list() == []
