"""Linear algebra: linear, matmul, einsum and scaled dot-product attention.

Sources: coremltools `ops/defs/iOS15/linear.py`, `iOS17/linear.py`, `iOS18/transformers.py`.
Since iOS 17 the weight (linear) or the constant operand (matmul) may have another dtype than
the activation. It is cast to the output dtype, which is the activation's.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from ..registry import UPCAST, op


def _integer_safe(function, *tensors, dtype):
    """Run `function` in float64 for integer operands, which torch's BLAS calls reject."""
    if dtype.is_floating_point:
        return function(*(tensor.to(dtype) for tensor in tensors))
    return function(*(tensor.double() for tensor in tensors))


def _compute_dtype(ctx, x):
    """Return the dtype to multiply in: the output dtype, or float32 for an upcast float16 op."""
    dtype = ctx.output_dtypes[0]
    if dtype == torch.float16 and x.dtype == torch.float32:
        return torch.float32
    return dtype


# At program precision a float16 product is computed in float32 from the float16 values and
# rounded once to float16 by the plan. torch's float16 CPU matrix product also accumulates in
# float32, and on CPUs without float16 arithmetic it took about 30 times as long as float32
# (torch 2.13, AMD EPYC with AVX-512 but no AVX512-FP16).
@op("linear", fp16=UPCAST)
def linear(ctx, x, weight, bias=None):
    dtype = _compute_dtype(ctx, x)
    if bias is None:
        return _integer_safe(F.linear, x, weight, dtype=dtype)
    return _integer_safe(F.linear, x, weight, bias, dtype=dtype)


@op("matmul", params=("transpose_x", "transpose_y"), fp16=UPCAST)
def matmul(ctx, x, y, transpose_x=False, transpose_y=False):
    if transpose_x and x.dim() > 1:
        x = x.transpose(-1, -2)
    if transpose_y and y.dim() > 1:
        y = y.transpose(-1, -2)
    return _integer_safe(torch.matmul, x, y, dtype=_compute_dtype(ctx, x))


@op("einsum", params=("equation",))
def einsum(ctx, values, equation):
    operands = _broadcast_einsum_operands(ctx, equation, list(values))
    return torch.einsum(equation, *operands)


def _broadcast_einsum_operands(ctx, equation: str, operands):
    """Expand size-1 axes to the size other operands give the same letter.

    The op broadcasts its batch axes (for example B and H of "nchw,nwhu->nchu"), which
    torch.einsum does not do for named axes.
    """
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    if len(inputs) != len(operands) or any(not re.fullmatch(r"[a-zA-Z]*", item) for item in inputs):
        raise ctx.unsupported(f"equation {equation!r}")
    sizes: dict[str, int] = {}
    for letters, operand in zip(inputs, operands):
        for letter, size in zip(letters, operand.shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return [
        operand.expand([sizes[letter] for letter in letters])
        for letters, operand in zip(inputs, operands)
    ]


@op("scaled_dot_product_attention")
def scaled_dot_product_attention(ctx, query, key, value, attn_mask=None):
    # Written out as the op defines it, so a fully masked row gives NaN as softmax does.
    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(query.shape[-1])
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.to(scores.dtype)
    return torch.matmul(torch.softmax(scores, dim=-1), value)
