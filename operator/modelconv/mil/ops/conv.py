"""Convolution and transposed convolution (coremltools `ops/defs/iOS15/conv.py`, iOS 17).

Padding follows the op definition. `valid` pads nothing, and `custom` takes `pad` as
[before_0, after_0, before_1, after_1, ...]. `same` pads a total of
max(0, (ceil(in / stride) - 1) * stride + dilated_kernel - in) per spatial axis and puts the
odd element after the axis. `same_lower` puts it before.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import UPCAST, op

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def spatial_padding(ctx, pad_type, pad, sizes, kernel, strides, dilations):
    """Return the (before, after) padding of each spatial axis."""
    rank = len(sizes)
    if pad_type == "valid":
        return [(0, 0)] * rank
    if pad_type == "custom":
        if pad is None or len(pad) != 2 * rank:
            raise ctx.invalid(f"pad_type 'custom' needs {2 * rank} pad values, got {pad}")
        return [(int(pad[2 * axis]), int(pad[2 * axis + 1])) for axis in range(rank)]
    if pad_type in ("same", "same_lower"):
        pairs = []
        for size, k, stride, dilation in zip(sizes, kernel, strides, dilations):
            dilated = (k - 1) * dilation + 1
            total = max(0, (math.ceil(size / stride) - 1) * stride + dilated - size)
            small, large = total // 2, total - total // 2
            pairs.append((small, large) if pad_type == "same" else (large, small))
        return pairs
    raise ctx.unsupported(f"pad_type {pad_type!r}")


def torch_pad_order(pairs) -> list[int]:
    """Convert per-axis (before, after) pairs to F.pad's last-axis-first list."""
    flat = []
    for before, after in reversed(pairs):
        flat.extend((before, after))
    return flat


def _spatial_defaults(x, strides, dilations):
    rank = x.dim() - 2
    return (strides or [1] * rank), (dilations or [1] * rank)


def _prepare_conv(ctx, inputs: dict) -> dict:
    """Cast constant weights (iOS 17 allows another dtype than x) to the output dtype once.

    A 2-d convolution's weight is also stored channels-last once, because torch's oneDNN
    convolutions ran faster in that layout than in NCHW (torch 2.13, x86-64).
    """
    prepared = dict(inputs)
    for name in ("weight", "bias"):
        value = prepared.get(name)
        if isinstance(value, torch.Tensor):
            prepared[name] = value.to(ctx.output_dtypes[0])
    weight = prepared.get("weight")
    if isinstance(weight, torch.Tensor) and weight.dim() == 4:
        prepared["weight"] = weight.contiguous(memory_format=torch.channels_last)
    return prepared


def _specialize_conv(ctx, inputs: dict, shapes: dict):
    """Return a function computing the convolution for x's declared shape, or None.

    Used when the weight and bias are constants and x's declared shape is static, so the
    padding and the kernel are chosen once instead of on every call.
    """
    weight, bias = inputs.get("weight"), inputs.get("bias")
    if not isinstance(weight, torch.Tensor) or set(shapes) != {"x"}:
        return None
    if bias is not None and not isinstance(bias, torch.Tensor):
        return None
    x_shape = shapes["x"]
    rank = len(x_shape) - 2
    if rank not in _CONV or weight.dim() != rank + 2:
        return None
    return _conv_function(
        ctx, x_shape, weight, bias, inputs.get("strides") or [1] * rank,
        inputs.get("pad_type", "valid"), inputs.get("pad"),
        inputs.get("dilations") or [1] * rank, inputs.get("groups", 1), prepack=True,
    )


