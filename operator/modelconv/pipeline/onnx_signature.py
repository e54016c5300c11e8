"""Checks of the spec's inputs and outputs against the signature an ONNX graph declares.

They run when an ONNX source is loaded, before ONNX Runtime runs on any sample, so that a
mismatch is an InvalidSpec naming the input or output rather than a runtime failure.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import InvalidSpec
from ..spec import TensorInput

# ONNX element types (onnx.TensorProto.DataType) that a spec input's dtype can name.
ONNX_DTYPES = {1: "float32", 10: "float16", 6: "int32", 7: "int64", 9: "bool"}
UNDEFINED_ELEMENT_TYPE = 0


def check_onnx_inputs(model, inputs: Sequence[TensorInput]) -> None:
    """Check each spec input's dtype and shape against the ONNX graph input of that name.

    A graph dimension with a name (dim_param) or no size accepts any size, and a graph input
    without a declared shape accepts any shape. Spec inputs that the graph does not take are
    left to the name check that runs with the samples.
    """
    initializers = {tensor.name for tensor in model.graph.initializer}
    # A graph may also list its initializers as inputs (IR version 3 and older must), and
    # those inputs have the initializer as their default value, so they are not checked.
    declared = {
        value.name: value for value in model.graph.input if value.name not in initializers
    }
    for item in inputs:
        value = declared.get(item.name)
        if value is None or not value.type.HasField("tensor_type"):
            continue
        _check_dtype(item, value.type.tensor_type.elem_type)
        if value.type.tensor_type.HasField("shape"):
            _check_shape(item, list(value.type.tensor_type.shape.dim))


def _check_dtype(item: TensorInput, element_type: int) -> None:
    if element_type == UNDEFINED_ELEMENT_TYPE:
        return
    graph_dtype = ONNX_DTYPES.get(element_type)
    if graph_dtype == item.dtype:
        return
    field = f"inputs.{item.name}.dtype"
    if graph_dtype is None:
        import onnx

        name = onnx.TensorProto.DataType.Name(element_type).lower()
        raise InvalidSpec(
            field,
            f"input {item.name!r} has dtype {item.dtype} in the spec but {name} in the ONNX"
            f" graph, and spec inputs support only {', '.join(ONNX_DTYPES.values())};"
            " export the model with one of those input types",
        )
    raise InvalidSpec(
        field,
        f"input {item.name!r} has dtype {item.dtype} in the spec but {graph_dtype} in the ONNX"
        f" graph; check inputs[].dtype in the spec (the graph needs dtype: {graph_dtype})",
    )


def _check_shape(item: TensorInput, dims: list) -> None:
    problem = _shape_mismatch(item, dims)
    if not problem:
        return
    names = [dim.dim_param for dim in dims if dim.HasField("dim_param")]
    hint = f" (a named graph dimension such as {names[0]} accepts any size)" if names else ""
    raise InvalidSpec(
        f"inputs.{item.name}.shape", f"{problem}; check inputs[].shape in the spec{hint}"
    )


def _shape_mismatch(item: TensorInput, dims: list) -> str:
    """Describe the first difference between the spec's shape and the graph's, or return ""."""
    graph_shape = "[" + ", ".join(_dim_text(dim) for dim in dims) + "]"
    spec_shape = "[" + ", ".join(str(dim) for dim in item.shape) + "]"
    if len(dims) != len(item.shape):
        return (
            f"input {item.name!r} has {len(item.shape)} dimensions {spec_shape} in the spec but"
            f" {len(dims)} {graph_shape} in the ONNX graph"
        )
    for axis, (dim, bounds) in enumerate(zip(dims, item.bounds())):
        # Only a fixed graph size constrains the input, and a spec range must then be that size.
        if dim.HasField("dim_value") and bounds != (dim.dim_value, dim.dim_value):
            return (
                f"dimension {axis} of input {item.name!r} is {item.shape[axis]} in the spec"
                f" but {dim.dim_value} in the ONNX graph, which declares shape {graph_shape}"
            )
    return ""


def _dim_text(dim) -> str:
    if dim.HasField("dim_value"):
        return str(dim.dim_value)
    if dim.HasField("dim_param"):
        return dim.dim_param
    return "?"


def check_onnx_outputs(model, output_names: list[str]) -> None:
    """Check that the spec names every output of the ONNX graph, in any order, and no other.

    Outputs are matched by name everywhere, so a misspelt or missing name is an InvalidSpec
    here rather than an output published under the wrong name.
    """
    graph_outputs = [output.name for output in model.graph.output]
    unknown = [name for name in output_names if name not in graph_outputs]
    missing = [name for name in graph_outputs if name not in output_names]
    if unknown or missing:
        if unknown:
            problem = f"the ONNX graph has no output named {', '.join(unknown)}"
        else:
            problem = f"the spec does not list the ONNX graph's output {', '.join(missing)}"
        raise InvalidSpec(
            "outputs",
            f"{problem}. The graph's outputs are {graph_outputs}: list each one once, by"
            " name, in any order",
        )
