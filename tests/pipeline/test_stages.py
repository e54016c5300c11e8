"""Export, convert and validate failures, fallbacks and source kinds, stage by stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PipelineRun, make_spec

import conversion_zoo
from modelconv.errors import ConversionError
from modelconv.pipeline import ladder
from modelconv.pipeline.convert import run_convert
from modelconv.pipeline.export import run_export
from modelconv.pipeline.samples import Sample, save_samples
from modelconv.pipeline.stage import StageContext
from modelconv.pipeline.validate import run_validate

VECTOR = [{"name": "x", "shape": [4]}]


def needs_executor(executor_available):
    if not executor_available:
        pytest.skip("modelconv.mil is not installed: the Core ML program cannot run on Linux")


# --- export -----------------------------------------------------------------------------------


POSITIVE_VECTOR = [{"name": "x", "shape": [4], "values": {"min": 0.1, "max": 1.0}}]


def test_auto_export_falls_back_to_the_torchscript_exporter(tmp_path):
    # Positive inputs take the branch the TorchScript exporter records, so its ONNX is right.
    result = run_export(StageContext(make_spec("sign_branch", inputs=POSITIVE_VECTOR), tmp_path))
    attempts = result.metrics["attempts"]
    assert [item["path"] for item in attempts] == ["dynamo", "torchscript"]
    assert not attempts[0]["succeeded"]
    # torch.onnx's own first line is only advice; the attempt records torch.export's reason.
    assert "Could not guard on data-dependent expression" in attempts[0]["error"]
    assert "Next steps" not in attempts[0]["error"]
    assert "\x1b" not in attempts[0]["error"]
    assert result.metrics["exporter"] == "torchscript"
    assert result.artifacts["onnx"].is_file()
    assert result.artifacts["samples"].is_file()


def test_export_catches_a_branch_baked_in_by_the_torchscript_exporter(tmp_path):
    with pytest.raises(ConversionError) as error:
        run_export(StageContext(make_spec("sign_branch", inputs=VECTOR), tmp_path))
    assert error.value.reason == "ExportFailed"
    assert "ONNX Runtime disagrees with PyTorch" in error.value.message
    assert "(torchscript exporter)" in error.value.message


def test_export_fails_when_every_exporter_fails(tmp_path):
    spec = make_spec("inverse", inputs=[{"name": "x", "shape": [3, 3]}])
    with pytest.raises(ConversionError) as error:
        run_export(StageContext(spec, tmp_path))
    assert error.value.reason == "ExportFailed"
    assert "dynamo:" in error.value.message
    assert "torchscript:" in error.value.message
    assert "linalg_inv" in error.value.message
    # Both exporters ran, so neither is suggested.
    assert "export.exporter" not in error.value.message
    assert "No ONNX function found" in error.value.message
    assert "This is step" not in error.value.message
    assert "\x1b" not in error.value.message


def test_export_fails_when_onnx_runtime_disagrees_beyond_tolerance(tmp_path):
    spec = make_spec(
        "attention", inputs=[{"name": "tokens", "shape": [1, 4, 16]}],
        validation={"atol": 0, "rtol": 0, "minCosine": 1},
    )
    with pytest.raises(ConversionError) as error:
        run_export(StageContext(spec, tmp_path))
    assert error.value.reason == "ExportFailed"
    assert "output 'y'" in error.value.message
    assert "exceed atol + rtol * |expected|" in error.value.message


def test_export_with_an_explicit_exporter_makes_one_attempt(tmp_path):
    spec = make_spec("linear", inputs=[{"name": "x", "shape": ["1..5", 8]}], export={"exporter": "torchscript"})
    result = run_export(StageContext(spec, tmp_path))
    assert [item["path"] for item in result.metrics["attempts"]] == ["torchscript"]
    assert result.metrics["onnxruntime"][0]["passed"]


# --- convert ----------------------------------------------------------------------------------


def test_an_op_no_path_supports_is_unsupported_operator(tmp_path):
    with pytest.raises(ConversionError) as error:
        run_convert(StageContext(make_spec("bucketize", inputs=VECTOR), tmp_path))
    assert error.value.reason == "UnsupportedOperator"
    assert "'bucketize' on torch.export" in error.value.message
    assert "'bucketize' on jit.trace" in error.value.message


def test_a_wrong_translation_is_caught_and_ends_as_conversion_failed(tmp_path, monkeypatch):
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    # coremltools 9.0's own `diagonal` returns the whole (5, 5) band instead of (5,).
    ladder.coreml_fixes.install()
    monkeypatch.setitem(_TORCH_OPS_REGISTRY.name_to_func_mapping, "diagonal", ops.diagonal)
    spec = make_spec("diagonal", inputs=[{"name": "x", "shape": [5, 5]}])
    with pytest.raises(ConversionError) as error:
        run_convert(StageContext(spec, tmp_path))
    assert error.value.reason == "ConversionFailed"
    assert "declared shape (5, 5) differs from the reference shape (5,)" in error.value.message
    assert not (tmp_path / "model.mlpackage").exists()


def test_traced_data_dependent_branch_is_caught_by_the_executor(tmp_path, executor_available):
    needs_executor(executor_available)
    spec = make_spec("sign_branch", inputs=VECTOR, validation={"samples": {"count": 8}})
    with pytest.raises(ConversionError) as error:
        run_convert(StageContext(spec, tmp_path))
    assert error.value.reason == "ToleranceExceeded"
    assert "jit.trace: converted program is wrong" in error.value.message
    # The message names the first failed check of each rung, and the attempts keep up to five.
    (traced,) = [item for item in error.value.details["attempts"] if item["path"] == "jit.trace"]
    assert traced["error"].count("sample ") > 1
    assert error.value.message.count("sample ") == 1


def test_onnx_source_converts_through_onnx2torch(tmp_path):
    module = conversion_zoo.interpolation().eval()
    path = tmp_path / "interpolation.onnx"
    torch.onnx.export(
        module, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, input_names=["image"],
        output_names=["y"], opset_version=17,
    )
    spec = make_spec(source={"onnx": {"uri": str(path)}}, inputs=[{"name": "image", "shape": [1, 3, 8, 8]}])
    run = PipelineRun(spec, tmp_path / "run")
    assert run.error is None, run.describe()
    assert run.export.metrics["exporter"] == "passthrough"
    assert run.convert.metrics["attempts"][-1]["succeeded"]


def test_torchscript_source_converts_on_the_trace_rung(tmp_path):
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(conversion_zoo.linear().eval()), path)
    spec = make_spec(source={"torchscript": {"uri": str(path)}})
    run = PipelineRun(spec, tmp_path / "run")
    assert run.error is None, run.describe()
    assert run.convert.metrics["path"] == "jit.trace"


# --- validate ---------------------------------------------------------------------------------


def converted_package(factory: str, inputs, directory, precision="float32"):
    import coremltools as ct

    spec = make_spec(factory, inputs=inputs, coreml={"precision": precision})
    torch.manual_seed(0)
    module = getattr(conversion_zoo, factory)().eval()
    arguments = tuple(torch.zeros(item["shape"]) for item in inputs)
    program = torch.export.export(module, arguments).run_decompositions({})
    chosen = ct.precision.FLOAT16 if precision == "float16" else ct.precision.FLOAT32
    mlmodel = ladder.convert_program(spec, program, chosen, {"y": np.float32})
    path = directory / "model.mlpackage"
    mlmodel.save(str(path))
    return spec, path


def validate(spec, package, samples, directory):
    samples_path = save_samples(samples, directory / "samples.safetensors")
    inputs = {"samples": samples_path, "mlpackage": package}
    return run_validate(StageContext(spec, directory / "validate", inputs=inputs))


def test_validation_names_both_shapes_when_they_differ(tmp_path):
    spec, package = converted_package("diagonal", [{"name": "x", "shape": [5, 5]}], tmp_path)
    sample = Sample(inputs={"x": np.eye(5, dtype=np.float32)}, outputs={"y": np.ones((5, 5), np.float32)})
    with pytest.raises(ConversionError) as error:
        validate(spec, package, [sample], tmp_path)
    assert error.value.reason == "ToleranceExceeded"
    assert "(5,)" in error.value.message
    assert "(5, 5)" in error.value.message


def test_validation_fails_on_nan(tmp_path, executor_available):
    needs_executor(executor_available)
    spec, package = converted_package("logarithm", VECTOR, tmp_path)
    sample = Sample(
        inputs={"x": np.array([-1.0, 1.0, 2.0, 3.0], np.float32)},
        outputs={"y": np.array([0.0, 0.0, 0.6931472, 1.0986123], np.float32)},
    )
    with pytest.raises(ConversionError) as error:
        validate(spec, package, [sample], tmp_path)
    assert "Core ML: output 'y': sample 0: NaN in 1 of 4 elements" in error.value.message
    assert "Core ML program executed by the reference executor (fp32)" in error.value.message


def test_float16_failure_names_the_first_diverging_ops(tmp_path, executor_available):
    needs_executor(executor_available)
    spec, package = converted_package("cancellation", VECTOR, tmp_path, precision="float16")
    x = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    with pytest.raises(ConversionError) as error:
        validate(spec, package, [Sample(inputs={"x": x}, outputs={"y": x.copy()})], tmp_path)
    assert error.value.reason == "ToleranceExceeded"
    assert "float16 first diverges at sub 'sub_cast_fp16'" in error.value.message
    assert "(fp16 emulated)" in error.value.message


def test_validation_passes_and_says_where_the_figures_came_from(tmp_path, executor_available):
    spec, package = converted_package("linear", [{"name": "x", "shape": [2, 8]}], tmp_path)
    torch.manual_seed(0)
    module = conversion_zoo.linear().eval()
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    expected = module(torch.from_numpy(x)).detach().numpy()
    result = validate(spec, package, [Sample(inputs={"x": x}, outputs={"y": expected})], tmp_path)
    if executor_available:
        assert result.message.endswith("Core ML program executed by the reference executor (fp32)")
        assert result.metrics["max_abs_error"] < 1e-5
    else:
        assert "Core ML package not executed" in result.message
        assert "max_abs_error" not in result.metrics
