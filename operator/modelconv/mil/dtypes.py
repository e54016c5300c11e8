"""MIL data types and their torch counterparts, and the two execution precisions.

torch has no 1- to 6-bit integers and only partial unsigned support. So sub-byte types are
stored in `int8`/`uint8` tensors and `uint16`/`uint32` in wider signed types, which fit every
value of the MIL type. Only the constexpr ops (compressed weights) use the sub-byte types.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import InvalidInput

PROGRAM = "program"
FP32 = "fp32"
PRECISIONS = (PROGRAM, FP32)

_TORCH_DTYPES = {
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp64": torch.float64,
    "int4": torch.int8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint1": torch.uint8,
    "uint2": torch.uint8,
    "uint3": torch.uint8,
    "uint4": torch.uint8,
    "uint6": torch.uint8,
    "uint8": torch.uint8,
    "uint16": torch.int32,
    "uint32": torch.int64,
    "bool": torch.bool,
}

_NUMPY_DTYPES = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.int8: np.int8,
    torch.int16: np.int16,
    torch.int32: np.int32,
    torch.int64: np.int64,
    torch.uint8: np.uint8,
    torch.bool: np.bool_,
}

def torch_dtype(mil_dtype: str, precision: str) -> torch.dtype:
    """Return the torch dtype that stores values of `mil_dtype` at `precision`.

    At `fp32` precision every fp16 value is stored as fp32, so the program computes as if it
    had been converted with float32 compute precision.
    """
    if precision == FP32 and mil_dtype == "fp16":
        return torch.float32
    try:
        return _TORCH_DTYPES[mil_dtype]
    except KeyError:
        raise TypeError(f"MIL data type {mil_dtype!r} has no torch counterpart") from None


def numpy_dtype(dtype: torch.dtype):
    """Return the numpy dtype matching a torch dtype."""
    return _NUMPY_DTYPES[dtype]


def validate_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InvalidInput(
            f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}"
        )
    return precision
