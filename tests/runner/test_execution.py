"""Running one check with the mil-reference backend against the real S3 server.

Each case is a check as a runner gets it: presigned URLs of the moto server on loopback, a
real converted package and samples, and the report PUT back through its presigned URL.
"""

from __future__ import annotations

import datetime
import json
import threading

import numpy as np
import pytest
from runner_fixtures import broken_package_zip, manifest_for, upload_check_objects

from modelconv.runner.artifacts import http_session, write_samples
from modelconv.runner.backends.reference import ReferenceBackend
from modelconv.runner.execution import CheckContext, execute_check
from modelconv.runner.resource import CheckSpec, utc_now

CONTEXT = CheckContext("conv-run-device-run", "pool", "linux-1", {"backend": "mil-reference"}, 1)


def _run(store, tmp_path, objects, run: str, edit=None, **settings):
    manifest = manifest_for(store, objects, "pool", run, **settings)
    if edit:
        edit(manifest["spec"])
    spec = CheckSpec.model_validate(manifest["spec"])
    backend = ReferenceBackend()
    backend.prepare()
    return execute_check(spec, backend, CONTEXT, tmp_path / "work", http_session(),
                         threading.Event())


def _report(store, key: str) -> dict:
    return json.loads(store.get_bytes(key))


def test_matching_check_succeeds_and_uploads_report(s3_store, tmp_path, tiny_model):
    objects = upload_check_objects(s3_store, "ok", tiny_model.package_zip,
                                   tiny_model.samples_safetensors)
    outcome = _run(s3_store, tmp_path, objects, "ok")
    assert outcome.succeeded, outcome.message
    assert outcome.reason == "ChecksPassed"
    assert len(outcome.results) == 1
    result = outcome.results[0]
    assert result.backend == "mil-reference"
    assert result.compute_unit is None
    assert result.max_abs_error < 1e-5
    assert result.latency_p50_ms is not None and result.load_ms is not None
    assert outcome.report_key == objects.report
    # mil-reference compiles nothing, so no compiled model is uploaded.
    assert outcome.compiled_model_key is None
    assert s3_store.head(objects.compiled_model) is None
    report_text = s3_store.get_bytes(objects.report).decode()
    report = json.loads(report_text)
    assert report["backend"] == "mil-reference"
    assert report["objects"]["package"] == objects.package
    assert len(report["latenciesMs"]["None"]) == 5
    for secret in ("X-Amz", "Signature", "AWSAccessKeyId", "http://"):
        assert secret not in report_text


def test_outputs_beyond_tolerance_fail(s3_store, tmp_path, tiny_model):
    shifted = [{"y": sample["y"] + 1.0} for sample in tiny_model.outputs]
    objects = upload_check_objects(s3_store, "off", tiny_model.package_zip,
                                   tiny_model.samples_safetensors, write_samples(shifted))
    outcome = _run(s3_store, tmp_path, objects, "off")
    assert not outcome.succeeded
    assert outcome.reason == "ToleranceExceeded"
    result = outcome.results[0]
    assert not result.passed
    assert result.max_abs_error == pytest.approx(1.0, abs=1e-4)
    assert "3 of 3 output comparisons failed" in result.message
    assert _report(s3_store, objects.report)["reason"] == "ToleranceExceeded"


def test_unloadable_package_fails_check(s3_store, tmp_path, tiny_model):
    objects = upload_check_objects(s3_store, "broken", broken_package_zip(),
                                   tiny_model.samples_safetensors)
    outcome = _run(s3_store, tmp_path, objects, "broken")
    assert not outcome.succeeded
    assert outcome.reason == "PackageLoadFailed"
    assert outcome.results[0].reason == "PackageLoadFailed"
    assert outcome.message.startswith("the package does not load:")


def test_expired_urls_fail_with_url_expired(s3_store, tmp_path, tiny_model):
    objects = upload_check_objects(s3_store, "late", tiny_model.package_zip,
                                   tiny_model.samples_safetensors)
    past = (utc_now() - datetime.timedelta(seconds=1)).isoformat()

    def expire_package(spec: dict) -> None:
        spec["package"]["expiresAt"] = past

    outcome = _run(s3_store, tmp_path, objects, "late", edit=expire_package)
    assert not outcome.succeeded
    assert outcome.reason == "UrlExpired"
    assert objects.package in outcome.message
    assert outcome.results == []


