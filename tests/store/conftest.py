"""Fixtures of the store and release tests.

S3 tests use the shared moto server (`s3_server`, `s3_bucket` from tests/conftest.py) over
HTTP on loopback. Tests that stop, restart or lock down a server start their own with
`MotoProcess`. Every test runs with fake static credentials, no AWS config files and the
instance-metadata lookup disabled, so no client can reach anything but 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from release_fixtures import MotoProcess

from modelconv.store import open_store
from testenv.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

# Smallest part size S3 allows; multipart uploads then need only files of a few MiB.
TEST_PART_SIZE_MIB = 5
AWS_VARIABLES_TO_CLEAR = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "MODELCONV_S3_ENDPOINT", "MODELCONV_S3_ADDRESSING",
)


@pytest.fixture(autouse=True)
def isolated_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake static credentials and no config files, so no client looks anywhere else."""
    for name in AWS_VARIABLES_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("MODELCONV_S3_PART_SIZE_MIB", str(TEST_PART_SIZE_MIB))
    monkeypatch.setenv("MODELCONV_S3_MAX_ATTEMPTS", "3")


@pytest.fixture
def s3_endpoint(s3_server, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MODELCONV_S3_ENDPOINT", s3_server.endpoint_url)
    return s3_server.endpoint_url


@pytest.fixture
def s3_url(s3_endpoint: str, s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/releases"


@pytest.fixture
def s3_store(s3_url: str):
    return open_store(s3_url)


@pytest.fixture
def folder_store(tmp_path: Path):
    return open_store(str(tmp_path / "releases"))


@pytest.fixture(params=["s3", "folder"])
def store(request: pytest.FixtureRequest):
    """Each store kind in turn: tests that take `store` run against S3 and a folder."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def own_moto(tmp_path: Path) -> Iterator[MotoProcess]:
    """A moto server for this test alone, recording its requests; stopped afterwards."""
    server = MotoProcess(tmp_path, record=True).start()
    try:
        yield server
    finally:
        server.stop()
