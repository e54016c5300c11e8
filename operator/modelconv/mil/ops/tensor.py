"""Tensor construction, joining, slicing, padding and ordering ops.

Sources: coremltools `ops/defs/iOS15/tensor_operation.py` and `tensor_transformation.py`,
`iOS16/tensor_operation.py`, `iOS17/tensor_operation.py`, `iOS18/tensor_transformation.py`.
Slices follow numpy's rules, out-of-range bounds clamped, as the op definitions' references do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import op


@op("concat", params=("axis", "interleave"))
def concat(ctx, values, axis, interleave=False):
    # Programs build shapes by concatenating scalars, which act as 1-element vectors here.
    values = [
        value.to(ctx.output_dtypes[0]).reshape(1) if value.dim() == 0 else value.to(
            ctx.output_dtypes[0]
        )
        for value in values
    ]
    if not interleave:
        return torch.cat(values, dim=axis)
    axis = axis % values[0].dim()
    stacked = torch.stack(values, dim=axis + 1)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


@op("split", params=("num_splits", "split_sizes", "axis"))
def split(ctx, x, axis, num_splits=None, split_sizes=None):
    if split_sizes is None:
        size = x.shape[axis]
        if not num_splits or size % num_splits:
            raise ctx.invalid(f"axis {axis} of size {size} does not split into {num_splits}")
        split_sizes = [size // num_splits] * num_splits
    return tuple(torch.split(x, list(split_sizes), dim=axis))


@op("stack", params=("axis",))
def stack(ctx, values, axis):
    return torch.stack([value.to(ctx.output_dtypes[0]) for value in values], dim=axis)


@op("tile", params=("reps",))
def tile(ctx, x, reps):
    return x.repeat(*reps) if reps else x


@op("pad", params=("pad", "mode", "constant_val"))
def pad(ctx, x, pad, mode="constant", constant_val=0.0):
    pairs = [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(len(pad) // 2)]
    if len(pairs) > x.dim():
        raise ctx.invalid(f"pad has {len(pairs)} pairs for a rank-{x.dim()} tensor")
    # pad covers the last len(pairs) axes; F.pad wants the last axis first.
    flat = [amount for pair in reversed(pairs) for amount in pair]
    if mode == "constant":
        return F.pad(x, flat, value=constant_val)
    if mode not in ("reflect", "replicate"):
        raise ctx.unsupported(f"mode {mode!r}")
    return _pad_edges(ctx, x, pairs, mode)


def _pad_edges(ctx, x, pairs, mode):
    """Reflect or replicate padding of the trailing axes that have a nonzero pad."""
    while pairs and pairs[0] == (0, 0):
        pairs = pairs[1:]
    if not pairs:
        return x
    if len(pairs) > 3:
        raise ctx.unsupported(f"{mode} padding of {len(pairs)} axes")
    leading = list(x.shape[: x.dim() - len(pairs)])
    # F.pad pads the last 1-3 axes of a [batch, channel, ...] tensor in these modes.
    batched = x.reshape([1, math.prod(leading)] + list(x.shape[x.dim() - len(pairs):]))
    flat = [amount for pair in reversed(pairs) for amount in pair]
    padded = F.pad(batched, flat, mode=mode)
    return padded.reshape(leading + list(padded.shape[2:]))


def _axis_slices(x, begin, end, stride, begin_mask, end_mask, squeeze_mask):
    """Return per-axis (start, stop, step, squeeze) in numpy's normalized form."""
    rank = x.dim()
    stride = stride or [1] * rank
    begin_mask = begin_mask or [False] * rank
    end_mask = end_mask or [False] * rank
    squeeze_mask = squeeze_mask or [False] * rank
    result = []
    for axis in range(rank):
        size = x.shape[axis]
        if squeeze_mask[axis]:
            index = begin[axis] + size if begin[axis] < 0 else begin[axis]
            result.append((index, index + 1, 1, True))
            continue
        start = None if begin_mask[axis] else begin[axis]
        stop = None if end_mask[axis] else end[axis]
        result.append(slice(start, stop, stride[axis]).indices(size) + (False,))
    return result


def _axis_indices(start, stop, step):
    return torch.arange(start, stop, step, dtype=torch.long)


@op("slice_by_index", params=("begin", "end", "stride", "begin_mask", "end_mask", "squeeze_mask"))
def slice_by_index(ctx, x, begin, end, stride=None, begin_mask=None, end_mask=None,
                   squeeze_mask=None):
    axes = _axis_slices(x, begin, end, stride, begin_mask, end_mask, squeeze_mask)
    result = x
    if all(step > 0 for _, _, step, _ in axes):
        result = x[tuple(slice(start, stop, step) for start, stop, step, _ in axes)]
    else:
        for axis, (start, stop, step, _) in enumerate(axes):
            result = result.index_select(axis, _axis_indices(start, stop, step))
    squeezed = [axis for axis, (*_, squeeze) in enumerate(axes) if squeeze]
    return result.squeeze(squeezed) if squeezed else result


