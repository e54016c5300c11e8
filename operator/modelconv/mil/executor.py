"""The public entry points: `load_program` and `execute`.

A `LoadedProgram` keeps the program description and compiles it lazily, once per precision,
so repeated calls pay only for the ops themselves.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import torch

from . import dtypes
from .errors import InvalidInput
from .plan import ExecutionPlan
from .program import InputSpec, Program, read_program
from .registry import implementation_of


class LoadedProgram:
    """A Core ML program ready to execute on Linux.

    `input_names` and `output_names` are the Core ML feature names. `op_types` is the set of
    MIL op types in the main function, nested blocks and `const` included. `ops` counts the
    ops that run, which is every op except `const`. `is_fp16` is true when any op computes in
    float16.
    """

    def __init__(self, program: Program, path: str):
        self.path = path
        self.program = program
        self.inputs = {spec.name: spec for spec in program.inputs}
        self.input_names = [spec.name for spec in program.inputs]
        self.output_names = list(program.output_names)
        nodes = list(iterate_ops(program.block.ops))
        self.op_types = set(program.op_types)
        self.ops = len(nodes)
        self.is_fp16 = any(
            kind.dtype == "fp16" for node in nodes for _, kind in node.outputs
        )
        self._plans: dict[tuple[str, bool], ExecutionPlan] = {}

    @property
    def spec_version(self) -> int:
        return self.program.spec_version

    @property
    def unsupported_op_types(self) -> set[str]:
        """Op types of this program that the executor does not implement (empty when none).

        `execute` raises `UnsupportedOp` for the first of them; this lists them all up front.
        """
        return {
            op_type for op_type in self.op_types
            if op_type != "const" and implementation_of(op_type) is None
        }

    @property
    def shape_mismatches(self) -> dict[str, str]:
        """Outputs whose computed shape differed from the declared one, in runs so far.

        Maps the output var name to a message. A mismatch means coremltools declares a type
        that the op's definition does not produce, which is worth a look in the converter.
        """
        found: dict[str, str] = {}
        for plan in self._plans.values():
            found.update(plan.shape_mismatches)
        return found

    def plan(self, precision: str, fused: bool = True) -> ExecutionPlan:
        """Return the program compiled for `precision`, compiling it on first use.

        A fused plan (see `fusion`) gives the same results faster but keeps no intermediate
        values, so runs that return them use the unfused plan.
        """
        dtypes.validate_precision(precision)
        plan = self._plans.get((precision, fused))
        if plan is None:
            sibling = self._plans.get((precision, not fused))
            consts = None if sibling is None else sibling.consts
            plan = ExecutionPlan(self.program, precision, fused=fused, consts=consts)
            self._plans[(precision, fused)] = plan
        return plan

    def __repr__(self) -> str:
        return (
            f"LoadedProgram({self.path!r}, inputs={self.input_names}, "
            f"outputs={self.output_names}, ops={self.ops}, fp16={self.is_fp16})"
        )


def iterate_ops(ops):
    """Yield every op of a block, depth first through nested blocks, in program order."""
    for node in ops:
        yield node
        for block in node.blocks:
            yield from iterate_ops(block.ops)


def load_program(path: str | os.PathLike) -> LoadedProgram:
    """Load the Core ML program saved at `path` (an .mlpackage) for execution on Linux.

    Raises `ProgramLoadError` for a missing or unreadable package. Ops the executor does not
    implement raise `UnsupportedOp` when the program is first executed.
    """
    return LoadedProgram(read_program(path), os.fspath(path))


def execute(
    program: LoadedProgram,
    inputs: Mapping[str, Any],
    precision: str = dtypes.PROGRAM,
    intermediates: bool = False,
) -> dict[str, np.ndarray]:
    """Run `program` on `inputs` (numpy arrays by Core ML input name).

    `precision="program"` computes in the program's own dtypes (float16 ops as float16), and
    `precision="fp32"` stores every float16 value as float32. Returns the outputs by Core ML
    output name. With `intermediates=True` the result also contains every op output by var
    name.
    """
    plan = program.plan(precision, fused=not intermediates)
    env = bind_inputs(program, inputs, precision)
    with torch.inference_mode():
        plan.main.run(env)
        results = dict(zip(program.output_names, plan.main.outputs(env)))
        if intermediates:
            results = {**_op_outputs(program, env), **results}
        return {name: to_numpy(value) for name, value in results.items()}


def _op_outputs(program: LoadedProgram, env: dict) -> dict[str, Any]:
    names = (name for node in iterate_ops(program.program.block.ops) for name, _ in node.outputs)
    return {name: env[name] for name in names if name in env}


def to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        # Convolutions compute in channels-last layout; callers get C-ordered arrays.
        return value.detach().cpu().contiguous().numpy()
    return np.asarray(value)


def bind_inputs(program: LoadedProgram, inputs: Mapping[str, Any], precision: str) -> dict:
    """Validate `inputs` against the program's inputs and convert them to torch tensors."""
    if not isinstance(inputs, Mapping):
        raise InvalidInput(
            f"inputs must be a mapping from input name to array, got {type(inputs).__name__}"
        )
    unknown = sorted(set(inputs) - set(program.inputs))
    if unknown:
        raise InvalidInput(
            f"unknown input {', '.join(map(repr, unknown))}; "
            f"the program's inputs are {', '.join(map(repr, program.input_names))}"
        )
    env: dict[str, Any] = {}
    for name, spec in program.inputs.items():
        if name not in inputs:
            raise InvalidInput(f"missing input {name!r} ({_describe(spec)})")
        env[name] = _input_tensor(spec, inputs[name], precision)
    return env


