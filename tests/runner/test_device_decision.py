"""Controller-side decisions that need no cluster: check manifests and DeviceVerified."""

from __future__ import annotations

import datetime

import pytest

from modelconv.runner.checks import (
    CheckEvaluation,
    CheckObjects,
    check_manifest,
    check_name,
    device_decision,
    requirements_for,
)
from modelconv.runner.resource import UnitResult
from modelconv.spec import ConversionSpec, DeviceCheck

NOW = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.timezone.utc)
OBJECTS = CheckObjects(package="cache/convert/k/model.mlpackage.zip",
                       inputs="cache/validate/k/samples.safetensors",
                       expected_outputs="cache/validate/k/samples.safetensors",
                       report="cache/device/k/report.json",
                       compiled_model="cache/device/k/model.mlmodelc.zip")


class LoopbackPresigner:
    """Signs nothing: returns URLs shaped like presigned ones, for manifest tests."""

    def presign_get(self, key: str, expires_seconds: int) -> str:
        return f"http://127.0.0.1:9/bucket/{key}?X-Amz-Expires={expires_seconds}&X-Amz-Signature=get"

    def presign_put(self, key: str, expires_seconds: int) -> str:
        return f"http://127.0.0.1:9/bucket/{key}?X-Amz-Expires={expires_seconds}&X-Amz-Signature=put"


def _spec(**device) -> ConversionSpec:
    return ConversionSpec.model_validate({
        "source": {"onnx": {"uri": "model.onnx"}},
        "inputs": [{"name": "x", "shape": [1, 8]}],
        "outputs": [{"name": "y"}],
        "validation": {"atol": 0.01, "rtol": 0.0, "minCosine": 0.99,
                       "device": {"enabled": True, **device}},
        "publish": {"model": "tiny", "version": "1"},
    })


def _conversion(namespace: str) -> dict:
    return {"apiVersion": "modelconv.io/v1alpha1", "kind": "ModelConversion",
            "metadata": {"name": "tiny", "namespace": namespace, "uid": "1234-abcd"}}


def test_manifest_carries_urls_tolerances_and_deadline():
    manifest = check_manifest(_conversion("pool"), _spec(computeUnits=["cpuOnly"]), "f" * 64,
                              OBJECTS, LoopbackPresigner(), namespace="pool", now=NOW,
                              timeout_seconds=600, heartbeat_seconds=2)
    spec = manifest["spec"]
    assert manifest["metadata"]["name"] == check_name("tiny", "f" * 64)
    assert spec["package"]["key"] == OBJECTS.package
    assert spec["package"]["url"].endswith("X-Amz-Signature=get")
    assert spec["reportUpload"]["url"].endswith("X-Amz-Signature=put")
    assert spec["package"]["expiresAt"] == "2026-12-04T12:20:00.000000Z"
    assert spec["deadline"] == "2026-12-04T12:10:00.000000Z"
    assert spec["tolerances"] == {"atol": 0.01, "rtol": 0.0, "minCosine": 0.99}
    assert spec["computeUnits"] == ["cpuOnly"]
    assert spec["heartbeatSeconds"] == 2
    assert "status" not in manifest


def test_manifest_is_owned_only_in_the_conversion_namespace():
    same = check_manifest(_conversion("pool"), _spec(), "a" * 64, OBJECTS, LoopbackPresigner(),
                          namespace="pool", now=NOW)
    other = check_manifest(_conversion("team-a"), _spec(), "a" * 64, OBJECTS,
                           LoopbackPresigner(), namespace="pool", now=NOW)
    assert same["metadata"]["ownerReferences"][0]["uid"] == "1234-abcd"
    assert "ownerReferences" not in other["metadata"]
    assert other["metadata"]["annotations"]["modelconv.io/conversion-namespace"] == "team-a"


def test_check_name_fits_a_label_value():
    assert len(check_name("x" * 63, "0123456789abcdef" * 4)) <= 63


def test_required_check_needs_the_coreml_backend():
    assert requirements_for(DeviceCheck(required=True, chip="m2")).backend == "coreml"
    assert requirements_for(DeviceCheck(required=False)).backend is None


def _result(backend: str, passed: bool = True) -> UnitResult:
    return UnitResult(backend=backend, compute_unit="cpuOnly" if backend == "coreml" else None,
                      passed=passed)


@pytest.mark.parametrize("evaluation, required, expected", [
    (CheckEvaluation("Succeeded", "ChecksPassed", "2 of 2 passed", device_verified=True,
                     results=(_result("coreml"),)), True, ("True", "ChecksPassed", True)),
    (CheckEvaluation("Succeeded", "ChecksPassed", "1 of 1 passed",
                     results=(_result("mil-reference"),)), False, ("False", "ReferenceOnly", True)),
    (CheckEvaluation("Succeeded", "ChecksPassed", "1 of 1 passed",
                     results=(_result("mil-reference"),)), True, ("False", "ReferenceOnly", False)),
    (CheckEvaluation("NoRunnerAvailable", "NoRunnerAvailable", "no runner", retry_after=15),
     False, ("False", "Skipped", True)),
    (CheckEvaluation("NoRunnerAvailable", "NoRunnerAvailable", "no runner", retry_after=15),
     True, ("False", "NoRunnerAvailable", None)),
    (CheckEvaluation("Failed", "RunnerLost", "gone"), False, ("False", "Skipped", True)),
    (CheckEvaluation("Failed", "RunnerLost", "gone"), True, ("False", "RunnerLost", False)),
    (CheckEvaluation("Failed", "RunnerError", "OSError: disk full"), False,
     ("False", "Skipped", True)),
    (CheckEvaluation("Failed", "RunnerError", "OSError: disk full"), True,
     ("False", "RunnerError", False)),
    (CheckEvaluation("Failed", "ToleranceExceeded", "off"), False,
     ("False", "ToleranceExceeded", False)),
    (CheckEvaluation("Claimed", "CheckRunning", "busy", retry_after=2), True,
     ("Unknown", "CheckRunning", None)),
    (CheckEvaluation("Pending", "CheckPending", "waiting", retry_after=5), True,
     ("Unknown", "CheckPending", None)),
])
def test_device_decision(evaluation, required, expected):
    decision = device_decision(evaluation, required)
    assert (decision.status, decision.reason, decision.publish) == expected
    assert decision.condition()["type"] == "DeviceVerified"
