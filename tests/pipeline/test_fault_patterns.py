"""Patterns that coremltools 9.0 converts wrongly or not at all, and what modelconv makes of them.

Each must end as a classified failure or a validated, correct package; never a package that
is silently wrong.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PipelineRun, make_spec

from modelconv.pipeline.runtimes import COREML_EXECUTED_FP16, COREML_EXECUTED_FP32


def pattern_spec(factory, inputs, precision="float32", **sections):
    return make_spec(factory, inputs=inputs, coreml={"precision": precision}, **sections)


def assert_validated(run, executor_available, expected_source=COREML_EXECUTED_FP32):
    assert run.error is None, run.describe()
    metrics = run.validate.metrics
    if executor_available:
        assert metrics["coreml_source"] == expected_source
        assert all(item["passed"] for item in metrics["coreml"])
    else:
        assert "not executed" in metrics["coreml_source"]


def test_diagonal_keeps_its_shape(pipeline_runs, executor_available):
    run = pipeline_runs("diagonal", pattern_spec("diagonal", [{"name": "x", "shape": [5, 5]}]))
    assert_validated(run, executor_available)
    assert run.convert.metrics["mil_op_types"].get("band_part") is None
    assert "gather_nd" in run.convert.metrics["mil_op_types"]
    if executor_available:
        assert run.validate.metrics["coreml"][0]["shape"] == [5]


def test_triu_of_negative_infinity_has_no_nan(pipeline_runs, executor_available, tmp_path_factory):
    recorded = tmp_path_factory.mktemp("triu") / "inf.npz"
    values = np.full((2, 3, 3), -np.inf, np.float32)
    values[1, 0, 0] = 2.0
    np.savez(recorded, x=values)
    spec = pattern_spec(
        "upper_triangle",
        [{"name": "x", "shape": [3, 3]}],
        validation={"samplesFile": {"uri": str(recorded)}},
    )
    run = pipeline_runs("triu", spec)
    assert_validated(run, executor_available)
    assert "select" in run.convert.metrics["mil_op_types"]


def test_ellipsis_einsum_converts_through_decompositions(pipeline_runs, executor_available):
    inputs = [{"name": "t", "shape": [2, 3]}, {"name": "f", "shape": [3]}]
    run = pipeline_runs("einsum", pattern_spec("outer_einsum", inputs))
    assert_validated(run, executor_available)
    attempts = run.convert.metrics["attempts"]
    assert [item["path"] for item in attempts] == ["torch.export", "torch.export+decompositions"]
    assert not attempts[0]["succeeded"]
    assert "perm" in attempts[0]["error"]
    assert run.convert.metrics["path"] == "torch.export+decompositions"


def test_in_place_mask_or_converts_to_logical_or(pipeline_runs, executor_available):
    inputs = [{"name": "x", "shape": [1, 1, 8, 8]}, {"name": "y", "shape": [1, 1, 8, 8]}]
    run = pipeline_runs("mask-or", pattern_spec("mask_or", inputs, outputs=("mask",)))
    assert_validated(run, executor_available)
    assert "logical_or" in run.convert.metrics["mil_op_types"]


def test_in_place_mask_or_converts_on_the_trace_path_too(pipeline_runs, executor_available):
    inputs = [{"name": "x", "shape": [1, 1, 8, 8]}, {"name": "y", "shape": [1, 1, 8, 8]}]
    spec = pattern_spec("mask_or", inputs, outputs=("mask",))
    spec = spec.model_copy(update={"coreml": spec.coreml.model_copy(update={"path": "trace"})})
    run = pipeline_runs("mask-or-trace", spec)
    assert_validated(run, executor_available)
    assert run.convert.metrics["path"] == "jit.trace"


def test_bicubic_upsampling_converts_through_decompositions(pipeline_runs, executor_available):
    run = pipeline_runs("bicubic", pattern_spec("bicubic", [{"name": "x", "shape": [1, 3, 32, 32]}]))
    assert_validated(run, executor_available)
    attempts = run.convert.metrics["attempts"]
    assert attempts[0]["operator"] == "upsample_bicubic2d.vec"
    assert run.convert.metrics["path"] == "torch.export+decompositions"


def test_bicubic_upsampling_on_the_trace_path_is_unsupported_operator(tmp_path):
    spec = pattern_spec("bicubic", [{"name": "x", "shape": [1, 3, 32, 32]}])
    spec = spec.model_copy(update={"coreml": spec.coreml.model_copy(update={"path": "trace"})})
    run = PipelineRun(spec, tmp_path)
    assert run.failed_stage == "convert"
    assert run.error.reason == "UnsupportedOperator"
    assert "'upsample_bicubic2d' on jit.trace" in run.error.message


def test_float32_minimum_mask_survives_float16(pipeline_runs, executor_available):
    spec = pattern_spec("masked_softmax", [{"name": "scores", "shape": [4, 4]}], precision="float16")
    run = pipeline_runs("masked-softmax-fp16", spec)
    assert_validated(run, executor_available, expected_source=COREML_EXECUTED_FP16)
    assert run.convert.metrics["fp16_op_fraction"] > 0
    if executor_available:
        assert np.isfinite(run.validate.metrics["coreml"][0]["max_abs_error"])


@pytest.mark.parametrize("precision", ["float16", "auto"])
def test_float32_minimum_mask_in_other_precisions(pipeline_runs, executor_available, precision):
    spec = pattern_spec("masked_softmax", [{"name": "scores", "shape": [4, 4]}], precision=precision)
    run = pipeline_runs(f"masked-softmax-{precision}", spec)
    assert run.error is None, run.describe()