@op("slice_by_size", params=("begin", "size"))
def slice_by_size(ctx, x, begin, size):
    slices = []
    for axis, (start, length) in enumerate(zip(begin, size)):
        start = start + x.shape[axis] if start < 0 else start
        slices.append(slice(start, None if length == -1 else start + length))
    return x[tuple(slices)]


@op("slice_update", params=("begin", "end", "stride", "begin_mask", "end_mask", "squeeze_mask"))
def slice_update(ctx, x, update, begin, end, stride=None, begin_mask=None, end_mask=None,
                 squeeze_mask=None):
    axes = _axis_slices(x, begin, end, stride, begin_mask, end_mask, squeeze_mask)
    rank = x.dim()
    index = []
    for axis, (start, stop, step, _) in enumerate(axes):
        shape = [1] * rank
        shape[axis] = -1
        index.append(_axis_indices(start, stop, step).reshape(shape))
    result = x.clone()
    selected_shape = [len(range(start, stop, step)) for start, stop, step, _ in axes]
    result[tuple(index)] = update.to(x.dtype).reshape(selected_shape)
    return result


@op("reverse", params=("axes",))
def reverse(ctx, x, axes=None):
    dims = list(range(x.dim())) if axes is None else [axis % x.dim() for axis in axes]
    return torch.flip(x, dims) if dims else x


@op("reverse_sequence", params=("seq_axis", "batch_axis"))
def reverse_sequence(ctx, x, lengths, seq_axis=0, batch_axis=0):
    seq_axis, batch_axis = seq_axis % x.dim(), batch_axis % x.dim()
    moved = x.movedim((batch_axis, seq_axis), (0, 1))
    steps = moved.shape[1]
    positions = torch.arange(steps).unsqueeze(0)
    limits = lengths.to(torch.long).unsqueeze(1)
    # Within the first `length` steps, step t reads step length - 1 - t; the rest stay.
    source = torch.where(positions < limits, limits - 1 - positions, positions)
    source = source.reshape(list(source.shape) + [1] * (moved.dim() - 2)).expand(moved.shape)
    return torch.gather(moved, 1, source).movedim((0, 1), (batch_axis, seq_axis))


@op("fill", params=("shape", "value"))
def fill(ctx, shape, value=0.0):
    return torch.full([int(dim) for dim in shape], value, dtype=ctx.output_dtypes[0])


@op("fill_like", params=("value",))
def fill_like(ctx, ref_tensor, value=0.0):
    return torch.full(ref_tensor.shape, value, dtype=ctx.output_dtypes[0])


@op("range_1d", params=("start", "end", "step"))
def range_1d(ctx, end, start, step):
    return torch.arange(start, end, step, dtype=ctx.output_dtypes[0])


@op("band_part", params=("lower", "upper"))
def band_part(ctx, x, lower=-1, upper=-1):
    rows, columns = x.shape[-2:]
    row = torch.arange(rows).unsqueeze(1)
    column = torch.arange(columns).unsqueeze(0)
    keep = torch.ones(rows, columns, dtype=torch.bool)
    if lower >= 0:
        keep &= (row - column) <= lower
    if upper >= 0:
        keep &= (column - row) <= upper
    # Elements outside the band are set to zero (so an infinity there becomes 0, not NaN).
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype))


@op("cumsum", params=("axis", "exclusive", "reverse"))
def cumsum(ctx, x, axis=0, exclusive=False, reverse=False):
    source = torch.flip(x, [axis]) if reverse else x
    summed = torch.cumsum(source, dim=axis)
    if exclusive:
        summed = summed - source
    return torch.flip(summed, [axis]) if reverse else summed


@op("one_hot", params=("one_hot_vector_size", "axis", "on_value", "off_value"))
def one_hot(ctx, indices, one_hot_vector_size, axis=-1, on_value=1, off_value=0):
    dtype = ctx.output_dtypes[0]
    positions = torch.arange(int(one_hot_vector_size))
    hot = indices.to(torch.long).unsqueeze(-1) == positions
    result = torch.where(
        hot, torch.tensor(on_value, dtype=dtype), torch.tensor(off_value, dtype=dtype)
    )
    return result.movedim(-1, axis % result.dim())


@op("non_zero")
def non_zero(ctx, x):
    return torch.nonzero(x)


@op("argsort", params=("axis", "ascending"))
def argsort(ctx, x, axis=-1, ascending=False):
    return torch.argsort(x, dim=axis, descending=not ascending, stable=True)


@op("topk", params=("k", "axis", "ascending", "sort", "return_indices", "output_indices_dtype"))
def topk(ctx, x, k=1, axis=-1, ascending=False, sort=True, return_indices=True,
         output_indices_dtype="int32"):
    count = x.shape[axis] if k == -1 else k
    values, indices = torch.topk(x, count, dim=axis, largest=not ascending, sorted=True)
    return (values, indices) if return_indices else values
