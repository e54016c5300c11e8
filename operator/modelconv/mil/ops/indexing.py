"""Gather, scatter and select (coremltools `ops/defs/iOS15/scatter_gather.py`, iOS 16/17).

Negative indices count from the end, as iOS 15 and 16 define; iOS 17 leaves them undefined, so
the older rule is kept. An index outside the axis raises `ExecutionError` instead of reading or
writing elsewhere. Scatter modes: `update` (with duplicate indices the last update wins), `add`,
`sub`, `mul`, `div`, `max`, `min`, each combining the data with the updates.
"""

from __future__ import annotations

import math

import torch

from ..registry import op

_SCATTER_PARAMS = ("axis", "mode", "validate_indices")


def _normalized(ctx, indices: torch.Tensor, size: int) -> torch.Tensor:
    index = indices.to(torch.long)
    index = torch.where(index < 0, index + size, index)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
        raise ctx.invalid(f"index out of range for an axis of size {size}")
    return index


@op("gather", params=("axis", "batch_dims", "validate_indices"))
def gather(ctx, x, indices, axis=0, batch_dims=0, validate_indices=False):
    axis = axis % x.dim()
    index = _normalized(ctx, indices, x.shape[axis])
    if batch_dims == 0:
        picked = x.index_select(axis, index.reshape(-1))
        return picked.reshape(list(x.shape[:axis]) + list(index.shape) + list(x.shape[axis + 1:]))
    batch_shape = list(x.shape[:batch_dims])
    flat_x = x.reshape([-1] + list(x.shape[batch_dims:]))
    flat_index = index.reshape([-1] + list(index.shape[batch_dims:]))
    inner_axis = axis - batch_dims
    parts = [
        gather(ctx, flat_x[b], flat_index[b], inner_axis) for b in range(flat_x.shape[0])
    ]
    result = torch.stack(parts)
    return result.reshape(batch_shape + list(result.shape[1:]))


@op("gather_along_axis", params=("axis", "validate_indices"))
def gather_along_axis(ctx, x, indices, axis=0, validate_indices=False):
    axis = axis % x.dim()
    return torch.gather(x, axis, _normalized(ctx, indices, x.shape[axis]))


@op("gather_nd", params=("batch_dims", "validate_indices"))
def gather_nd(ctx, x, indices, batch_dims=0, validate_indices=False):
    depth = indices.shape[-1]
    batch_shape = list(x.shape[:batch_dims])
    batches = math.prod(batch_shape)
    flat_x = x.reshape([batches] + list(x.shape[batch_dims:]))
    flat_index = indices.reshape([batches] + list(indices.shape[batch_dims:]))
    columns = [
        _normalized(ctx, flat_index[..., k], flat_x.shape[1 + k]) for k in range(depth)
    ]
    batch_index = torch.arange(batches).reshape([batches] + [1] * (flat_index.dim() - 2))
    picked = flat_x[(batch_index, *columns)]
    return picked.reshape(batch_shape + list(picked.shape[1:]))


def _index_combine(ctx, data, dim, index, updates, mode):
    """Combine `updates` into `data` at `index` along `dim` (index_* ops, 1-D index)."""
    updates = updates.to(data.dtype)
    if mode == "update":
        return data.index_copy(dim, index, updates)
    if mode == "add":
        return data.index_add(dim, index, updates)
    if mode == "sub":
        return data.index_add(dim, index, -updates)
    if mode in ("mul", "div"):
        factors = updates if mode == "mul" else torch.reciprocal(updates)
        return data.index_reduce(dim, index, factors, "prod", include_self=True)
    if mode in ("max", "min"):
        return data.index_reduce(dim, index, updates, "a" + mode, include_self=True)
    raise ctx.unsupported(f"mode {mode!r}")


@op("scatter", params=_SCATTER_PARAMS)
def scatter(ctx, data, indices, updates, axis=0, mode="add", validate_indices=False):
    axis = axis % data.dim()
    index = _normalized(ctx, indices, data.shape[axis]).reshape(-1)
    return _index_combine(ctx, data, axis, index, updates, mode)


@op("scatter_along_axis", params=_SCATTER_PARAMS)
def scatter_along_axis(ctx, data, indices, updates, axis=0, mode="add", validate_indices=False):
    axis = axis % data.dim()
    index = _normalized(ctx, indices, data.shape[axis])
    updates = updates.to(data.dtype)
    if mode == "update":
        return data.scatter(axis, index, updates)
    if mode == "add":
        return data.scatter_add(axis, index, updates)
    if mode == "sub":
        return data.scatter_add(axis, index, -updates)
    if mode in ("mul", "div"):
        factors = updates if mode == "mul" else torch.reciprocal(updates)
        return data.scatter_reduce(axis, index, factors, "prod", include_self=True)
    if mode in ("max", "min"):
        return data.scatter_reduce(axis, index, updates, "a" + mode, include_self=True)
    raise ctx.unsupported(f"mode {mode!r}")


@op("scatter_nd", params=("mode", "validate_indices"))
def scatter_nd(ctx, data, indices, updates, mode="add", validate_indices=False):
    depth = indices.shape[-1]
    outer = list(data.shape[:depth])
    # Address the first `depth` axes as one flat axis of size prod(outer).
    flat_index = torch.zeros(indices.shape[:-1], dtype=torch.long)
    for k in range(depth):
        flat_index = flat_index * outer[k] + _normalized(ctx, indices[..., k], outer[k])
    inner = list(data.shape[depth:])
    flat_data = data.reshape([math.prod(outer)] + inner)
    flat_updates = updates.reshape([-1] + inner)
    combined = _index_combine(ctx, flat_data, 0, flat_index.reshape(-1), flat_updates, mode)
    return combined.reshape(data.shape)


@op("select")
def select(ctx, cond, a, b):
    dtype = ctx.output_dtypes[0]
    return torch.where(cond.to(torch.bool), a.to(dtype), b.to(dtype))
