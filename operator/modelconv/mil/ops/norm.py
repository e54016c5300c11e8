"""Normalization ops (coremltools `ops/defs/iOS15/normalization.py`, iOS 17 variants).

Variances are population variances and `epsilon` is added to the variance inside the square
root, as the op definitions state. Since iOS 17 the parameters may have another dtype than
`x`; they are cast to the dtype of `x`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import UPCAST, op


def _like(value, x):
    return None if value is None else value.to(x.dtype)


@op("batch_norm", params=("epsilon",))
def batch_norm(ctx, x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    return F.batch_norm(
        x, _like(mean, x), _like(variance, x), _like(gamma, x), _like(beta, x), False, 0.0,
        epsilon,
    )


@op("instance_norm", params=("epsilon",))
def instance_norm(ctx, x, gamma=None, beta=None, epsilon=1e-5):
    return F.instance_norm(x, weight=_like(gamma, x), bias=_like(beta, x), eps=epsilon)


@op("layer_norm", params=("axes", "epsilon"))
def layer_norm(ctx, x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    rank = x.dim()
    axes = sorted({axis % rank for axis in (range(rank) if axes is None else axes)})
    if not axes:
        raise ctx.invalid("layer_norm needs at least one axis")
    trailing = axes == list(range(rank - len(axes), rank))
    if trailing:
        shape = list(x.shape[rank - len(axes):])
        weight = None if gamma is None else gamma.to(x.dtype).reshape(shape)
        bias = None if beta is None else beta.to(x.dtype).reshape(shape)
        return F.layer_norm(x, shape, weight, bias, epsilon)
    # Axes that are not the trailing ones: normalize explicitly, broadcasting gamma and beta.
    broadcast = [x.shape[axis] if axis in axes else 1 for axis in range(rank)]
    centered = x - x.mean(dim=axes, keepdim=True)
    variance = (centered * centered).mean(dim=axes, keepdim=True)
    result = centered / torch.sqrt(variance + epsilon)
    if gamma is not None:
        result = result * gamma.to(x.dtype).reshape(broadcast)
    if beta is not None:
        result = result + beta.to(x.dtype).reshape(broadcast)
    return result


@op("l2_norm", params=("epsilon",))
def l2_norm(ctx, x, epsilon=1e-6):
    # The last three axes are normalized together and the leading axes are batch. For rank
    # 1 and 2 the op's reference slices the shape the same way, with Python's negative
    # slicing: the batch is shape[:-2] (nothing) for rank 1 and shape[:-1] for rank 2.
    batch = tuple(x.shape[: x.dim() - 3])
    flat = x.reshape(math.prod(batch), -1)
    square_sum = torch.sum(flat * flat, dim=1, keepdim=True)
    return (flat / torch.sqrt(square_sum + epsilon)).reshape(x.shape)


@op("local_response_norm", params=("size", "alpha", "beta", "k"), fp16=UPCAST)
def local_response_norm(ctx, x, size, alpha=1e-4, beta=0.75, k=1.0):
    # torch's window over channels spans size // 2 before and (size - 1) // 2 after.
    return F.local_response_norm(x, size, alpha, beta, k)