def _prepacked_grouped_conv(x_shape, weight, bias, padding, strides, dilations, groups):
    """Return a grouped 2-d float32 convolution with its weight reordered once, or None.

    On mobilenet's depthwise layers, oneDNN's convolution op with a weight reordered once
    ahead took 10 to 30 percent less time than torch's convolution, with the same results bit
    for bit (torch 2.13, x86-64). None when torch has no oneDNN or the reorder fails.
    NOTE: run only on x86-64 here; on other builds the op may be missing and the general
    path runs.
    """
    if _ONEDNN_CONV is None or weight.dtype != torch.float32:
        return None
    if bias is not None and bias.dtype != torch.float32:
        return None
    padding, strides, dilations = list(padding), list(strides), list(dilations)
    try:
        packed = _ONEDNN_REORDER(
            weight.contiguous(), padding, strides, dilations, groups, list(x_shape)
        )
    except RuntimeError:
        return None
    return lambda x: _ONEDNN_CONV(
        x.contiguous(memory_format=torch.channels_last), packed, bias, padding, strides,
        dilations, groups, "none", [], "",
    )


def _onednn_ops():
    """Return torch's oneDNN convolution and weight reorder ops, or (None, None)."""
    if not torch.backends.mkldnn.is_available():
        return None, None
    try:
        return (torch.ops.mkldnn._convolution_pointwise,
                torch.ops.mkldnn._reorder_convolution_weight)
    except (AttributeError, RuntimeError):
        return None, None


_ONEDNN_CONV, _ONEDNN_REORDER = _onednn_ops()


# At program precision a float16 convolution is computed in float32 from the float16 values
# and rounded once. torch's float16 CPU convolution took 2 to 3 times as long on mobilenet's
# layers (torch 2.13, x86-64), and it also accumulates in float32.
@op(
    "conv",
    params=("strides", "pad_type", "pad", "dilations", "groups"),
    fp16=UPCAST,
    prepare=_prepare_conv,
    specialize=_specialize_conv,
)
def conv(ctx, x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None,
         groups=1):
    rank = x.dim() - 2
    if rank not in _CONV:
        raise ctx.unsupported(f"{rank} spatial dimensions")
    strides, dilations = _spatial_defaults(x, strides, dilations)
    if weight.dtype != x.dtype:
        weight = weight.to(x.dtype)
    if bias is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)
    function = _conv_function(
        ctx, tuple(x.shape), weight, bias, strides, pad_type, pad, dilations, groups
    )
    return function(x)


def _conv_function(ctx, x_shape, weight, bias, strides, pad_type, pad, dilations, groups,
                   prepack=False):
    """Return a function of x computing the convolution for an x of shape `x_shape`.

    With `prepack`, a grouped 2-d convolution gets its weight reordered for oneDNN, which
    pays off only for a function that runs many times.
    """
    rank = len(x_shape) - 2
    padding, explicit = _conv_padding(
        ctx, pad_type, pad, tuple(x_shape[2:]), tuple(weight.shape[2:]), tuple(strides),
        tuple(dilations),
    )
    if (
        rank == 2 and explicit is None and groups == 1 and tuple(weight.shape[2:]) == (1, 1)
        and not any(padding) and all(stride == 1 for stride in strides)
    ):
        matrix = weight.reshape(weight.shape[:2]).t()
        return lambda x: _pointwise(x, matrix, bias)
    if prepack and rank == 2 and groups > 1 and explicit is None:
        prepacked = _prepacked_grouped_conv(
            x_shape, weight, bias, padding, strides, dilations, groups
        )
        if prepacked is not None:
            return prepacked
    function = _CONV[rank]
    strides, dilations = list(strides), list(dilations)
    if rank != 2:
        if explicit is None:
            return lambda x: function(x, weight, bias, strides, padding, dilations, groups)
        return lambda x: function(F.pad(x, explicit), weight, bias, strides, 0, dilations, groups)
    # A 2-d convolution's output keeps the channels-last layout, so the following
    # elementwise ops and convolutions need no conversion.
    if explicit is None:
        return lambda x: function(
            x.contiguous(memory_format=torch.channels_last), weight, bias, strides, padding,
            dilations, groups,
        )
    return lambda x: function(
        F.pad(x.contiguous(memory_format=torch.channels_last), explicit), weight, bias, strides,
        0, dilations, groups,
    )


