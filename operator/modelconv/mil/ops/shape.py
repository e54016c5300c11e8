"""Ops that change a tensor's shape or layout without changing its values.

Sources: coremltools `ops/defs/iOS15/tensor_transformation.py` and `tensor_operation.py`, with
the iOS 16/17 variants. `depth_to_space`, `space_to_depth`, `space_to_batch` and
`batch_to_space` follow TensorFlow's layout (coremltools' TensorFlow frontend maps those ops
onto them); `pixel_shuffle` and `pixel_unshuffle` follow PyTorch's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import op

IOS17 = 8


@op("reshape", params=("shape",))
def reshape(ctx, x, shape):
    return x.reshape(_resolve_reshape(ctx, list(x.shape), [int(dim) for dim in shape]))


def _resolve_reshape(ctx, source: list[int], target: list[int]) -> list[int]:
    """Replace 0 (copy a dimension of x) in `target`; -1 is left for torch to infer.

    Before iOS 17 a 0 copies the dimension at the same index. From iOS 17 a 0 copies the
    dimension at the same distance from the end, and becomes 1 where x has no such dimension.
    """
    if 0 not in target:
        return target
    resolved = list(target)
    for index, dim in enumerate(target):
        if dim != 0:
            continue
        if ctx.opset >= IOS17:
            source_index = len(source) - (len(target) - index)
            resolved[index] = source[source_index] if source_index >= 0 else 1
        elif index < len(source):
            resolved[index] = source[index]
        else:
            raise ctx.invalid(f"shape {target} has a 0 at index {index}, past the rank of x")
    return resolved


@op("reshape_like", params=("begins", "ends", "end_masks"))
def reshape_like(ctx, x, ref_tensors, begins, ends, end_masks):
    shape: list[int] = []
    for reference, begin, end, end_mask in zip(ref_tensors, begins, ends, end_masks):
        dims = list(reference.shape)
        shape.extend(dims[begin:] if end_mask else dims[begin:end])
    return x.reshape(shape)


@op("transpose", params=("perm",))
def transpose(ctx, x, perm):
    return x.permute(*perm)


@op("squeeze", params=("axes",))
def squeeze(ctx, x, axes=None):
    if axes is None:
        return x.squeeze()
    # Like PyTorch, axes whose size is not 1 are left in place.
    return x.squeeze(tuple(axis % x.dim() for axis in axes)) if x.dim() else x


@op("expand_dims", params=("axes",))
def expand_dims(ctx, x, axes):
    rank = x.dim() + len(axes)
    shape = list(x.shape)
    for axis in sorted(axis % rank for axis in axes):
        shape.insert(axis, 1)
    return x.reshape(shape)


@op("flatten2d", params=("axis",))
def flatten2d(ctx, x, axis=1):
    axis = axis + x.dim() if axis < 0 else axis
    dims = list(x.shape)
    return x.reshape(math.prod(dims[:axis]), math.prod(dims[axis:]))


@op("shape")
def shape(ctx, x):
    return torch.tensor(list(x.shape), dtype=torch.int32)


@op("identity")
def identity(ctx, x):
    return x


@op("depth_to_space", params=("block_size",))
def depth_to_space(ctx, x, block_size):
    n, channels, height, width = x.shape
    b = block_size
    y = x.reshape(n, b, b, channels // (b * b), height, width)
    return y.permute(0, 3, 4, 1, 5, 2).reshape(n, channels // (b * b), height * b, width * b)


@op("space_to_depth", params=("block_size",))
def space_to_depth(ctx, x, block_size):
    n, channels, height, width = x.shape
    b = block_size
    y = x.reshape(n, channels, height // b, b, width // b, b)
    return y.permute(0, 3, 5, 1, 2, 4).reshape(n, channels * b * b, height // b, width // b)


@op("pixel_shuffle", params=("upscale_factor",))
def pixel_shuffle(ctx, x, upscale_factor):
    return F.pixel_shuffle(x, upscale_factor)


@op("pixel_unshuffle", params=("downscale_factor",))
def pixel_unshuffle(ctx, x, downscale_factor):
    return F.pixel_unshuffle(x, downscale_factor)


@op("space_to_batch", params=("block_shape", "paddings"))
def space_to_batch(ctx, x, block_shape, paddings):
    (top, bottom), (left, right) = paddings
    padded = F.pad(x, [left, right, top, bottom])
    n, channels, height, width = padded.shape
    bh, bw = block_shape
    y = padded.reshape(n, channels, height // bh, bh, width // bw, bw)
    return y.permute(3, 5, 0, 1, 2, 4).reshape(bh * bw * n, channels, height // bh, width // bw)


@op("batch_to_space", params=("block_shape", "crops"))
def batch_to_space(ctx, x, block_shape, crops):
    batch, channels, height, width = x.shape
    bh, bw = block_shape
    n = batch // (bh * bw)
    y = x.reshape(bh, bw, n, channels, height, width).permute(2, 3, 4, 0, 5, 1)
    y = y.reshape(n, channels, height * bh, width * bw)
    (top, bottom), (left, right) = crops
    return y[:, :, top: height * bh - bottom, left: width * bw - right]


@op("sliding_windows", params=("axis", "size", "stride"))
def sliding_windows(ctx, x, axis, size, stride=1):
    axis = axis % x.dim()
    # unfold appends the window axis last; the op puts it right after the windows axis.
    return x.unfold(axis, size, stride).movedim(-1, axis + 1)
