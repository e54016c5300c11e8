"""Compressed-weight ops (constexpr_*) and activation quantization (quantize, dequantize).

Sources: coremltools `ops/defs/iOS16/constexpr_ops.py`, `iOS18/compression.py`,
`iOS17/quantization_ops.py`. The executor folds constexpr ops into constants when it compiles
a program, so they cost nothing per call. Decompression computes in float32 and the result is
rounded to the declared output dtype.

Packed iOS 16 data (palette indices, sparsity masks) is read least significant bit first, as
the op definitions specify. coremltools unpacks the iOS 18 sub-byte types into one byte per
value when it loads a program.
"""

from __future__ import annotations

import math

import torch

from ..registry import op


def _along_axis(values: torch.Tensor, rank: int, axis: int) -> torch.Tensor:
    """Reshape a scalar or [C] vector to broadcast along `axis` of a rank-`rank` tensor."""
    if values.numel() == 1 and values.dim() <= 1:
        return values.reshape([])
    shape = [1] * rank
    shape[axis % rank] = -1
    return values.reshape(shape)


def _unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Read `count` unsigned `bits`-wide values packed LSB first into the bytes of `packed`."""
    bit_planes = (packed.to(torch.long).unsqueeze(1) >> torch.arange(8)) & 1
    stream = bit_planes.reshape(-1)[: count * bits].reshape(count, bits)
    return (stream << torch.arange(bits)).sum(dim=1)


@op("constexpr_affine_dequantize", params=("axis",))
def constexpr_affine_dequantize(ctx, quantized_data, zero_point, scale, axis):
    rank = quantized_data.dim()
    data = quantized_data.float()
    offset = _along_axis(zero_point.float(), rank, axis)
    factor = _along_axis(scale.float(), rank, axis)
    return factor * (data - offset)


@op("constexpr_cast", params=("output_dtype",))
def constexpr_cast(ctx, source_val, output_dtype):
    return source_val.to(ctx.output_dtypes[0])


@op("constexpr_lut_to_dense", params=("shape", "vector_axis"))
def constexpr_lut_to_dense(ctx, indices, lut, shape=None, vector_axis=None):
    if shape is not None:
        # iOS 16: a flat palette, and the indices packed into bytes.
        count = math.prod(shape)
        bits = int(math.log2(lut.numel()))
        return lut[_unpack_bits(indices, bits, count)].reshape(shape)
    return _lookup_blockwise(ctx, indices.to(torch.long), lut, vector_axis)


def _block_index(index_shape, group_counts):
    """Per axis, the palette group of each position (group sizes are shape / count)."""
    rank = len(index_shape)
    groups = []
    for axis, (size, count) in enumerate(zip(index_shape, group_counts)):
        view = [1] * rank
        view[axis] = -1
        groups.append((torch.arange(size) // (size // count)).reshape(view))
    return groups


def _lookup_blockwise(ctx, indices, lut, vector_axis):
    """iOS 18: lut is [*groups, palettes, vector_size]; each index selects a vector."""
    rank = indices.dim()
    groups = _block_index(list(indices.shape), list(lut.shape[:rank]))
    values = lut[(*groups, indices)]  # [*indices.shape, vector_size]
    vector_size = lut.shape[-1]
    if vector_size == 1:
        return values.squeeze(-1)
    if vector_axis is None:
        raise ctx.invalid("vector palettization needs vector_axis")
    axis = vector_axis % rank
    # Each vector fills vector_size consecutive positions along vector_axis.
    moved = values.movedim(-1, axis + 1)
    shape = list(indices.shape)
    shape[axis] *= vector_size
    return moved.reshape(shape)


@op("constexpr_sparse_to_dense", params=("shape",))
def constexpr_sparse_to_dense(ctx, nonzero_data, mask, shape=None):
    if shape is not None:
        # iOS 16: a flat bit mask packed into bytes.
        present = _unpack_bits(mask, 1, math.prod(shape)).bool().reshape(shape)
    else:
        present = mask.bool()
    return _scatter_nonzero(present, nonzero_data)


def _scatter_nonzero(present: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    dense = torch.zeros(present.shape, dtype=values.dtype)
    dense[present] = values
    return dense


def _blockwise(data, scale, offset):
    """scale * (data - offset), scale and offset repeated over blocks of data."""
    result = data.float()
    factor, shift = scale.float(), None if offset is None else offset.float()
    for axis, (size, count) in enumerate(zip(data.shape, scale.shape)):
        factor = factor.repeat_interleave(size // count, dim=axis)
        if shift is not None:
            shift = shift.repeat_interleave(size // count, dim=axis)
    if shift is not None:
        result = result - shift
    return result * factor


@op("constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(ctx, data, scale, offset=None):
    return _blockwise(data, scale, offset)


@op("constexpr_lut_to_sparse", params=("vector_axis",))
def constexpr_lut_to_sparse(ctx, indices_mask, indices_nonzero_data, lut, vector_axis=None):
    present = indices_mask.bool()
    dense_indices = torch.zeros(present.shape, dtype=torch.long)
    dense_indices[present] = indices_nonzero_data.to(torch.long)
    dense_values = _lookup_blockwise(ctx, dense_indices, lut, vector_axis)
    vector_size = lut.shape[-1]
    if vector_size > 1:
        present = present.repeat_interleave(vector_size, dim=vector_axis % present.dim())
    return present.to(torch.uint8), dense_values[present]


@op("constexpr_sparse_blockwise_shift_scale")
def constexpr_sparse_blockwise_shift_scale(ctx, data_mask, nonzero_data, scale, offset=None):
    present = data_mask.bool()
    dense = _blockwise(_scatter_nonzero(present, nonzero_data), scale, offset)
    return present.to(torch.uint8), dense[present]


_INTEGER_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


@op("quantize", params=("axis", "output_dtype"))
def quantize(ctx, input, scale, output_dtype, zero_point=None, axis=None):
    if output_dtype not in _INTEGER_RANGES:
        raise ctx.unsupported(f"output_dtype {output_dtype!r}")
    rank = input.dim()
    axis = 0 if axis is None else axis
    values = torch.round(input.float() / _along_axis(scale.float(), rank, axis))
    if zero_point is not None:
        values = values + _along_axis(zero_point.float(), rank, axis)
    low, high = _INTEGER_RANGES[output_dtype]
    return torch.clamp(values, low, high)


@op("dequantize", params=("axis",))
def dequantize(ctx, input, scale, zero_point=None, axis=None):
    rank = input.dim()
    axis = 0 if axis is None else axis
    values = input.float()
    if zero_point is not None:
        values = values - _along_axis(zero_point.float(), rank, axis)
    return values * _along_axis(scale.float(), rank, axis)
