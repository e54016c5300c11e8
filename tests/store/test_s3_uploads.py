"""Uploads to S3 over HTTP: checksums, create-if-absent, parallel multipart parts, aborts."""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path

import pytest
from release_fixtures import write_random_file

from modelconv.errors import INTEGRITY_FAILED, INVALID_ARGUMENT, ConversionError
from modelconv.store import open_store
from modelconv.store.s3 import S3Store

MIB = 1024 * 1024


class RecordedRequests:
    """Headers and URLs of every request an S3 client sends, and how many overlapped."""

    def __init__(self, client) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3.*", self._sent)
        client.meta.events.register("after-call.s3.UploadPart", self._answered)
        client.meta.events.register("after-call-error.s3.UploadPart", self._answered)

    def _sent(self, request, event_name: str, **_) -> None:
        operation = event_name.rpartition(".")[2]
        with self._lock:
            self.requests.append((operation, request.url, dict(request.headers)))
            if operation == "UploadPart":
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _answered(self, **_) -> None:
        with self._lock:
            self.in_flight -= 1

    def of(self, operation: str) -> list[dict]:
        return [headers for name, _, headers in self.requests if name == operation]


def header(headers: dict, name: str) -> str:
    value = {key.lower(): value for key, value in headers.items()}.get(name.lower(), b"")
    return value.decode() if isinstance(value, bytes) else value


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def stored_object_keys(s3_server, bucket: str) -> list[str]:
    response = s3_server.client().list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in response.get("Contents", [])]


def pending_uploads(s3_server, bucket: str) -> list:
    return s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_single_put_sends_sha256_and_if_none_match(s3_store, s3_server, s3_bucket, tmp_path):
    path = write_random_file(tmp_path / "small.bin", 100_000, seed=1)
    recorded = RecordedRequests(s3_store.client)

    s3_store.put_file("m/1/small.bin", path)

    (put,) = recorded.of("PutObject")
    assert header(put, "x-amz-checksum-sha256") == b64_sha256(path.read_bytes())
    assert header(put, "If-None-Match") == "*"
    stored = s3_server.client().head_object(
        Bucket=s3_bucket, Key="releases/m/1/small.bin", ChecksumMode="ENABLED"
    )
    assert stored["ChecksumSHA256"] == b64_sha256(path.read_bytes())


def test_large_file_goes_in_parallel_parts_with_checksums(s3_store, s3_server, s3_bucket, tmp_path):
    path = write_random_file(tmp_path / "large.bin", 27 * MIB + 123, seed=2)
    data = path.read_bytes()
    recorded = RecordedRequests(s3_store.client)

    result = s3_store.put_file("m/1/large.bin", path, sha256=hashlib.sha256(data).hexdigest())

    parts = recorded.of("UploadPart")
    assert result.written
    assert len(parts) == 6  # 5 parts of 5 MiB and the rest
    part_size = 5 * MIB
    expected_checksums = {
        b64_sha256(data[offset:offset + part_size]) for offset in range(0, len(data), part_size)
    }
    assert {header(part, "x-amz-checksum-sha256") for part in parts} == expected_checksums
    (complete,) = recorded.of("CompleteMultipartUpload")
    assert header(complete, "If-None-Match") == "*"
    assert recorded.max_in_flight >= 2
    assert recorded.max_in_flight <= s3_store.settings.concurrency
    body = s3_server.client().get_object(Bucket=s3_bucket, Key="releases/m/1/large.bin")["Body"]
    assert body.read() == data
    assert s3_store.head("m/1/large.bin").sha256 == hashlib.sha256(data).hexdigest()


def test_multipart_upload_never_replaces_an_object(s3_store, s3_server, s3_bucket, tmp_path):
    first = write_random_file(tmp_path / "first.bin", 11 * MIB, seed=3)
    second = write_random_file(tmp_path / "second.bin", 11 * MIB, seed=4)
    s3_store.put_file("m/1/model.bin", first)

    result = s3_store.put_file("m/1/model.bin", second)

    assert not result.written
    assert s3_store.get_bytes("m/1/model.bin") == first.read_bytes()
    assert pending_uploads(s3_server, s3_bucket) == []


class FailingReads(S3Store):
    """An S3 store whose source files fail to read after `limit` bytes."""

    limit = 7 * 1024 * 1024

    def open_source(self, path: Path):
        return ReadFailsAfter(open(path, "rb"), self.limit)


class ReadFailsAfter:
    """A binary file that raises OSError once more than `limit` bytes were read."""

    def __init__(self, handle, limit: int) -> None:
        self.handle = handle
        self.remaining = limit

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.remaining -= len(chunk)
        if self.remaining < 0:
            raise OSError("simulated read failure in the middle of the upload")
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.close()


def test_read_failure_midway_aborts_the_upload(s3_url, s3_server, s3_bucket, tmp_path):
    store = FailingReads.from_url(s3_url)
    path = write_random_file(tmp_path / "large.bin", 16 * MIB, seed=5)

    with pytest.raises(OSError, match="simulated read failure"):
        store.put_file("m/1/large.bin", path)

    assert stored_object_keys(s3_server, s3_bucket) == []
    assert pending_uploads(s3_server, s3_bucket) == []


def test_file_changed_during_upload_creates_nothing(s3_store, s3_server, s3_bucket, tmp_path):
    path = write_random_file(tmp_path / "large.bin", 12 * MIB, seed=6)
    stale_sha256 = hashlib.sha256(b"the file as it was hashed earlier").hexdigest()

    with pytest.raises(ConversionError) as failure:
        s3_store.put_file("m/1/large.bin", path, sha256=stale_sha256)

    assert failure.value.reason == INTEGRITY_FAILED
    assert stored_object_keys(s3_server, s3_bucket) == []
    assert pending_uploads(s3_server, s3_bucket) == []


def test_path_addressing_puts_the_bucket_in_the_path(s3_url, s3_bucket, s3_endpoint, monkeypatch):
    monkeypatch.setenv("MODELCONV_S3_ADDRESSING", "path")
    store = open_store(s3_url)
    recorded = RecordedRequests(store.client)

    store.put_bytes("a.json", b"{}")

    (_, url, _) = recorded.requests[0]
    assert url.startswith(f"{s3_endpoint}/{s3_bucket}/releases/a.json")


def test_invalid_addressing_setting_is_reported(s3_url, monkeypatch):
    monkeypatch.setenv("MODELCONV_S3_ADDRESSING", "sideways")

    with pytest.raises(ConversionError) as failure:
        open_store(s3_url)

    assert failure.value.reason == INVALID_ARGUMENT
    assert "MODELCONV_S3_ADDRESSING" in failure.value.message
