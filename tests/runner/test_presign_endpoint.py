"""Presigned URLs for runners that reach the store at another address than the operator."""

from __future__ import annotations

import urllib.parse
import urllib.request

from modelconv.runner.checks import S3Presigner


def test_presign_endpoint_names_the_runners_address(s3_store, s3_server):
    # The operator speaks to the server as 127.0.0.1; the runners are given "localhost", the
    # same loopback server under another name, as a Mac would use a public name.
    s3_store.put_bytes("runs/a/model.bin", b"package bytes")
    port = urllib.parse.urlsplit(s3_server.endpoint_url).port
    outside = f"http://localhost:{port}"

    url = S3Presigner(s3_store, outside).presign_get("runs/a/model.bin", 300)

    assert url.startswith(f"{outside}/")
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with no_proxy.open(url, timeout=30) as response:
        assert response.read() == b"package bytes"
    # The store itself keeps its own endpoint.
    assert s3_store.client.meta.endpoint_url == s3_server.endpoint_url


def test_presigner_defaults_to_the_store_endpoint(s3_store, s3_server):
    url = S3Presigner(s3_store).presign_put("runs/a/report.json", 300)

    assert url.startswith(f"{s3_server.endpoint_url}/")
