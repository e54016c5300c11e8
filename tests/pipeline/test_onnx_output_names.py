"""ONNX sources: the spec's outputs are matched to the graph's outputs by name, never by position."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import PipelineRun, make_spec
from modelconv.errors import ConversionError
from modelconv.pipeline import runtimes
from modelconv.pipeline.feature_names import match_feature_names
from modelconv.pipeline.samples import load_samples
from modelconv.pipeline.sources import load_source

INPUTS = [{"name": "x", "shape": [1, 4]}, {"name": "state", "shape": [1, 4]}]


@pytest.fixture(scope="module")
def two_output_onnx(tmp_path_factory):
    """A graph whose outputs are [y, stateN]: y = x + state (1x4), stateN = [state, state] (1x8)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    state = helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    state_next = helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [1, 8])
    nodes = [
        helper.make_node("Add", ["x", "state"], ["y"]),
        helper.make_node("Concat", ["state", "state"], ["stateN"], axis=1),
    ]
    graph = helper.make_graph(nodes, "two_outputs", [x, state], [y, state_next])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("onnx") / "two_outputs.onnx"
    onnx.save(model, str(path))
    return path


def spec_for(path, outputs):
    return make_spec({"onnx": {"uri": str(path)}}, inputs=INPUTS, outputs=outputs)


@pytest.fixture(scope="module")
def reordered_run(two_output_onnx, tmp_path_factory):
    spec = spec_for(two_output_onnx, ("stateN", "y"))
    return PipelineRun(spec, tmp_path_factory.mktemp("reordered"))


def test_reordered_outputs_convert_and_validate(reordered_run):
    assert reordered_run.error is None, reordered_run.describe()


def test_reordered_outputs_reference_is_taken_by_name(reordered_run):
    samples = load_samples(reordered_run.export.artifacts["samples"])
    for sample in samples:
        state = sample.inputs["state"]
        np.testing.assert_allclose(sample.outputs["stateN"], np.concatenate([state, state], 1))
        np.testing.assert_allclose(sample.outputs["y"], sample.inputs["x"] + state)


def test_reordered_outputs_keep_their_names_in_core_ml(reordered_run):
    import coremltools as ct

    package = reordered_run.convert.artifacts["mlpackage"]
    description = ct.utils.load_spec(str(package)).description
    declared = [output.name for output in description.output]
    names = match_feature_names([], [], ["stateN", "y"], declared)
    shapes = {
        output.name: tuple(output.type.multiArrayType.shape) for output in description.output
    }
    assert shapes[names.outputs["stateN"]] == (1, 8)
    assert shapes[names.outputs["y"]] == (1, 4)


def test_onnx_torch_module_follows_spec_order(two_output_onnx, tmp_path):
    import torch

    source = load_source(spec_for(two_output_onnx, ("stateN", "y")), tmp_path)
    x, state = torch.ones(1, 4), torch.full((1, 4), 2.0)
    first, second = source.torch_module()(x, state)
    assert tuple(first.shape) == (1, 8)
    assert torch.equal(second, x + state)


def test_misspelt_output_lists_graph_outputs(two_output_onnx, tmp_path):
    with pytest.raises(ConversionError) as error:
        load_source(spec_for(two_output_onnx, ("y", "stateX")), tmp_path)
    assert error.value.reason == "InvalidSpec"
    assert "the ONNX graph has no output named stateX" in error.value.message
    assert "The graph's outputs are ['y', 'stateN']" in error.value.message


def test_missing_output_is_invalid_spec(two_output_onnx, tmp_path):
    with pytest.raises(ConversionError) as error:
        load_source(spec_for(two_output_onnx, ("y",)), tmp_path)
    assert error.value.reason == "InvalidSpec"
    assert "the spec does not list the ONNX graph's output stateN" in error.value.message


def test_onnx_runtime_outputs_are_taken_by_name(two_output_onnx):
    sample = {"x": np.ones((1, 4), np.float32), "state": np.full((1, 4), 2.0, np.float32)}
    (outputs,) = runtimes.run_onnx(two_output_onnx, [sample], ["x", "state"], ["stateN", "y"])
    assert outputs["stateN"].shape == (1, 8)
    np.testing.assert_allclose(outputs["y"], np.full((1, 4), 3.0))
