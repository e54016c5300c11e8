"""Device stage records and conditions from check evaluations (modelconv.controller.device).

The end-to-end behavior against the control plane and a runner is in test_device_stage.py;
these cover each decision branch without a cluster.
"""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from modelconv.controller import device, summary
from modelconv.controller.jobs import ConversionRef
from modelconv.runner import checks
from modelconv.runner.resource import UnitResult
from modelconv.spec import ConversionSpec

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
BASE = {"key": "k" * 64, "check": "pool/mlp-device-0123456789ab", "started": "2026-01-01T11:59:00Z"}


class StoreUrls:
    """The part of a store that device records use: locations of keys."""

    def url_of(self, key: str) -> str:
        return f"s3://bucket/releases/{key}"


@dataclasses.dataclass
class Run:
    spec: ConversionSpec
    now: datetime.datetime = NOW

    @property
    def timestamp(self) -> str:
        return "2026-01-01T12:00:00Z"


def spec(required: bool) -> ConversionSpec:
    return ConversionSpec.model_validate({
        "source": {"factory": {"entrypoint": "m:f"}},
        "inputs": [{"name": "x", "shape": [1]}], "outputs": [{"name": "o"}],
        "publish": {"model": "m", "version": "1"},
        "validation": {"device": {"enabled": True, "required": required}},
    })


def unit(backend: str, passed: bool = True, latency: float = 2.0, compute_unit=None):
    return UnitResult(backend=backend, compute_unit=compute_unit, passed=passed,
                      max_abs_error=1e-6, cosine=1.0, latency_p50_ms=latency, message="detail")


def record_for(evaluation: checks.CheckEvaluation, required: bool) -> dict:
    decision = checks.device_decision(evaluation, required)
    return device._record(BASE, evaluation, decision, Run(spec(required)), StoreUrls())


def test_coreml_results_verify_the_device():
    evaluation = checks.CheckEvaluation(
        "Succeeded", "ChecksPassed", "all passed", device_verified=True,
        results=(unit("coreml", compute_unit="cpuOnly", latency=3.0),
                 unit("coreml", compute_unit="all", latency=1.5)),
        report_key=".cache/device/k/r/report.json", runner="studio-1", attempts=1)
    record = record_for(evaluation, required=True)
    assert record["state"] == "Succeeded"
    assert record["runner"] == "studio-1"
    assert record["report"] == "s3://bucket/releases/.cache/device/k/r/report.json"
    assert [item["computeUnit"] for item in record["results"]] == ["cpuOnly", "all"]
    assert all("message" not in item for item in record["results"])
    assert summary.stage_condition("device", record, "") == ("True", "ChecksPassed", "all passed")
    assert device.device_metrics({"cosine": 1.0}, record) == {"cosine": 1.0,
                                                               "deviceLatencyP50Ms": 1.5}


def test_reference_results_are_reference_only():
    evaluation = checks.CheckEvaluation(
        "Succeeded", "ChecksPassed", "all passed", device_verified=False,
        results=(unit("mil-reference"),), runner="linux-1", attempts=1)
    record = record_for(evaluation, required=False)
    assert record["state"] == "Skipped"
    assert record["reason"] == "ReferenceOnly"
    status, reason, _ = summary.stage_condition("device", record, "")
    assert (status, reason) == ("False", "ReferenceOnly")
    assert device.device_metrics(None, record) is None


@pytest.mark.parametrize("required, state, reason, status", [
    (False, "Skipped", "Skipped", "False"),
    (True, "Running", "NoRunnerAvailable", "False"),
])
def test_no_runner_skips_or_waits_by_required(required, state, reason, status):
    evaluation = checks.CheckEvaluation("NoRunnerAvailable", "NoRunnerAvailable",
                                        "no live runner matches", retry_after=15.0)
    record = record_for(evaluation, required=required)
    assert record["state"] == state
    assert record["reason"] == reason
    assert summary.stage_condition("device", record, "")[:2] == (status, reason)


def test_runner_lost_fails_required_check():
    evaluation = checks.CheckEvaluation("Failed", "RunnerLost", "no heartbeat", attempts=3)
    record = record_for(evaluation, required=True)
    assert record["state"] == "Failed"
    assert record["reason"] == "RunnerLost"
    assert record["attempts"] == 3
    assert summary.ready_condition(("device",), {"device": record}, None)[:2] == (
        "False", "RunnerLost")


def test_claimed_check_is_running():
    evaluation = checks.CheckEvaluation("Claimed", "CheckRunning",
                                        "runner mini-1 is running attempt 2", attempts=2)
    record = record_for(evaluation, required=True)
    assert record["state"] == "Running"
    assert record["attempts"] == 2
    status, reason, message = summary.stage_condition("device", record, "")
    assert (status, reason) == ("Unknown", "CheckRunning")
    assert "mini-1" in message
    ready = summary.ready_condition(("device",), {"device": record}, None)
    assert ready[0] == "Unknown"
    assert "CoreMLCheck pool/mlp-device-0123456789ab" in ready[2]


def test_device_failure_fails_optional_check():
    evaluation = checks.CheckEvaluation("Failed", "ToleranceExceeded", "y differs",
                                        results=(unit("coreml", passed=False),))
    record = record_for(evaluation, required=False)
    assert record["state"] == "Failed"
    assert record["reason"] == "ToleranceExceeded"


def test_unpresignable_store_skips_or_fails():
    optional = device._unavailable(BASE, Run(spec(False)), "PresignUnsupported", "folder store")
    assert optional["state"] == "Skipped"
    assert optional["reason"] == "Skipped"
    assert "folder store" in optional["message"]
    required = device._unavailable(BASE, Run(spec(True)), "PresignUnsupported", "folder store")
    assert required["state"] == "Failed"
    assert required["reason"] == "PresignUnsupported"


def test_check_names_are_deterministic():
    first = ConversionRef(name="mlp", namespace="team", uid="uid-1")
    again = ConversionRef(name="mlp", namespace="team", uid="uid-1")
    recreated = ConversionRef(name="mlp", namespace="team", uid="uid-2")
    assert device.check_name_of(first, "a" * 64) == device.check_name_of(again, "a" * 64)
    assert device.check_name_of(first, "a" * 64) != device.check_name_of(recreated, "a" * 64)
    assert device.check_name_of(first, "a" * 64) != device.check_name_of(first, "b" * 64)
    assert len(device.check_name_of(ConversionRef("x" * 63, "ns", "u"), "a" * 64)) <= 63


def test_check_objects_point_at_the_convert_stage_artifacts():
    result = {"artifacts": {"mlpackage": {"file": "model.mlpackage.zip", "sha256": "1" * 64},
                            "samples": {"file": "samples.safetensors", "sha256": "2" * 64}}}
    objects = device._check_objects(result, "c" * 64, "d" * 64, "mlp-device-0123")
    assert objects.package == f".cache/convert/{'c' * 64}/model.mlpackage.zip"
    assert objects.package_sha256 == "1" * 64
    assert objects.inputs == objects.expected_outputs
    assert objects.inputs_sha256 == "2" * 64
    assert objects.report == f".cache/device/{'d' * 64}/mlp-device-0123/report.json"
    with pytest.raises(ValueError, match="delete that cache folder"):
        device._check_objects({"artifacts": {}}, "c" * 64, "d" * 64, "x")
