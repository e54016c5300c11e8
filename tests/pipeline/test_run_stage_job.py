"""`modelconv stage` against a local folder store, as a stage Job runs it (docs/stage-contract.md)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MODELCONV = str(Path(sys.executable).parent / "modelconv")
STAGES = ("export", "convert", "validate", "publish")
KEYS = {stage: hashlib.sha256(f"tiny-{stage}".encode()).hexdigest() for stage in STAGES}

CONVERSION = {
    "apiVersion": "modelconv.io/v1alpha1",
    "kind": "ModelConversion",
    "metadata": {"name": "tiny-linear", "namespace": "ml"},
    "spec": {
        "source": {
            "factory": {
                "entrypoint": "torch.nn:Linear",
                "kwargs": {"in_features": 5, "out_features": 2},
            }
        },
        "inputs": [{"name": "x", "shape": [1, 5]}],
        "outputs": [{"name": "y"}],
        "validation": {"samples": {"count": 2}},
        "publish": {"model": "tiny-linear", "version": "3.0.0"},
    },
}


def write_run_file(folder: Path, store: Path, conversion: dict = CONVERSION,
                   stages: dict = KEYS) -> Path:
    path = folder / "run.json"
    path.write_text(json.dumps({
        "apiVersion": "modelconv.io/run/v1",
        "conversion": conversion,
        "store": str(store),
        "stages": {stage: {"key": key} for stage, key in stages.items()},
    }))
    return path


def run_stage(stage: str, run_file: Path, termination: Path):
    env = dict(os.environ, MODELCONV_TERMINATION_LOG=str(termination))
    return subprocess.run([MODELCONV, "stage", stage, "--run", str(run_file)],
                          capture_output=True, text=True, env=env, timeout=900)


def cache(store: Path, stage: str) -> Path:
    return store / ".cache" / stage / KEYS[stage]


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    """export, convert, validate and publish, each as its own `modelconv stage` process."""
    folder = tmp_path_factory.mktemp("stage-job")
    store = folder / "store"
    run_file = write_run_file(folder, store)
    processes = {}
    for stage in STAGES:
        termination = folder / f"{stage}.termination"
        processes[stage] = (run_stage(stage, run_file, termination), termination)
    return store, run_file, processes, folder


def test_every_stage_exits_0(cluster_run):
    _, _, processes, _ = cluster_run
    for stage, (process, _) in processes.items():
        assert process.returncode == 0, f"{stage}: {process.stderr[-3000:]}"


def test_each_stage_writes_result_json(cluster_run):
    store = cluster_run[0]
    for stage in STAGES:
        result = json.loads((cache(store, stage) / "result.json").read_text())
        assert result["stage"] == stage
        assert result["succeeded"] is True
        assert result["finished"] >= result["started"]


def test_artifacts_match_their_recorded_digests(cluster_run):
    store = cluster_run[0]
    for stage in ("export", "convert"):
        result = json.loads((cache(store, stage) / "result.json").read_text())
        assert result["artifacts"]
        for entry in result["artifacts"].values():
            data = (cache(store, stage) / entry["file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert len(data) == entry["size"]


def test_package_folder_is_cached_as_zip(cluster_run):
    store = cluster_run[0]
    result = json.loads((cache(store, "convert") / "result.json").read_text())
    assert result["artifacts"]["mlpackage"]["file"] == "model.mlpackage.zip"


def test_validate_reads_artifacts_from_the_cache(cluster_run):
    store = cluster_run[0]
    result = json.loads((cache(store, "validate") / "result.json").read_text())
    runtimes = {name for name in ("onnxruntime", "coreml") if result["metrics"].get(name)}
    assert runtimes == {"onnxruntime", "coreml"}


def test_termination_message_is_one_json_line(cluster_run):
    _, _, processes, _ = cluster_run
    for stage, (_, termination) in processes.items():
        text = termination.read_text()
        assert "\n" not in text
        assert json.loads(text) == {"stage": stage, "succeeded": True, "reason": "",
                                    "message": json.loads(text)["message"]}
        assert len(text.encode()) <= 4096


def test_publish_stage_makes_the_release(cluster_run):
    store = cluster_run[0]
    folder = store / "tiny-linear" / "3.0.0"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.mlpackage.zip", "model.onnx", "report.json", "report.html"}
    report = json.loads((folder / "report.json").read_text())
    assert report["name"] == "tiny-linear"
    assert [stage["stage"] for stage in report["stages"]] == ["export", "convert", "validate"]


def test_publish_retry_after_release_succeeds(cluster_run):
    # A Job that stopped after the manifest but before result.json is retried: the report
    # must come out byte-identical, or the immutable version would refuse it.
    store, run_file, _, folder = cluster_run
    (cache(store, "publish") / "result.json").unlink()
    process = run_stage("publish", run_file, folder / "retry.termination")
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads((cache(store, "publish") / "result.json").read_text())
    assert result["succeeded"] is True
    assert result["metrics"]["created"] is False


def test_done_stage_rerun_is_cache_hit(cluster_run):
    store, run_file, _, folder = cluster_run
    before = (cache(store, "export") / "result.json").read_bytes()
    process = run_stage("export", run_file, folder / "again.termination")
    assert process.returncode == 0
    assert "already done" in process.stderr
    assert (cache(store, "export") / "result.json").read_bytes() == before


def test_permanent_failure_exits_2_and_records_the_reason(tmp_path):
    conversion = json.loads(json.dumps(CONVERSION))
    conversion["spec"]["source"] = {"torchscript": {"uri": str(tmp_path / "absent.pt")}}
    store = tmp_path / "store"
    termination = tmp_path / "termination"
    process = run_stage("export", write_run_file(tmp_path, store, conversion), termination)
    assert process.returncode == 2
    summary = json.loads(termination.read_text())
    assert summary["reason"] == "SourceNotFound"
    assert summary["succeeded"] is False
    result = json.loads((cache(store, "export") / "result.json").read_text())
    assert result["reason"] == "SourceNotFound"
    assert "Traceback" not in process.stderr


def test_missing_earlier_result_is_transient(tmp_path):
    termination = tmp_path / "termination"
    process = run_stage("validate", write_run_file(tmp_path, tmp_path / "store"), termination)
    assert process.returncode == 1
    summary = json.loads(termination.read_text())
    assert summary["reason"] == "StoreUnavailable"
    assert "export" in summary["message"]
    assert not (tmp_path / "store" / ".cache" / "validate").exists()


def test_invalid_conversion_in_run_file_exits_2(tmp_path):
    conversion = json.loads(json.dumps(CONVERSION))
    conversion["spec"]["outputs"] = []
    termination = tmp_path / "termination"
    process = run_stage("export", write_run_file(tmp_path, tmp_path / "store", conversion),
                        termination)
    assert process.returncode == 2
    summary = json.loads(termination.read_text())
    assert summary["reason"] == "InvalidSpec"
    assert summary["message"].startswith("spec.outputs")


def test_missing_run_file_exits_2(tmp_path):
    termination = tmp_path / "termination"
    process = run_stage("export", tmp_path / "absent.json", termination)
    assert process.returncode == 2
    assert "run file not found" in json.loads(termination.read_text())["message"]


def test_publish_carries_device_results_and_compiled_model(cluster_run, tmp_path):
    # The device stage has no Job: the controller writes its result.json from the
    # CoreMLCheck. Here that check status is built by hand as a coreml runner on a Mac
    # would report it, since no Mac runs in the tests.
    import jsonschema

    from modelconv.controller.device import device_result
    from modelconv.pipeline.stage_job import write_result_document
    from modelconv.runner.checks import CheckEvaluation, DeviceDecision
    from modelconv.runner.resource import CHECKS_PASSED, UnitResult
    from modelconv.store import open_store

    store = cluster_run[0]
    keys = dict(KEYS, device=hashlib.sha256(b"tiny-device").hexdigest(),
                publish=hashlib.sha256(b"tiny-publish-device").hexdigest())
    compiled_key = f".cache/device/{keys['device']}/tiny-linear-check/model.mlmodelc.zip"
    compiled_bytes = b"PK\x05\x06" + bytes(18)  # an empty zip archive
    (store / compiled_key).parent.mkdir(parents=True)
    (store / compiled_key).write_bytes(compiled_bytes)
    unit = UnitResult(backend="coreml", compute_unit="cpuOnly", passed=True,
                      max_abs_error=2e-4, cosine=0.99999, latency_p50_ms=0.8,
                      latency_p90_ms=1.1, load_ms=40.0, compile_ms=310.0)
    evaluation = CheckEvaluation(state="Succeeded", reason=CHECKS_PASSED, message="",
                                 device_verified=True, results=(unit,),
                                 compiled_model_key=compiled_key, runner="mac-mini-1")
    decision = DeviceDecision(status="True", reason=CHECKS_PASSED, message="all checks passed",
                              publish=True)
    document = device_result(evaluation, decision, keys["device"],
                             "2026-01-02T03:04:05Z", "2026-01-02T03:05:05Z")
    write_result_document(open_store(str(store)), "device", keys["device"], document)

    conversion = json.loads(json.dumps(CONVERSION))
    conversion["spec"]["publish"]["version"] = "3.1.0"
    conversion["spec"]["validation"]["device"] = {"enabled": True}
    run_file = write_run_file(tmp_path, store, conversion, keys)
    process = run_stage("publish", run_file, tmp_path / "termination")
    assert process.returncode == 0, process.stderr[-3000:]

    folder = store / "tiny-linear" / "3.1.0"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "model.mlmodelc.zip" in manifest["files"]
    assert (folder / "model.mlmodelc.zip").read_bytes() == compiled_bytes
    device = manifest["device"]
    assert device["backend"] == "coreml"
    assert device["verified"] is True
    assert device["reason"] == "ChecksPassed"
    assert device["runner"] == "mac-mini-1"
    assert device["results"] == [{
        "computeUnits": "cpuOnly", "passed": True, "maxAbsError": 2e-4, "cosine": 0.99999,
        "latencyMs": {"p50": 0.8, "p90": 1.1}, "loadMs": 40.0, "compileMs": 310.0}]
    schema = json.loads((Path(__file__).resolve().parents[2] / "docs"
                         / "manifest.schema.json").read_text())
    jsonschema.validate(manifest, schema)
    report = json.loads((folder / "report.json").read_text())
    assert [stage["stage"] for stage in report["stages"]] == [
        "export", "convert", "validate", "device"]
    assert "device" not in report["skipped"]
    page = (folder / "report.html").read_text()
    assert "<h2>On-device check</h2>" in page
    assert "verified on a device" in page
    assert "mac-mini-1" in page


def test_missing_credentials_name_store_secret(tmp_path):
    termination = tmp_path / "termination"
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps({
        "apiVersion": "modelconv.io/run/v1", "conversion": CONVERSION,
        "store": "s3://releases/models", "stages": {"export": {"key": KEYS["export"]}}}))
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    # No credentials anywhere, so the request fails before it is sent (port 9 is discard).
    env.update(MODELCONV_TERMINATION_LOG=str(termination), AWS_EC2_METADATA_DISABLED="true",
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "absent"),
               AWS_CONFIG_FILE=str(tmp_path / "absent"),
               MODELCONV_S3_ENDPOINT="http://127.0.0.1:9")
    process = subprocess.run([MODELCONV, "stage", "export", "--run", str(run_file)],
                             capture_output=True, text=True, env=env, timeout=300)
    summary = json.loads(termination.read_text())
    assert process.returncode == 2, process.stderr
    assert summary["reason"] == "AccessDenied"
    assert "no usable AWS credentials" in summary["message"]
    assert "--store-secret" in summary["message"]
    assert "Traceback" not in process.stderr
