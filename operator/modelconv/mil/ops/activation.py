"""Activation ops (coremltools `ops/defs/iOS15/activation.py`, iOS 17 variants)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import op


def _per_channel(values: torch.Tensor, rank: int) -> torch.Tensor:
    """Reshape a [C] tensor to broadcast along axis 1 of a rank-`rank` tensor."""
    return values.reshape([1, -1] + [1] * (rank - 2))


@op("relu")
def relu(ctx, x):
    return torch.relu(x)


@op("relu6")
def relu6(ctx, x):
    return torch.clamp(x, 0, 6)


@op("sigmoid")
def sigmoid(ctx, x):
    return torch.sigmoid(x)


@op("sigmoid_hard", params=("alpha", "beta"))
def sigmoid_hard(ctx, x, alpha, beta):
    return torch.clamp(x * alpha + beta, 0, 1)


@op("silu")
def silu(ctx, x):
    return F.silu(x)


@op("softplus")
def softplus(ctx, x):
    # log(1 + e^x), written in the overflow-free form.
    return torch.log1p(torch.exp(-torch.abs(x))) + torch.relu(x)


@op("softplus_parametric")
def softplus_parametric(ctx, x, alpha, beta):
    alpha = _per_channel(alpha, x.dim()).to(x.dtype)
    beta = _per_channel(beta, x.dim()).to(x.dtype)
    scaled = x * beta
    return alpha * (torch.log1p(torch.exp(-torch.abs(scaled))) + torch.relu(scaled))


@op("softsign")
def softsign(ctx, x):
    return x / (1 + torch.abs(x))


@op("softmax", params=("axis",))
def softmax(ctx, x, axis=-1):
    return torch.softmax(x, dim=axis)


@op("gelu", params=("mode",))
def gelu(ctx, x, mode="EXACT"):
    if mode == "EXACT":
        return F.gelu(x)
    if mode == "TANH_APPROXIMATION":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))
        return 0.5 * x * (1 + torch.tanh(inner))
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    raise ctx.unsupported(f"mode {mode!r}")


@op("elu", params=("alpha",))
def elu(ctx, x, alpha):
    return torch.where(x > 0, x, alpha * torch.expm1(x))


@op("leaky_relu", params=("alpha",))
def leaky_relu(ctx, x, alpha):
    return torch.where(x >= 0, x, x * alpha)


@op("clamped_relu", params=("alpha", "beta"))
def clamped_relu(ctx, x, alpha, beta):
    return torch.clamp(torch.where(x >= 0, x, x * alpha), max=beta)


@op("linear_activation", params=("alpha", "beta"))
def linear_activation(ctx, x, alpha, beta):
    return x * alpha + beta


@op("prelu")
def prelu(ctx, x, alpha):
    alpha = _per_channel(alpha, x.dim()).to(x.dtype)
    return torch.where(x > 0, x, x * alpha)


@op("scaled_tanh", params=("alpha", "beta"))
def scaled_tanh(ctx, x, alpha, beta):
    return alpha * torch.tanh(x * beta)


@op("thresholded_relu", params=("alpha",))
def thresholded_relu(ctx, x, alpha):
    return torch.where(x >= alpha, x, torch.zeros((), dtype=x.dtype))
