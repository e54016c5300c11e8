"""The Argo CD health check (docs/argocd-health.lua) run by a Lua 5.1 interpreter.

Argo CD evaluates health checks with gopher-lua, a Lua 5.1 implementation; lupa's lua51
module is the reference interpreter of that language version. The script gets the resource
as the global `obj` and returns a table with `status` and `message`.
"""

from __future__ import annotations

import re
from pathlib import Path

from lupa import lua51

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "argocd-health.lua"


def to_lua(runtime, value):
    """Convert JSON-like Python values to Lua values, lists becoming 1-based tables."""
    if isinstance(value, dict):
        return runtime.table_from({key: to_lua(runtime, item) for key, item in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, item) for item in value])
    return value


def evaluate(resource: dict) -> dict:
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = to_lua(runtime, resource)
    result = runtime.execute(SCRIPT.read_text())
    return {"status": result["status"], "message": result["message"]}


def condition(type_: str, status: str, reason: str, message: str = "", generation: int = 1):
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": "2026-12-04T10:00:00Z",
    }


def conversion(conditions: list[dict] | None, generation: int = 1) -> dict:
    resource = {
        "apiVersion": "modelconv.io/v1alpha1",
        "kind": "ModelConversion",
        "metadata": {"name": "mobilenet", "namespace": "ml", "generation": generation},
        "spec": {"publish": {"model": "mobilenet", "version": "1.0.0"}},
    }
    if conditions is not None:
        resource["status"] = {"observedGeneration": generation, "conditions": conditions}
    return resource


def test_resource_without_status_is_progressing():
    health = evaluate(conversion(None))
    assert health["status"] == "Progressing"
    assert "operator" in health["message"]


def test_running_stages_are_progressing():
    health = evaluate(conversion([
        condition("Exported", "True", "Exported", "model.onnx written"),
        condition("Converted", "False", "Running", "Job mobilenet-convert-1a2b is running"),
        condition("Ready", "False", "InProgress", "Converting"),
    ]))
    assert health["status"] == "Progressing"
    assert health["message"] == "Ready is False (InProgress): Converting"


def test_ready_resource_is_healthy_with_its_message():
    health = evaluate(conversion([
        condition("Exported", "True", "Exported"),
        condition("Converted", "True", "Converted"),
        condition("Validated", "True", "WithinTolerance"),
        condition("Published", "True", "Published"),
        condition("Ready", "True", "Published", "s3://models/mobilenet/1.0.0"),
    ]))
    assert health["status"] == "Healthy"
    assert health["message"] == "s3://models/mobilenet/1.0.0"


def test_failed_stage_is_degraded_with_its_message():
    health = evaluate(conversion([
        condition("Exported", "True", "Exported"),
        condition("Converted", "True", "Converted"),
        condition("Validated", "False", "ToleranceExceeded",
                  "output logits: max abs error 0.31 > atol 0.05; raise atol or use float32"),
        condition("Ready", "False", "ToleranceExceeded", "Validation failed"),
    ]))
    assert health["status"] == "Degraded"
    assert health["message"] == (
        "Validated is False (ToleranceExceeded): output logits: max abs error 0.31 > atol 0.05;"
        " raise atol or use float32"
    )


def test_first_failed_stage_in_pipeline_order_is_reported():
    health = evaluate(conversion([
        condition("Published", "False", "Pending"),
        condition("DeviceVerified", "False", "NoRunnerAvailable", "no live runner matches m2"),
        condition("Converted", "False", "UnsupportedOperator", "op new_ones has no converter"),
        condition("Ready", "False", "UnsupportedOperator", "Conversion failed"),
    ]))
    assert health["status"] == "Degraded"
    assert health["message"].startswith("Converted is False (UnsupportedOperator)")


def test_ready_false_with_failure_reason_and_no_stage_is_degraded():
    health = evaluate(conversion([
        condition("Ready", "False", "InvalidSpec", "spec.inputs[0].shape: range 8..4 needs MIN < MAX"),
    ]))
    assert health["status"] == "Degraded"
    assert "InvalidSpec" in health["message"]


def test_unobserved_spec_change_is_progressing_even_when_ready():
    resource = conversion([condition("Ready", "True", "Published", "s3://m/1.0.0", generation=1)],
                          generation=2)
    health = evaluate(resource)
    assert health["status"] == "Progressing"
    assert health["message"] == "Waiting for the operator to observe generation 2"


def test_stale_stage_failure_does_not_degrade_a_new_generation():
    resource = conversion([
        condition("Validated", "False", "ToleranceExceeded", "old failure", generation=1),
        condition("Ready", "False", "InProgress", "Validating", generation=2),
    ], generation=2)
    health = evaluate(resource)
    assert health["status"] == "Progressing"


def test_ready_unknown_is_progressing():
    health = evaluate(conversion([condition("Ready", "Unknown", "Pending", "Waiting for a runner")]))
    assert health["status"] == "Progressing"


def test_waiting_reasons_are_the_controllers_non_failure_reasons():
    from modelconv.controller import status

    script = SCRIPT.read_text()
    table = script[script.index("local waiting_reasons = {"):]
    table = table[:table.index("}")]
    listed = set(re.findall(r"^\s+([A-Za-z]+) = true,$", table, flags=re.MULTILINE))
    expected = {status.REASON_PENDING, status.REASON_RUNNING, status.REASON_IN_PROGRESS,
                status.REASON_SKIPPED}
    assert listed == expected