def _input_tensor(spec: InputSpec, value: Any, precision: str) -> torch.Tensor:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    _check_shape(spec, array.shape)
    target = dtypes.torch_dtype(spec.dtype, precision)
    if not target.is_floating_point and array.dtype.kind == "f":
        raise InvalidInput(
            f"input {spec.name!r} is {spec.dtype} but the array contains {array.dtype} values; "
            "pass integer values"
        )
    if array.dtype.kind not in "fiub":
        raise InvalidInput(f"input {spec.name!r} has unsupported array dtype {array.dtype}")
    converted = array.astype(dtypes.numpy_dtype(target), copy=False)
    if target != torch.bool and not target.is_floating_point and array.dtype.kind in "iu":
        if array.size and not np.array_equal(converted, array):
            raise InvalidInput(
                f"input {spec.name!r} contains values that do not fit in {spec.dtype}"
            )
    return torch.from_numpy(np.array(converted, order="C", copy=True))


def _check_shape(spec: InputSpec, shape: tuple[int, ...]) -> None:
    if len(shape) != len(spec.shape):
        raise InvalidInput(
            f"input {spec.name!r} has shape {shape}, expected rank {len(spec.shape)} "
            f"({_describe(spec)})"
        )
    if spec.enumerated is not None:
        if tuple(shape) not in spec.enumerated:
            raise InvalidInput(
                f"input {spec.name!r} has shape {shape}, "
                f"but the program accepts only the shapes {list(spec.enumerated)}"
            )
        return
    for axis, size in enumerate(shape):
        lower, upper = _bounds(spec, axis)
        if size < lower or (upper is not None and size > upper):
            raise InvalidInput(
                f"input {spec.name!r} has size {size} in dimension {axis}, "
                f"outside the allowed {_describe_bounds(lower, upper)} ({_describe(spec)})"
            )


def _bounds(spec: InputSpec, axis: int) -> tuple[int, int | None]:
    if spec.ranges is not None and axis < len(spec.ranges):
        return spec.ranges[axis]
    fixed = spec.shape[axis]
    if fixed is None:
        return 1, None
    return fixed, fixed


def _describe_bounds(lower: int, upper: int | None) -> str:
    if lower == upper:
        return f"size {lower}"
    return f"range [{lower}, {'unbounded' if upper is None else upper}]"


def _describe(spec: InputSpec) -> str:
    if spec.enumerated is not None:
        return f"{spec.dtype}, one of the shapes {list(spec.enumerated)}"
    dims = []
    for axis, dim in enumerate(spec.shape):
        lower, upper = _bounds(spec, axis)
        dims.append(str(dim) if lower == upper else f"{lower}..{'' if upper is None else upper}")
    return f"{spec.dtype}, shape ({', '.join(dims)})"