def _pointwise(x, matrix, bias):
    """Compute a 1x1 convolution with stride 1 as one matrix product over the pixels.

    The pixels of a channels-last x are the rows of a (pixels, channels) matrix without a
    copy, and the product's rows are the output's pixels in channels-last layout. torch's
    convolution took about 4 times as long on the one-pixel images of squeeze-and-excitation
    blocks, and up to twice as long on mobilenet's larger 1x1 layers with 2 threads
    (torch 2.13, x86-64).
    """
    batch, channels, height, width = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    product = torch.mm(rows, matrix) if bias is None else torch.addmm(bias, rows, matrix)
    return product.view(batch, height, width, -1).permute(0, 3, 1, 2)


# (padding argument for torch, explicit F.pad list or None) by the layout that determines
# them; a program has a few dozen distinct layouts.
_PADDING_CACHE: dict[tuple, tuple] = {}


def _conv_padding(ctx, pad_type, pad, sizes, kernel, strides, dilations):
    """Return torch's symmetric `padding` argument, or 0 and the list for F.pad."""
    key = (pad_type, None if pad is None else tuple(pad), sizes, kernel, tuple(strides),
           tuple(dilations))
    cached = _PADDING_CACHE.get(key)
    if cached is None:
        pairs = spatial_padding(ctx, pad_type, pad, sizes, kernel, strides, dilations)
        if all(before == after for before, after in pairs):
            cached = ([before for before, _ in pairs], None)
        else:
            cached = (0, torch_pad_order(pairs))
        if len(_PADDING_CACHE) < 4096:
            _PADDING_CACHE[key] = cached
    return cached


@op(
    "conv_transpose",
    params=("pad", "output_shape", "pad_type", "strides", "dilations", "groups"),
)
def conv_transpose(ctx, x, weight, bias=None, pad=None, output_shape=None, pad_type="valid",
                   strides=None, dilations=None, groups=1):
    rank = x.dim() - 2
    if rank not in _CONV_TRANSPOSE:
        raise ctx.unsupported(f"{rank} spatial dimensions")
    strides, dilations = _spatial_defaults(x, strides, dilations)
    weight = weight.to(x.dtype)
    bias = None if bias is None else bias.to(x.dtype)
    # The full result, before any cropping; pad and output_shape select a window of it.
    full = _CONV_TRANSPOSE[rank](x, weight, bias, strides, 0, 0, groups, dilations)
    windows = _transpose_windows(ctx, pad_type, pad, output_shape, x.shape[2:], full.shape[2:],
                                 strides)
    return _crop_or_extend(full, windows, bias)


def _transpose_windows(ctx, pad_type, pad, output_shape, sizes, full_sizes, strides):
    """Return (start, size) of the output window on each spatial axis of the full result."""
    rank = len(sizes)
    if pad_type == "custom":
        pairs = spatial_padding(ctx, pad_type, pad, sizes, [1] * rank, strides, [1] * rank)
        starts = [before for before, _ in pairs]
        lengths = [full - before - after for full, (before, after) in zip(full_sizes, pairs)]
    elif pad_type == "same":
        lengths = [size * stride for size, stride in zip(sizes, strides)]
        starts = [max(0, full - length) // 2 for full, length in zip(full_sizes, lengths)]
    elif pad_type == "valid":
        starts, lengths = [0] * rank, list(full_sizes)
    else:
        raise ctx.unsupported(f"pad_type {pad_type!r}")
    if output_shape is not None:
        lengths = [int(size) for size in list(output_shape)[2:]]
    return list(zip(starts, lengths))


def _crop_or_extend(full, windows, bias):
    """Cut each window out of `full`; positions past its end hold only the bias."""
    result = full
    for axis, (start, length) in enumerate(windows, start=2):
        available = max(0, min(length, result.shape[axis] - start))
        result = result.narrow(axis, start, available)
        missing = length - available
        if missing > 0:
            extra_shape = list(result.shape)
            extra_shape[axis] = missing
            extra = torch.zeros(extra_shape, dtype=result.dtype)
            if bias is not None:
                extra += bias.reshape([1, -1] + [1] * (result.dim() - 2))
            result = torch.cat([result, extra], dim=axis)
    return result
