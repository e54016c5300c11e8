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


# At program precision a float16 convolution is computed in float32 from the float16 values
# and rounded once. torch's float16 CPU convolution took 2 to 3 times as long on mobilenet's
# layers (torch 2.13, x86-64), and it also accumulates in float32.
@op(
    "conv",
    params=("strides", "pad_type", "pad", "dilations", "groups"),
    fp16=UPCAST,
    prepare=_prepare_conv,
)
def conv(ctx, x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None,
         groups=1):
    rank = x.dim() - 2
    if rank not in _CONV:
        raise ctx.unsupported(f"{rank} spatial dimensions")
    strides, dilations = _spatial_defaults(x, strides, dilations)
    padding, explicit = _conv_padding(
        ctx, pad_type, pad, x.shape[2:], weight.shape[2:], strides, dilations
    )
    if weight.dtype != x.dtype:
        weight = weight.to(x.dtype)
    if bias is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)
    if rank == 2 and explicit is None and groups == 1 and _is_pointwise(x, weight, padding):
        # A 1x1 kernel on a 1x1 image, as in squeeze-and-excitation blocks, is a matrix
        # product. torch's convolution took about 4 times as long on it (torch 2.13, x86-64).
        flat = F.linear(x.reshape(x.shape[:2]), weight.reshape(weight.shape[:2]), bias)
        return flat.reshape(flat.shape + (1, 1))
    if rank == 2:
        # The output keeps this layout, so the following elementwise ops and convolutions
        # need no conversion.
        x = x.contiguous(memory_format=torch.channels_last)
    if explicit is not None:
        x = F.pad(x, explicit)
    return _CONV[rank](x, weight, bias, strides, padding, dilations, groups)


def _is_pointwise(x, weight, padding) -> bool:
    return (
        x.shape[2] == 1 and x.shape[3] == 1 and weight.shape[2] == 1 and weight.shape[3] == 1
        and not any(padding)
    )


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
