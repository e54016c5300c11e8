"""Synthetic models through export, convert and validate, with asserted tolerances."""

from __future__ import annotations

import pytest
from conftest import make_spec

from modelconv.pipeline.runtimes import COREML_EXECUTED_FP16, COREML_EXECUTED_FP32

ZOO = {
    "convnet-image": dict(
        source="convnet",
        inputs=[{"name": "image", "shape": [1, 3, 16, 16], "image": {"scale": 0.0078, "bias": [-1.0]}}],
    ),
    "attention-ranged": dict(source="attention", inputs=[{"name": "tokens", "shape": [1, "2..12", 16]}]),
    "lstm": dict(source="recurrent", inputs=[{"name": "sequence", "shape": [1, 5, 6]}], outputs=("output", "hidden")),
    "interpolation": dict(source="interpolation", inputs=[{"name": "image", "shape": [1, 3, 8, 8]}]),
    "einsum-bilinear": dict(
        source="bilinear", inputs=[{"name": "left", "shape": [3, 5]}, {"name": "right", "shape": [3, 5]}]
    ),
    "layer-norm-tokens": dict(
        source="token_classifier",
        inputs=[
            {"name": "ids", "shape": [1, "1..10"], "dtype": "int32", "values": {"min": 0, "max": 50}},
            {"name": "mask", "shape": [1, "1..10"]},
        ],
    ),
    "convnet-float16": dict(
        source="convnet", inputs=[{"name": "image", "shape": [1, 3, 16, 16]}], precision="float16",
        validation={"atol": 1e-2, "rtol": 5e-2},
    ),
    "attention-auto": dict(
        source="attention", inputs=[{"name": "tokens", "shape": [1, 6, 16]}], precision="auto"
    ),
}


def zoo_spec(case: dict):
    case = dict(case)
    precision = case.pop("precision", "float32")
    return make_spec(coreml={"precision": precision}, **case)


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_converts_and_validates(pipeline_runs, executor_available, name):
    spec = zoo_spec(ZOO[name])
    run = pipeline_runs(name, spec)
    assert run.error is None, run.describe()

    metrics = run.validate.metrics
    atol = spec.validation.atol
    for comparison in metrics["onnxruntime"]:
        assert comparison["passed"], comparison["violations"]
        assert comparison["max_abs_error"] <= atol + spec.validation.rtol * 100
    assert run.convert.artifacts["mlpackage"].is_dir()
    assert run.convert.metrics["package_bytes"] > 0
    assert run.convert.metrics["mil_op_types"]
    if not executor_available:
        assert "not executed" in metrics["coreml_source"]
        return
    assert metrics["coreml_source"] in (COREML_EXECUTED_FP16, COREML_EXECUTED_FP32)
    for comparison in metrics["coreml"]:
        assert comparison["passed"], comparison["violations"]
        assert comparison["cosine"] >= spec.validation.min_cosine
    assert metrics["min_cosine"] >= spec.validation.min_cosine


def test_float32_programs_match_the_reference_closely(pipeline_runs, executor_available):
    if not executor_available:
        pytest.skip("modelconv.mil is not installed: the Core ML program cannot run on Linux")
    run = pipeline_runs("lstm", zoo_spec(ZOO["lstm"]))
    assert run.validate.metrics["coreml_source"] == COREML_EXECUTED_FP32
    assert run.validate.metrics["max_abs_error"] < 1e-4


def test_float16_program_is_reported_as_emulated(pipeline_runs, executor_available):
    run = pipeline_runs("convnet-float16", zoo_spec(ZOO["convnet-float16"]))
    assert run.error is None, run.describe()
    assert run.convert.metrics["fp16_op_fraction"] > 0.5
    if executor_available:
        assert run.validate.metrics["coreml_source"] == COREML_EXECUTED_FP16


def test_auto_precision_reports_the_fraction_left_in_float16(pipeline_runs, executor_available):
    run = pipeline_runs("attention-auto", zoo_spec(ZOO["attention-auto"]))
    assert run.error is None, run.describe()
    precision = run.convert.metrics["precision"]
    if executor_available:
        assert precision.startswith("auto: ")
        assert "of ops in float16" in precision or "float32" in precision
    else:
        assert precision.startswith("float32: precision auto needs the reference executor")
        assert run.convert.metrics["fp16_op_fraction"] == 0


def test_ranged_inputs_become_range_dims_in_the_package(pipeline_runs):
    import coremltools as ct

    run = pipeline_runs("layer-norm-tokens", zoo_spec(ZOO["layer-norm-tokens"]))
    assert run.error is None, run.describe()
    description = ct.utils.load_spec(str(run.convert.artifacts["mlpackage"])).description
    for feature in description.input:
        ranges = feature.type.multiArrayType.shapeRange.sizeRanges
        assert (ranges[1].lowerBound, ranges[1].upperBound) == (1, 10)
    # Sample 0 used the minimum length and sample 1 the maximum; both validated.
    assert run.export.metrics["samples"] == 3


def test_image_inputs_become_image_types(pipeline_runs):
    import coremltools as ct

    run = pipeline_runs("convnet-image", zoo_spec(ZOO["convnet-image"]))
    assert run.error is None, run.describe()
    feature = ct.utils.load_spec(str(run.convert.artifacts["mlpackage"])).description.input[0]
    assert feature.type.WhichOneof("Type") == "imageType"
    assert (feature.type.imageType.width, feature.type.imageType.height) == (16, 16)
