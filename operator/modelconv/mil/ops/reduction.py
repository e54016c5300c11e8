"""Reductions (coremltools `ops/defs/iOS15/reduction.py`, iOS 17 variants).

`axes` absent means every axis; an empty `axes` list reduces nothing. Integer inputs are
reduced in float64 and cast back to the declared integer type.
"""

from __future__ import annotations

import torch

from ..registry import op


def _axes(x: torch.Tensor, axes) -> list[int]:
    if axes is None:
        return list(range(x.dim()))
    if isinstance(axes, int):
        axes = [axes]
    return sorted({axis % x.dim() if x.dim() else 0 for axis in axes})


def _reduce(x, axes, keep_dims, reducer):
    dims = _axes(x, axes)
    if not dims:
        return x
    source = x if x.dtype.is_floating_point else x.double()
    return reducer(source, dims, keep_dims)


def _product(x, dims, keep_dims):
    for dim in sorted(dims, reverse=True):
        x = torch.prod(x, dim=dim, keepdim=keep_dims)
    return x


_REDUCERS = {
    "reduce_sum": lambda x, dims, keep: torch.sum(x, dim=dims, keepdim=keep),
    "reduce_mean": lambda x, dims, keep: torch.mean(x, dim=dims, keepdim=keep),
    "reduce_max": lambda x, dims, keep: torch.amax(x, dim=dims, keepdim=keep),
    "reduce_min": lambda x, dims, keep: torch.amin(x, dim=dims, keepdim=keep),
    "reduce_prod": _product,
    "reduce_l1_norm": lambda x, dims, keep: torch.sum(torch.abs(x), dim=dims, keepdim=keep),
    "reduce_l2_norm": lambda x, dims, keep: torch.sqrt(
        torch.sum(x * x, dim=dims, keepdim=keep)
    ),
    "reduce_sum_square": lambda x, dims, keep: torch.sum(x * x, dim=dims, keepdim=keep),
    "reduce_log_sum": lambda x, dims, keep: torch.log(torch.sum(x, dim=dims, keepdim=keep)),
    "reduce_log_sum_exp": lambda x, dims, keep: torch.logsumexp(x, dim=dims, keepdim=keep),
}


def _register_reductions():
    for op_type, reducer in _REDUCERS.items():

        def compute(ctx, x, axes=None, keep_dims=False, _reducer=reducer):
            return _reduce(x, axes, keep_dims, _reducer)

        compute.__qualname__ = compute.__name__ = op_type
        op(op_type, params=("axes", "keep_dims"))(compute)


_register_reductions()


# `output_dtype` (iOS 17) only selects the declared output type, which the executor applies.
@op("reduce_argmax", params=("axis", "keep_dims", "output_dtype"))
def reduce_argmax(ctx, x, axis=-1, keep_dims=False, output_dtype="int32"):
    return torch.argmax(x, dim=axis, keepdim=keep_dims)


@op("reduce_argmin", params=("axis", "keep_dims", "output_dtype"))
def reduce_argmin(ctx, x, axis=-1, keep_dims=False, output_dtype="int32"):
    return torch.argmin(x, dim=axis, keepdim=keep_dims)