def test_digest_mismatch_fails_download(s3_store, tmp_path, tiny_model):
    objects = upload_check_objects(s3_store, "digest", tiny_model.package_zip,
                                   tiny_model.samples_safetensors)

    def wrong_digest(spec: dict) -> None:
        spec["package"]["sha256"] = "0" * 64

    outcome = _run(s3_store, tmp_path, objects, "digest", edit=wrong_digest)
    assert outcome.reason == "DownloadFailed"
    assert "expected 0000" in outcome.message


def test_missing_object_fails_download_with_s3_code(s3_store, tmp_path, tiny_model):
    objects = upload_check_objects(s3_store, "gone", tiny_model.package_zip,
                                   tiny_model.samples_safetensors)
    s3_store.client.delete_object(Bucket=s3_store.bucket, Key=f"pool/{objects.package}")
    outcome = _run(s3_store, tmp_path, objects, "gone")
    assert outcome.reason == "DownloadFailed"
    assert outcome.message == f"download of {objects.package} failed with HTTP 404 (NoSuchKey)"


def test_samples_count_mismatch_is_invalid_check_data(s3_store, tmp_path, tiny_model):
    objects = upload_check_objects(s3_store, "count", tiny_model.package_zip,
                                   tiny_model.samples_safetensors,
                                   write_samples(tiny_model.outputs[:1]))
    outcome = _run(s3_store, tmp_path, objects, "count")
    assert outcome.reason == "InvalidCheckData"
    assert "has 3 samples but" in outcome.message


def test_reference_outputs_equal_executor_outputs(tiny_model, tmp_path):
    """The samples fixture itself: PyTorch and the executor agree on the tiny model."""
    import io
    import zipfile

    from modelconv import mil

    zipfile.ZipFile(io.BytesIO(tiny_model.package_zip)).extractall(tmp_path)
    program = mil.load_program(tmp_path / "model.mlpackage")
    actual = mil.execute(program, tiny_model.inputs[0])["y"]
    np.testing.assert_allclose(actual, tiny_model.outputs[0]["y"], atol=1e-5)


def test_reference_backend_is_safe_across_threads(tiny_model, tmp_path):
    """An agent with concurrency > 1 runs several checks in threads of one process."""
    import io
    import zipfile

    from modelconv.runner.backends import BackendRequest

    zipfile.ZipFile(io.BytesIO(tiny_model.package_zip)).extractall(tmp_path)
    backend = ReferenceBackend()
    backend.prepare()
    runs = []

    def run_check() -> None:
        for _ in range(5):
            runs.append(backend.run(BackendRequest(
                package=tmp_path / "model.mlpackage", samples=tiny_model.inputs,
                compute_units=["cpuOnly"], warmup_runs=0, measured_runs=1, workdir=tmp_path)))

    threads = [threading.Thread(target=run_check) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(runs) == 15
    for run in runs:
        unit = run.units[0]
        assert unit.failure_reason is None, unit.failure_message
        np.testing.assert_allclose(unit.outputs[0]["y"], tiny_model.outputs[0]["y"], atol=1e-5)


def test_reference_backend_feeds_an_input_that_coremltools_renamed(tmp_path):
    """coremltools declares an input named `state` as `state_workaround`; samples keep `state`."""
    import coremltools as ct
    import torch

    from modelconv.runner.backends import BackendRequest

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2).eval()
    example = torch.randn(1, 4)
    converted = ct.convert(
        torch.jit.trace(model, example), inputs=[ct.TensorType(name="state", shape=(1, 4))],
        outputs=[ct.TensorType(name="y")], convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS16,
    )
    package = tmp_path / "model.mlpackage"
    converted.save(str(package))
    sample = {"state": example.numpy()}
    with torch.no_grad():
        expected = model(example).numpy()

    backend = ReferenceBackend()
    backend.prepare()
    run = backend.run(BackendRequest(
        package=package, samples=[sample], compute_units=[], warmup_runs=0, measured_runs=1,
        workdir=tmp_path, output_names=["y"]))

    unit = run.units[0]
    assert unit.failure_reason is None, unit.failure_message
    np.testing.assert_allclose(unit.outputs[0]["y"], expected, atol=1e-5)
