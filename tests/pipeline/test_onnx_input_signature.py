"""ONNX sources: the spec's input shapes and dtypes are checked against the graph's declared inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import make_spec
from modelconv.errors import EXIT_BAD_INPUT, ConversionError
from modelconv.pipeline.samples import build_samples
from modelconv.pipeline.sources import load_source


def relu_onnx(directory, shape, element_type=TensorProto.FLOAT, name="relu.onnx"):
    """Save a one-node graph y = Relu(a) whose input `a` has `shape` and `element_type`."""
    a = helper.make_tensor_value_info("a", element_type, shape)
    y = helper.make_tensor_value_info("y", element_type, shape)
    graph = helper.make_graph([helper.make_node("Relu", ["a"], ["y"])], "relu", [a], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = directory / name
    onnx.save(model, str(path))
    return path


def add_onnx(directory):
    """Save y = a + b where both inputs have the named shape [n]."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n"])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "add", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = directory / "add.onnx"
    onnx.save(model, str(path))
    return path


def load_error(tmp_path, path, inputs) -> ConversionError:
    spec = make_spec({"onnx": {"uri": str(path)}}, inputs=inputs)
    with pytest.raises(ConversionError) as error:
        load_source(spec, tmp_path)
    return error.value


def test_wrong_dimension_names_input_and_both_sizes(tmp_path):
    path = relu_onnx(tmp_path, [2, 8])

    error = load_error(tmp_path, path, [{"name": "a", "shape": [2, 9]}])

    assert error.reason == "InvalidSpec"
    assert error.exit_code == EXIT_BAD_INPUT
    assert error.message.startswith("inputs.a.shape: dimension 1 of input 'a' is 9 in the spec")
    assert "but 8 in the ONNX graph, which declares shape [2, 8]" in error.message
    assert "ONNXRuntimeError" not in error.message


def test_wrong_rank_names_both_shapes(tmp_path):
    path = relu_onnx(tmp_path, [2, 8])

    error = load_error(tmp_path, path, [{"name": "a", "shape": [2, 8, 1]}])

    assert error.reason == "InvalidSpec"
    assert "input 'a' has 3 dimensions [2, 8, 1] in the spec but 2 [2, 8]" in error.message


def test_range_over_fixed_graph_dimension_is_rejected(tmp_path):
    path = relu_onnx(tmp_path, [2, 8])

    error = load_error(tmp_path, path, [{"name": "a", "shape": [2, "4..16"]}])

    assert error.reason == "InvalidSpec"
    assert "dimension 1 of input 'a' is 4..16 in the spec but 8" in error.message


@pytest.mark.parametrize("shape", [[2, 8], [2, 3], [2, "1..64"]])
def test_named_graph_dimension_accepts_any_size(tmp_path, shape):
    path = relu_onnx(tmp_path, [2, "length"])
    spec = make_spec({"onnx": {"uri": str(path)}}, inputs=[{"name": "a", "shape": shape}])

    source = load_source(spec, tmp_path)

    assert source.onnx_path == path


def test_fixed_mismatch_mentions_named_dimensions(tmp_path):
    path = relu_onnx(tmp_path, ["batch", 8])

    error = load_error(tmp_path, path, [{"name": "a", "shape": [2, 9]}])

    assert "declares shape [batch, 8]" in error.message
    assert "a named graph dimension such as batch accepts any size" in error.message


def test_wrong_dtype_names_both_dtypes(tmp_path):
    path = relu_onnx(tmp_path, [2, 8])

    error = load_error(tmp_path, path, [{"name": "a", "shape": [2, 8], "dtype": "int64"}])

    assert error.reason == "InvalidSpec"
    assert error.message.startswith("inputs.a.dtype: input 'a' has dtype int64 in the spec")
    assert "but float32 in the ONNX graph" in error.message
    assert "dtype: float32" in error.message


def test_unsupported_graph_dtype_is_named(tmp_path):
    path = relu_onnx(tmp_path, [2, 8], TensorProto.DOUBLE)

    error = load_error(tmp_path, path, [{"name": "a", "shape": [2, 8]}])

    assert error.reason == "InvalidSpec"
    assert "but double in the ONNX graph" in error.message
    assert "float32, float16, int32, int64, bool" in error.message


def test_initializer_inputs_are_not_checked(tmp_path):
    # IR version 3 graphs must list their initializers among the graph inputs.
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 8])
    bias_input = helper.make_tensor_value_info("bias", TensorProto.FLOAT, [8])
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [8], np.ones(8, np.float32))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "bias"], ["y"])], "g", [a, bias_input], [y], [bias]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    path = tmp_path / "ir3.onnx"
    onnx.save(model, str(path))
    spec = make_spec({"onnx": {"uri": str(path)}}, inputs=[{"name": "a", "shape": [2, 8]}])

    assert load_source(spec, tmp_path).onnx_path == path


def test_runtime_rejection_is_invalid_spec(tmp_path):
    # Both inputs declare [n], so only ONNX Runtime finds that the sizes cannot be added.
    path = add_onnx(tmp_path)
    inputs = [{"name": "a", "shape": [4]}, {"name": "b", "shape": [3]}]
    spec = make_spec({"onnx": {"uri": str(path)}}, inputs=inputs)
    source = load_source(spec, tmp_path)

    with pytest.raises(ConversionError) as error:
        build_samples(spec, source, tmp_path)

    assert error.value.reason == "InvalidSpec"
    assert error.value.message.startswith(
        "the source model failed on validation inputs {'a': (4,), 'b': (3,)}"
    )
    assert "check inputs[].shape, dtype and values in the spec" in error.value.message
