"""The spec's inputs and outputs in each tool's terms: example tensors, torch.export dynamic
shapes, ONNX dynamic axes and Core ML input types.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidSpec
from ..spec import ConversionSpec, TensorInput
from .samples import NUMPY_DTYPES, channel_bias

# Spec compute units -> names of `ct.ComputeUnit` members.
COREML_COMPUTE_UNITS = {
    "all": "ALL",
    "cpuOnly": "CPU_ONLY",
    "cpuAndGPU": "CPU_AND_GPU",
    "cpuAndNeuralEngine": "CPU_AND_NE",
}


def example_arguments(spec: ConversionSpec) -> tuple:
    """Return example tensors at each input's `example_shape()`, for export and tracing."""
    import torch

    generator = np.random.default_rng(0)
    arguments = []
    for item in spec.inputs:
        shape = item.example_shape()
        if item.dtype == "bool":
            array = generator.integers(0, 2, size=shape).astype(np.bool_)
        elif item.dtype.startswith("int"):
            high = 10 if item.values is None else max(1, int(item.values.max))
            low = 0 if item.values is None else int(np.ceil(item.values.min))
            array = generator.integers(low, max(high, low + 1), size=shape)
        else:
            array = generator.standard_normal(size=shape)
        arguments.append(torch.from_numpy(np.asarray(array).astype(NUMPY_DTYPES[item.dtype])))
    return tuple(arguments)


def export_dynamic_shapes(spec: ConversionSpec):
    """Return torch.export `dynamic_shapes` (positional), or None when every shape is fixed.

    Ranged dimensions become `Dim.AUTO` with the range's bounds, so torch.export finds by
    itself which dimensions must be equal (a token-id input and its attention mask).
    """
    from torch.export import Dim

    if not any(item.is_ranged for item in spec.inputs):
        return None
    shapes = []
    for item in spec.inputs:
        axes = {
            axis: Dim.AUTO(min=low, max=high)
            for axis, (low, high) in enumerate(item.bounds())
            if low != high
        }
        shapes.append(axes or None)
    return tuple(shapes)


def onnx_dynamic_axes(spec: ConversionSpec) -> dict:
    """Return `dynamic_axes` for the TorchScript-based ONNX exporter."""
    axes = {}
    for item in spec.inputs:
        ranged = {
            axis: f"{item.name}_{axis}"
            for axis, (low, high) in enumerate(item.bounds())
            if low != high
        }
        if ranged:
            axes[item.name] = ranged
    return axes


def coreml_inputs(spec: ConversionSpec) -> list:
    """Return `ct.TensorType` / `ct.ImageType` inputs, with `ct.RangeDim` for ranged dims."""
    import coremltools as ct

    inputs = []
    for item in spec.inputs:
        shape = ct.Shape(shape=[_coreml_dim(ct, item, axis) for axis in range(len(item.shape))])
        if item.image is not None:
            inputs.append(_image_type(ct, item, shape))
        else:
            inputs.append(ct.TensorType(name=item.name, shape=shape, dtype=NUMPY_DTYPES[item.dtype]))
    return inputs


def _coreml_dim(ct, item: TensorInput, axis: int):
    low, high = item.bounds()[axis]
    if low == high:
        return low
    return ct.RangeDim(lower_bound=low, upper_bound=high, default=item.example_shape()[axis])


def _image_type(ct, item: TensorInput, shape):
    channels = 1 if item.image.color_layout == "G" else 3
    bounds = item.bounds()
    if len(bounds) != 4 or bounds[0] != (1, 1) or bounds[1] != (channels, channels):
        raise InvalidSpec(
            f"inputs.{item.name}.shape",
            f"an image input needs shape [1, {channels}, height, width] for a"
            f" {item.image.color_layout} image, got {item.shape}",
        )
    if item.dtype != "float32":
        raise InvalidSpec(f"inputs.{item.name}.dtype", "an image input must be float32")
    layouts = {"RGB": ct.colorlayout.RGB, "BGR": ct.colorlayout.BGR, "G": ct.colorlayout.GRAYSCALE}
    bias = channel_bias(item)
    return ct.ImageType(
        name=item.name,
        shape=shape,
        scale=item.image.scale,
        bias=bias if channels == 3 else bias[0],
        color_layout=layouts[item.image.color_layout],
    )
