"""Pooling (coremltools `ops/defs/iOS15/pool.py`).

Symmetric padding of at most half a kernel maps onto torch's pooling directly (torch's
`ceil_mode` rule is the one the op definition cites). Other paddings are applied explicitly.
Max pooling pads with -inf. Average and L2 pooling sum over the window, and average pooling
divides by the number of counted elements, where padded elements count unless
`exclude_padding_from_average` is set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import op
from .conv import spatial_padding, torch_pad_order

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {2: F.avg_pool2d, 3: F.avg_pool3d}
_POOL_PARAMS = ("kernel_sizes", "strides", "pad_type", "pad", "ceil_mode")


def _layout(ctx, x, kernel_sizes, strides, pad_type, pad):
    rank = x.dim() - 2
    if rank not in _MAX_POOL:
        raise ctx.unsupported(f"{rank} spatial dimensions")
    strides = strides or [1] * rank
    pairs = spatial_padding(ctx, pad_type, pad, x.shape[2:], kernel_sizes, strides, [1] * rank)
    symmetric = all(
        before == after and before <= k // 2 for (before, after), k in zip(pairs, kernel_sizes)
    )
    return strides, pairs, symmetric


@op("max_pool", params=_POOL_PARAMS)
def max_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    strides, pairs, symmetric = _layout(ctx, x, kernel_sizes, strides, pad_type, pad)
    pool = _MAX_POOL[x.dim() - 2]
    if symmetric:
        return pool(x, kernel_sizes, strides, [before for before, _ in pairs], 1, ceil_mode)
    padded = F.pad(x, torch_pad_order(pairs), value=float("-inf"))
    return pool(padded, kernel_sizes, strides, 0, 1, ceil_mode)


@op("avg_pool", params=_POOL_PARAMS + ("exclude_padding_from_average",))
def avg_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False,
             exclude_padding_from_average=False):
    strides, pairs, symmetric = _layout(ctx, x, kernel_sizes, strides, pad_type, pad)
    rank = x.dim() - 2
    if symmetric and rank in _AVG_POOL:
        padding = [before for before, _ in pairs]
        return _AVG_POOL[rank](
            x, kernel_sizes, strides, padding, ceil_mode, not exclude_padding_from_average
        )
    total = _window_sum(x, kernel_sizes, strides, pairs, ceil_mode, 0.0)
    ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype)
    counted = 0.0 if exclude_padding_from_average else 1.0
    count = _window_sum(ones, kernel_sizes, strides, pairs, ceil_mode, counted)
    return total / count


@op("l2_pool", params=_POOL_PARAMS)
def l2_pool(ctx, x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    strides, pairs, _ = _layout(ctx, x, kernel_sizes, strides, pad_type, pad)
    return torch.sqrt(_window_sum(x * x, kernel_sizes, strides, pairs, ceil_mode, 0.0))


def _window_sum(x, kernel_sizes, strides, pairs, ceil_mode, pad_value):
    """Sum over each pooling window, padding with `pad_value`."""
    padded = F.pad(x, torch_pad_order(pairs), value=pad_value)
    rank = x.dim() - 2
    if rank == 1:
        # avg_pool1d has no divisor_override, so pool a height-1 image instead.
        summed = F.avg_pool2d(
            padded.unsqueeze(2), [1, kernel_sizes[0]], [1, strides[0]], 0, ceil_mode, True, 1
        )
        return summed.squeeze(2)
    return _AVG_POOL[rank](padded, kernel_sizes, strides, 0, ceil_mode, True, 1)
