"""The local S3 server speaks real S3 over HTTP, conditional writes included."""

from __future__ import annotations

import os
import subprocess
import sys

import botocore.exceptions
import pytest

from testenv import S3Server


def _error_code(error: botocore.exceptions.ClientError) -> str:
    return error.response["Error"]["Code"]


def test_s3_put_get_round_trip(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    put = client.put_object(Bucket=s3_bucket, Key="models/m/1/model.onnx", Body=b"\x08\x01")
    got = client.get_object(Bucket=s3_bucket, Key="models/m/1/model.onnx")

    assert got["Body"].read() == b"\x08\x01"
    assert got["ETag"] == put["ETag"]
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")


def test_s3_conditional_writes_reject_stale_writers(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    key = "models/m/index.json"
    first = client.put_object(Bucket=s3_bucket, Key=key, Body=b"v1", IfNoneMatch="*")

    with pytest.raises(botocore.exceptions.ClientError) as exists:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"other", IfNoneMatch="*")
    second = client.put_object(Bucket=s3_bucket, Key=key, Body=b"v2", IfMatch=first["ETag"])
    with pytest.raises(botocore.exceptions.ClientError) as stale:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"v3", IfMatch=first["ETag"])
    body = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()

    assert _error_code(exists.value) == "PreconditionFailed"
    assert _error_code(stale.value) == "PreconditionFailed"
    assert second["ETag"] != first["ETag"]
    assert body == b"v2"


def test_s3_client_env_configures_subprocess_clients(s3_server: S3Server,
                                                    s3_bucket: str) -> None:
    code = ("import boto3, sys; "
            "boto3.client('s3').put_object(Bucket=sys.argv[1], Key='from-env', Body=b'ok')")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"),
           **s3_server.client_env()}
    subprocess.run([sys.executable, "-c", code, s3_bucket], env=env, check=True, timeout=60)
    got = s3_server.client().get_object(Bucket=s3_bucket, Key="from-env")

    assert got["Body"].read() == b"ok"
