"""Elementwise ops with numpy broadcasting: arithmetic, comparisons, logic, unary math, cast.

Sources: coremltools `ops/defs/iOS15/elementwise_binary.py` and `elementwise_unary.py` (with
the iOS 17 variants). `mod` and `floor_div` follow Python's operators (the result of `mod` has
the sign of the divisor); `round` rounds halves to even, as numpy does. Integer `real_div`
divides exactly and then truncates toward zero when the result is cast back to int32.
"""

from __future__ import annotations

import torch

from ..registry import op, register

_BINARY = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "real_div": torch.true_divide,
    "floor_div": torch.floor_divide,
    "mod": torch.remainder,
    "pow": torch.pow,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "equal": torch.eq,
    "not_equal": torch.ne,
    "greater": torch.gt,
    "greater_equal": torch.ge,
    "less": torch.lt,
    "less_equal": torch.le,
    "logical_and": torch.logical_and,
    "logical_or": torch.logical_or,
    "logical_xor": torch.logical_xor,
}

_UNARY = {
    "abs": torch.abs,
    "acos": torch.acos,
    "asin": torch.asin,
    "atan": torch.atan,
    "atanh": torch.atanh,
    "ceil": torch.ceil,
    "cos": torch.cos,
    "cosh": torch.cosh,
    "erf": torch.erf,
    "exp": torch.exp,
    "exp2": torch.exp2,
    "floor": torch.floor,
    "logical_not": torch.logical_not,
    "round": torch.round,
    "sign": torch.sign,
    "sin": torch.sin,
    "sinh": torch.sinh,
    "sqrt": torch.sqrt,
    "square": torch.square,
    "tan": torch.tan,
    "tanh": torch.tanh,
}


def _binary(function):
    def compute(ctx, x, y):
        return function(x, y)

    compute.__qualname__ = compute.__name__ = function.__name__
    return compute


def _unary(function):
    def compute(ctx, x):
        return function(x)

    compute.__qualname__ = compute.__name__ = function.__name__
    return compute


for _op_type, _function in _BINARY.items():
    register(_op_type, _binary(_function))

for _op_type, _function in _UNARY.items():
    register(_op_type, _unary(_function))


@op("clip", params=("alpha", "beta"))
def clip(ctx, x, alpha, beta):
    return torch.clamp(x, min=alpha, max=beta)


@op("threshold", params=("alpha",))
def threshold(ctx, x, alpha):
    return torch.clamp(x, min=alpha)


@op("inverse", params=("epsilon",))
def inverse(ctx, x, epsilon=1e-4):
    return torch.reciprocal(x + epsilon)


@op("log", params=("epsilon",))
def log(ctx, x, epsilon=1e-45):
    return torch.log(x + epsilon)


@op("rsqrt", params=("epsilon",))
def rsqrt(ctx, x, epsilon=1e-12):
    return torch.rsqrt(x + epsilon)


@op("cast", params=("dtype",))
def cast(ctx, x, dtype):
    # `ctx.output_dtypes` already maps fp16 to fp32 when running at fp32 precision.
    return x.to(ctx.output_dtypes[0])
