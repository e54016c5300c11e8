"""The registry of MIL op implementations.

Each MIL op type has exactly one implementation, registered with the `op` decorator:

    @op("softmax", params=("axis",))
    def softmax(ctx, x, axis=-1):
        return torch.softmax(x, axis)

An implementation receives an `OpContext` and the op's inputs by their MIL names. Inputs listed
in `params` arrive as Python values (int, float, bool, str or nested lists), all others as torch
tensors (or lists of tensors for tuple inputs). An input the program omits is not passed, so
the implementation's Python default must equal the op definition's default. The result is a
tensor, or a tuple of tensors for ops with several outputs. The executor casts each output to
the dtype the program declares.

`fp16="upcast"` marks ops computed in fp32 even at program precision: their fp16 inputs are
widened to fp32 and their outputs rounded back to fp16. It is used where torch's CPU kernels
have no float16 version and for the recurrent ops, whose state the executor carries in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .errors import ExecutionError, UnsupportedOp

NATIVE = "native"
UPCAST = "upcast"


@dataclass(frozen=True)
class OpImplementation:
    """One registered implementation of a MIL op type."""

    op_type: str
    function: Callable[..., Any]
    params: frozenset[str]
    fp16: str
    runs_blocks: bool = False
    prepare: Callable[..., dict] | None = None
    specialize: Callable[..., Callable | None] | None = None


@dataclass
class OpContext:
    """Facts about the op an implementation runs, fixed when the program is compiled.

    `output_dtypes` are the torch dtypes of the outputs at the current precision and
    `output_shapes` the shapes the program declares, with None for a symbolic dimension (or
    for the whole shape when the rank is unknown). `opset` is the Core ML specification
    version of the program (6 is iOS 15, 7 iOS 16, 8 iOS 17, 9 iOS 18). `blocks` holds the
    compiled nested blocks of control-flow ops.
    """

    name: str
    op_type: str
    output_dtypes: tuple[torch.dtype, ...]
    output_shapes: tuple[tuple[int | None, ...] | None, ...]
    precision: str
    opset: int
    blocks: tuple[Any, ...] = field(default=())

    def unsupported(self, detail: str) -> UnsupportedOp:
        """Return the error for an option of this op that the executor does not implement."""
        return UnsupportedOp(self.op_type, self.name, detail)

    def invalid(self, message: str) -> ExecutionError:
        """Return the error for inputs that violate the op's definition."""
        return ExecutionError(self.op_type, self.name, message)


_REGISTRY: dict[str, OpImplementation] = {}


def register(
    op_type: str,
    function: Callable[..., Any],
    params: tuple[str, ...] = (),
    fp16: str = NATIVE,
    runs_blocks: bool = False,
    prepare: Callable[..., dict] | None = None,
    specialize: Callable[..., Callable | None] | None = None,
) -> None:
    """Register `function` as the implementation of `op_type`; a second registration raises.

    A control-flow op (`runs_blocks=True`) also receives `env`, the environment its nested
    blocks read outer vars from. `prepare(ctx, inputs)`, when given, runs once when the
    program is compiled, on the inputs known at that time. It returns them transformed (a
    weight cast to the output dtype, say) and must not modify its argument.

    `specialize(ctx, inputs, shapes)`, when given, also runs once at compile time, for an op
    with one output whose run-time inputs are tensors with static declared shapes. `inputs`
    are the prepared compile-time inputs and `shapes` maps each run-time input's name to its
    declared shape. It returns a function of the run-time inputs, by name, that computes the
    op for exactly those shapes with every choice that depends on them made in advance, or
    None. A call whose actual shapes differ runs `function`.
    """
    if fp16 not in (NATIVE, UPCAST):
        raise ValueError(f"fp16 must be {NATIVE!r} or {UPCAST!r}, got {fp16!r}")
    existing = _REGISTRY.get(op_type)
    if existing is not None:
        raise ValueError(
            f"MIL op type {op_type!r} is already registered by "
            f"{existing.function.__module__}.{existing.function.__qualname__}"
        )
    _REGISTRY[op_type] = OpImplementation(
        op_type, function, frozenset(params), fp16, runs_blocks, prepare, specialize
    )


def op(
    op_type: str,
    params: tuple[str, ...] = (),
    fp16: str = NATIVE,
    runs_blocks: bool = False,
    prepare: Callable[..., dict] | None = None,
    specialize: Callable[..., Callable | None] | None = None,
):
    """Decorate a function as the implementation of one MIL op type."""

    def decorate(function):
        register(op_type, function, params, fp16, runs_blocks, prepare, specialize)
        return function

    return decorate


def lookup(op_type: str, op_name: str) -> OpImplementation:
    """Return the implementation of `op_type`, or raise `UnsupportedOp` naming the op."""
    _load_op_modules()
    implementation = _REGISTRY.get(op_type)
    if implementation is None:
        raise UnsupportedOp(op_type, op_name)
    return implementation


def registered_op_types() -> list[str]:
    """Return the sorted list of every MIL op type the executor implements."""
    _load_op_modules()
    return sorted(_REGISTRY)


def implementation_of(op_type: str) -> OpImplementation | None:
    _load_op_modules()
    return _REGISTRY.get(op_type)


def _load_op_modules() -> None:
    # Importing the ops package registers every topic module's ops; Python runs each module
    # once, so nothing is registered twice.
    from . import ops  # noqa: F401
