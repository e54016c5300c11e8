"""URLs with credentials in a ModelConversion never reach a message, report or JUnit file.

A presigned query string (`X-Amz-Signature`, `X-Amz-Credential`) or a password in a URL's
userinfo is a credential. Every place that quotes a user-given URL shows it redacted.
"""

from __future__ import annotations

import json

import pytest

from modelconv.errors import ConversionError
from modelconv.redaction import redact_url, redact_urls
from new_user_runs import linear_document, run_modelconv, write_document

SIGNATURE = "c2lnbmF0dXJlLXNlY3JldA"
ACCESS_KEY = "AKIAEXAMPLEKEY123456"
PRESIGNED_QUERY = f"X-Amz-Signature={SIGNATURE}&X-Amz-Credential={ACCESS_KEY}"


def onnx_source_document(uri: str) -> dict:
    return linear_document(source={"onnx": {"uri": uri}})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"https://127.0.0.1:1/m.onnx?{PRESIGNED_QUERY}",
            "https://127.0.0.1:1/m.onnx?X-Amz-Signature=<redacted>&X-Amz-Credential=<redacted>",
        ),
        ("http://user:pw@127.0.0.1:1/m.onnx", "http://user:<redacted>@127.0.0.1:1/m.onnx"),
        ("https://token@127.0.0.1/m.onnx", "https://<redacted>@127.0.0.1/m.onnx"),
        ("s3://bucket/key.onnx", "s3://bucket/key.onnx"),
    ],
)
def test_redact_url_hides_credentials(url, expected):
    assert redact_url(url) == expected


def test_redact_urls_is_idempotent():
    text = f"s3://rel/m.onnx?{PRESIGNED_QUERY}: not found; see http://u:pw@h/x."
    redacted = redact_urls(text)
    assert SIGNATURE not in redacted
    assert ACCESS_KEY not in redacted
    assert ":pw@" not in redacted
    assert redacted.endswith("@h/x.")
    assert "<redacted>: not found" in redacted
    assert redact_urls(redacted) == redacted


def test_conversion_error_message_redacted():
    error = ConversionError("SourceNotFound", f"s3://b/k?{PRESIGNED_QUERY} was not found")
    assert SIGNATURE not in str(error)
    assert SIGNATURE not in error.message


@pytest.mark.parametrize(
    "uri", [f"https://127.0.0.1:1/m.onnx?{PRESIGNED_QUERY}", "http://user:pw@127.0.0.1:1/m.onnx"]
)
def test_invalid_source_url_redacted(tmp_path, uri):
    conversion = write_document(tmp_path / "conversion.yaml", onnx_source_document(uri))

    result = run_modelconv("run", conversion, "--output", "json", cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "InvalidSpec" in output
    assert SIGNATURE not in output
    assert ACCESS_KEY not in output
    assert ":pw@" not in output
    message = json.loads(result.stdout)["message"]
    # The quoted value keeps its closing quote, also when it is cut.
    assert message.startswith("spec.source.onnx.uri: '")
    assert "' is invalid" in message


def test_missing_s3_source_redacted_everywhere(
    tmp_path, s3_server, s3_bucket, monkeypatch
):
    for name, value in s3_server.client_env().items():
        monkeypatch.setenv(name, value)
    uri = f"s3://{s3_bucket}/nothere.onnx?{PRESIGNED_QUERY}"
    conversion = write_document(tmp_path / "conversion.yaml", onnx_source_document(uri))
    workdir = tmp_path / "work"
    junit = tmp_path / "junit.xml"

    result = run_modelconv(
        "run", conversion, "--store", tmp_path / "releases", "--workdir", workdir,
        "--junit", junit, cwd=tmp_path,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "SourceNotFound" in output
    assert f"s3://{s3_bucket}/nothere.onnx?X-Amz-Signature=<redacted>" in output
    for written in (workdir / "report.json", workdir / "report.html", junit):
        text = written.read_text(encoding="utf-8")
        assert "SourceNotFound" in text, written
        assert SIGNATURE not in text, written
        assert ACCESS_KEY not in text, written
    assert SIGNATURE not in output
    assert ACCESS_KEY not in output


def test_status_condition_message_redacted():
    from modelconv.controller.status import set_condition

    conditions = set_condition(
        [], "Exported", "False", "SourceNotFound", f"no object at s3://b/m.onnx?{PRESIGNED_QUERY}",
        generation=1, now="2026-01-01T00:00:00Z",
    )

    assert SIGNATURE not in conditions[0]["message"]
    assert "s3://b/m.onnx?X-Amz-Signature=<redacted>" in conditions[0]["message"]


def test_internal_error_message_redacted(tmp_path):
    from modelconv.pipeline.run import RunOutcome, _guarded
    from modelconv.spec import parse_conversion

    outcome = RunOutcome(conversion=parse_conversion(linear_document()), store="s",
                         workdir=tmp_path)

    def fail():
        raise RuntimeError(f"GET https://127.0.0.1:1/m.onnx?{PRESIGNED_QUERY} failed")

    result = _guarded(outcome, "export", fail)

    assert result.reason == "InternalError"
    assert SIGNATURE not in result.message
    assert ACCESS_KEY not in result.message
