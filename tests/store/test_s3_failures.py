"""Classified S3 failures with bounded retries, and a server killed in the middle of a publish."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from release_fixtures import MotoProcess, RequestCounter, release_files

from modelconv.errors import ACCESS_DENIED, STORE_UNAVAILABLE, ConversionError
from modelconv.release import list_releases, publish_release, read_manifest, verify_release
from modelconv.store import open_store
from testenv.processes import free_port

MIB = 1024 * 1024


def publish(store, files, version="1.0.0"):
    return publish_release(store, model="mobilenet", version=version, files=files, manifest={})


# --- missing bucket and unreachable endpoint --------------------------------------------


def test_missing_bucket_is_a_permanent_store_failure(s3_endpoint, tmp_path: Path) -> None:
    store = open_store("s3://no-such-bucket-here/releases")
    counter = RequestCounter(store.client)

    with pytest.raises(ConversionError) as failure:
        publish(store, release_files(tmp_path / "files", seed=1))

    assert failure.value.reason == STORE_UNAVAILABLE
    assert failure.value.permanent
    assert "'no-such-bucket-here' does not exist" in failure.value.message
    assert counter.total == 1  # NoSuchBucket is not retried


def test_missing_bucket_fails_reads_too(s3_endpoint) -> None:
    store = open_store("s3://no-such-bucket-here/releases")

    for read in (lambda: list_releases(store, "mobilenet"),
                 lambda: verify_release(store, "mobilenet", "1.0.0")):
        with pytest.raises(ConversionError) as failure:
            read()
        assert failure.value.reason == STORE_UNAVAILABLE
        assert "no-such-bucket-here" in failure.value.message


@pytest.mark.parametrize("attempts", [1, 3])
def test_refused_connection_is_transient_with_bounded_attempts(
    monkeypatch, tmp_path: Path, attempts: int
) -> None:
    # Nothing listens on a port that was just free, so every connection is refused.
    monkeypatch.setenv("MODELCONV_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MODELCONV_S3_MAX_ATTEMPTS", str(attempts))
    store = open_store("s3://releases-bucket/releases")
    counter = RequestCounter(store.client)

    with pytest.raises(ConversionError) as failure:
        publish(store, release_files(tmp_path / "files", seed=2))

    assert failure.value.reason == STORE_UNAVAILABLE
    assert not failure.value.permanent
    assert "cannot reach the S3 endpoint" in failure.value.message
    assert counter.total == attempts


# --- credentials and policies (moto with IAM checks turned on) --------------------------

WRITER_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
READER_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}


@pytest.fixture(scope="module")
def locked_moto(tmp_path_factory: pytest.TempPathFactory):
    """A moto server that checks signatures and IAM policies, with a writer and a reader."""
    server = MotoProcess(tmp_path_factory.mktemp("locked-moto")).start()
    iam = server.client("iam")
    keys = {}
    for user, policy in (("writer", WRITER_POLICY), ("reader", READER_POLICY)):
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName=f"{user}-policy",
                            PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
    server.client("s3").create_bucket(Bucket="locked-releases")
    server.require_auth()
    try:
        yield server, keys
    finally:
        server.stop()


def locked_store(monkeypatch, server: MotoProcess, access_key_id: str, secret: str):
    monkeypatch.setenv("MODELCONV_S3_ENDPOINT", server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    return open_store("s3://locked-releases/releases")


def test_writer_credentials_publish_with_auth_on(locked_moto, monkeypatch, tmp_path) -> None:
    server, keys = locked_moto
    store = locked_store(monkeypatch, server, *keys["writer"])

    release = publish(store, release_files(tmp_path / "files", seed=3), version="0.1.0")

    assert release.created
    assert verify_release(store, "mobilenet", "0.1.0").ok


def test_unknown_access_key_is_access_denied(locked_moto, monkeypatch, tmp_path) -> None:
    server, _ = locked_moto
    store = locked_store(monkeypatch, server, "AKIAUNKNOWNKEY000000", "unknown-secret-value")
    counter = RequestCounter(store.client)

    with pytest.raises(ConversionError) as failure:
        publish(store, release_files(tmp_path / "files", seed=4))

    assert failure.value.reason == ACCESS_DENIED
    assert failure.value.permanent
    assert "AWS_ACCESS_KEY_ID" in failure.value.message
    assert "unknown-secret-value" not in failure.value.message
    assert counter.total == 1  # authentication failures are not retried


def test_wrong_secret_is_access_denied(locked_moto, monkeypatch, tmp_path) -> None:
    server, keys = locked_moto
    access_key_id, _ = keys["writer"]
    store = locked_store(monkeypatch, server, access_key_id, "a-wrong-secret-value")
    counter = RequestCounter(store.client)

    with pytest.raises(ConversionError) as failure:
        publish(store, release_files(tmp_path / "files", seed=5))

    assert failure.value.reason == ACCESS_DENIED
    assert "AWS_SECRET_ACCESS_KEY" in failure.value.message
    assert "a-wrong-secret-value" not in failure.value.message
    assert counter.total == 1


def test_denied_write_names_the_missing_permission(locked_moto, monkeypatch, tmp_path) -> None:
    server, keys = locked_moto
    store = locked_store(monkeypatch, server, *keys["reader"])
    counter = RequestCounter(store.client)

    with pytest.raises(ConversionError) as failure:
        publish(store, release_files(tmp_path / "files", seed=6), version="0.2.0")

    assert failure.value.reason == ACCESS_DENIED
    assert failure.value.permanent
    assert "s3:PutObject" in failure.value.message
    assert counter.counts["PutObject"] == 1
    assert read_manifest(store, "mobilenet", "0.2.0") is None


def test_reader_credentials_still_verify(locked_moto, monkeypatch, tmp_path) -> None:
    server, keys = locked_moto
    publish(locked_store(monkeypatch, server, *keys["writer"]),
            release_files(tmp_path / "files", seed=7), version="0.3.0")
    reader = locked_store(monkeypatch, server, *keys["reader"])

    assert verify_release(reader, "mobilenet", "0.3.0").ok


# --- the server dies in the middle of a multipart upload --------------------------------


def test_server_killed_mid_upload_then_retry_completes(own_moto: MotoProcess, monkeypatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("MODELCONV_S3_ENDPOINT", own_moto.endpoint_url)
    own_moto.client().create_bucket(Bucket="crash-releases")
    url = "s3://crash-releases/releases"
    publish(open_store(url), release_files(tmp_path / "v1", seed=8), version="1.0.0")
    large = release_files(tmp_path / "v2", seed=9, package_size=30 * MIB)

    # Kill the server once two parts of the 30 MiB package have been stored.
    store = open_store(url)
    counter = RequestCounter(store.client)
    stored_parts = []
    kill_lock = threading.Lock()

    def kill_after_two_parts(**_) -> None:
        with kill_lock:
            stored_parts.append(1)
            if len(stored_parts) == 2:
                own_moto.kill()

    store.client.meta.events.register("after-call.s3.UploadPart", kill_after_two_parts)
    with pytest.raises(ConversionError) as failure:
        publish(store, large, version="2.0.0")

    assert failure.value.reason == STORE_UNAVAILABLE
    assert not failure.value.permanent  # so the stage runner retries it
    # Six parts at most, three attempts per request: retries stay bounded.
    assert counter.counts["UploadPart"] <= 6 * 3
    with pytest.raises(ConversionError) as down:
        verify_release(open_store(url), "mobilenet", "1.0.0")
    assert down.value.reason == STORE_UNAVAILABLE

    # moto keeps objects in memory only: its request recorder rebuilds the state.
    own_moto.start()
    own_moto.replay()
    restarted = open_store(url)
    assert verify_release(restarted, "mobilenet", "1.0.0").ok
    assert read_manifest(restarted, "mobilenet", "2.0.0") is None
    assert [entry.version for entry in list_releases(restarted, "mobilenet").versions] == ["1.0.0"]

    retried = publish(restarted, large, version="2.0.0")

    assert retried.created
    assert verify_release(restarted, "mobilenet", "2.0.0").ok
    versions = [entry.version for entry in list_releases(restarted, "mobilenet").versions]
    assert versions == ["1.0.0", "2.0.0"]
