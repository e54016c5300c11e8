"""Compiling a loaded program into closures, once per precision.

Each op becomes one closure. It reads its run-time inputs from the environment, a dict from
var name to tensor, and calls the registered implementation with the constant inputs prepared
at compile time. Then it casts the results to the declared dtypes, checks them against the
declared shapes and stores them. Constants become torch tensors (or Python values for
`params`) here, so a run does no per-op preparation work.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import torch

from . import dtypes
from .errors import ExecutionError, MilError
from .fusion import fuse_chains, release_after_last_use
from .program import BlockNode, ConstRef, OpNode, Program, VarRef
from .registry import UPCAST, OpContext, lookup

Environment = dict[str, Any]

logger = logging.getLogger(__name__)


class CompiledBlock:
    """A block's ops as closures, with the names of its inputs and its output references.

    `schedule` pairs each closure with the vars to drop from the environment after it, which
    is empty except in plans that free values after their last use.
    """

    def __init__(self, schedule, input_names, outputs, consts):
        self.schedule = schedule
        self.input_names = input_names
        self._outputs = outputs
        self._consts = consts

    @property
    def steps(self) -> list[Callable[[Environment], None]]:
        return [step for step, _ in self.schedule]

    def run(self, env: Environment) -> None:
        for step, released in self.schedule:
            step(env)
            for name in released:
                env.pop(name, None)

    def evaluate(self, env: Environment, inputs: list[Any]) -> list[Any]:
        """Bind `inputs` to the block inputs, run the block and return its outputs."""
        for name, value in zip(self.input_names, inputs):
            env[name] = value
        self.run(env)
        return self.outputs(env)

    def outputs(self, env: Environment) -> list[Any]:
        return [
            env[ref.name] if isinstance(ref, VarRef) else self._consts[ref.name]
            for ref in self._outputs
        ]


class ExecutionPlan:
    """A program compiled for one precision.

    A plan compiled with `fused=True` runs chains of elementwise ops in place and drops each
    value from the environment after its last use (see `fusion`), so a run keeps only the
    block outputs. Its results are bit for bit those of the unfused plan.
    """

    def __init__(self, program: Program, precision: str, fused: bool = False,
                 consts: dict[str, Any] | None = None):
        self.precision = precision
        self.fused = fused
        # Plans of one precision can share `consts`, the program's constants as torch values,
        # because no step writes into a constant.
        if consts is None:
            consts = {
                name: _torch_const(name, value, precision)
                for name, value in program.consts.items()
            }
        self.consts = consts
        self.raw_consts = dict(program.consts)
        self.var_types = program.var_types
        self.opset = program.spec_version
        # Outputs of constexpr ops, computed once here and then used as constants.
        self.folded: set[str] = set()
        # Output var name -> message, for outputs whose shape differs from the declared one.
        self.shape_mismatches: dict[str, str] = {}

        self.main = self.compile_block(program.block, top_level=True)

    def compile_block(self, block: BlockNode, top_level: bool = False) -> CompiledBlock:
        compiled = []
        for node in block.ops:
            step = self._compile_op(node)
            if node.op_type.startswith("constexpr_") and self._has_constant_inputs(node):
                self._fold(step, node)
            else:
                compiled.append((node, step))
        outputs = [self.resolve(ref) for ref in block.outputs]
        if top_level and self.fused:
            schedule = release_after_last_use(block, fuse_chains(self, block, compiled))
        else:
            schedule = [(step, ()) for _, step in compiled]
        return CompiledBlock(schedule, block.inputs, outputs, self.consts)

    def _has_constant_inputs(self, node: OpNode) -> bool:
        for ref in node.inputs.values():
            for item in ref if isinstance(ref, list) else [ref]:
                if not isinstance(self.resolve(item), ConstRef):
                    return False
        return True

    def _fold(self, step, node: OpNode) -> None:
        values: Environment = {}
        with torch.no_grad():
            step(values)
        for name, _ in node.outputs:
            self.consts[name] = values[name]
            self.raw_consts[name] = values[name]
            self.folded.add(name)

    def resolve(self, ref: VarRef | ConstRef) -> VarRef | ConstRef:
        if isinstance(ref, VarRef) and ref.name in self.folded:
            return ConstRef(ref.name)
        return ref

    def _compile_op(self, node: OpNode) -> Callable[[Environment], None]:
        implementation = lookup(node.op_type, node.name)
        context = OpContext(
            name=node.name,
            op_type=node.op_type,
            output_dtypes=tuple(self.output_dtype(kind.dtype) for _, kind in node.outputs),
            output_shapes=tuple(kind.shape for _, kind in node.outputs),
            precision=self.precision,
            opset=self.opset,
            blocks=tuple(self.compile_block(block) for block in node.blocks),
        )
        static, dynamic, tuples = self._split_inputs(node, implementation.params)
        if implementation.prepare is not None:
            static = implementation.prepare(context, static)
        upcast = implementation.fp16 == UPCAST and self.precision == dtypes.PROGRAM
        # coremltools infers the declared output shapes again when it loads a program, and
        # with symbolic input dimensions that inference is often wrong. So outputs are checked
        # against declared shapes only when every run-time input has a static declared shape.
        checked = all(self._is_static(name) for _, name, _ in dynamic) and all(
            self._is_static(value) for _, _, items in tuples for is_const, value in items
            if not is_const
        )
        return _make_step(
            implementation.function,
            context,
            static,
            dynamic,
            tuples,
            upcast,
            node.outputs if checked else [(name, None) for name, _ in node.outputs],
            implementation.runs_blocks,
            self.shape_mismatches,
            implementation.specialize,
            {argument: self.var_types[name].shape for argument, name, _ in dynamic
             if self._is_static(name)},
        )

    def _is_static(self, var_name: str) -> bool:
        kind = self.var_types.get(var_name)
        return kind is not None and kind.shape is not None and None not in kind.shape

    def output_dtype(self, mil_dtype: str) -> torch.dtype | None:
        if mil_dtype == "unknown" or mil_dtype == "str":
            return None
        return dtypes.torch_dtype(mil_dtype, self.precision)

    def _split_inputs(self, node: OpNode, params: frozenset[str]):
        """Sort inputs into compile-time values, run-time vars and tuples mixing both."""
        static: dict[str, Any] = {}
        dynamic: list[tuple[str, str, bool]] = []
        tuples: list[tuple[str, bool, list[tuple[bool, Any]]]] = []
        for argument, ref in node.inputs.items():
            is_param = argument in params
            if isinstance(ref, list):
                items = [self._tuple_item(self.resolve(item), is_param) for item in ref]
                if all(is_const for is_const, _ in items):
                    static[argument] = [value for _, value in items]
                else:
                    tuples.append((argument, is_param, items))
            elif isinstance(self.resolve(ref), ConstRef):
                static[argument] = self.const_value(ref.name, is_param)
            else:
                dynamic.append((argument, ref.name, is_param))
        return static, dynamic, tuples

    def _tuple_item(self, ref: VarRef | ConstRef, is_param: bool) -> tuple[bool, Any]:
        if isinstance(ref, ConstRef):
            return True, self.const_value(ref.name, is_param)
        return False, ref.name

    def const_value(self, name: str, is_param: bool) -> Any:
        if is_param:
            return python_value(self.raw_consts[name])
        return self.consts[name]


def _make_step(
    function, context, static, dynamic, tuples, upcast, outputs, runs_blocks, shape_mismatches,
    specialize=None, static_shapes=None,
):
    """Build the closure that runs one op; kept flat because it runs once per op per call.

    `static_shapes` maps run-time inputs with a static declared shape to that shape.
    """
    output_names = [name for name, _ in outputs]
    output_dtypes = context.output_dtypes
    shape_checks = [_shape_check(None if kind is None else kind.shape) for _, kind in outputs]
    single = len(outputs) == 1

    if upcast:
        # Constant inputs are widened once here; run-time inputs on every call.
        static = {name: _upcast(value) for name, value in static.items()}
        tuples = [
            (argument, is_param, [(is_const, _upcast(value) if is_const else value)
                                  for is_const, value in items])
            for argument, is_param, items in tuples
        ]

    if single and not tuples and not runs_blocks and not any(p for _, _, p in dynamic):
        fast = None
        if specialize is not None and dynamic and len(static_shapes) == len(dynamic):
            fast = specialize(context, static, static_shapes)
        return _make_single_output_step(
            function, context, static, [(argument, var) for argument, var, _ in dynamic],
            upcast, outputs[0], shape_mismatches, fast, static_shapes,
        )

    def step(env: Environment) -> None:
        arguments = dict(static)
        for argument, var, is_param in dynamic:
            value = env[var]
            if is_param:
                value = python_value(value)
            elif upcast:
                value = _upcast(value)
            arguments[argument] = value
        for argument, is_param, items in tuples:
            values = [
                value if is_const else _tuple_value(env[value], is_param)
                for is_const, value in items
            ]
            arguments[argument] = _upcast(values) if upcast else values
        if runs_blocks:
            arguments["env"] = env
        try:
            result = function(context, **arguments)
        except MilError:
            raise
        except Exception as error:  # any torch failure inside an op is reported with the op
            raise ExecutionError(
                context.op_type, context.name, f"{type(error).__name__}: {error}"
            ) from error
        if not single:
            results = result
        elif isinstance(result, tuple) and len(result) == 1:
            # An op such as split into one piece returns a one-element tuple.
            results = result
        else:
            results = (result,)
        if len(results) != len(output_names):
            raise context.invalid(
                f"the implementation returned {len(results)} outputs, "
                f"the program declares {len(output_names)}"
            )
        for name, value, dtype, check in zip(output_names, results, output_dtypes, shape_checks):
            if dtype is not None:
                if not isinstance(value, torch.Tensor):
                    value = torch.as_tensor(value, dtype=dtype)
                elif value.dtype != dtype:
                    value = value.to(dtype)
            if check is not None:
                check(context, name, value, shape_mismatches)
            env[name] = value

    return step


def _make_single_output_step(function, context, static, dynamic, upcast, output,
                             shape_mismatches, fast=None, input_shapes=None):
    """Build the step of the common op: one output, tensor inputs and constants only.

    It does what the general step does with fewer checks on the way: a fully static declared
    shape is compared in one test, and the detailed check runs only when that test fails.
    `fast`, the op specialized for the declared `input_shapes`, runs when the inputs have
    those shapes.
    """
    name, kind = output
    dtype = context.output_dtypes[0]
    check = _shape_check(None if kind is None else kind.shape)
    static_shape = None
    if kind is not None and kind.shape is not None and None not in kind.shape:
        static_shape = torch.Size(kind.shape)

    if fast is None:
        def run(env: Environment):
            arguments = dict(static)
            for argument, var in dynamic:
                arguments[argument] = _upcast(env[var]) if upcast else env[var]
            return function(context, **arguments)
    else:
        expected = [(argument, torch.Size(input_shapes[argument])) for argument, _ in dynamic]

        def run(env: Environment):
            arguments = {
                argument: _upcast(env[var]) if upcast else env[var] for argument, var in dynamic
            }
            for argument, shape in expected:
                if arguments[argument].shape != shape:
                    return function(context, **static, **arguments)
            return fast(**arguments)

    def step(env: Environment) -> None:
        try:
            value = run(env)
        except MilError:
            raise
        except Exception as error:  # any torch failure inside an op is reported with the op
            raise ExecutionError(
                context.op_type, context.name, f"{type(error).__name__}: {error}"
            ) from error
        if isinstance(value, tuple):
            if len(value) != 1:
                raise context.invalid(
                    f"the implementation returned {len(value)} outputs, the program declares 1"
                )
            # An op such as split into one piece returns a one-element tuple.
            value = value[0]
        if dtype is not None:
            if not isinstance(value, torch.Tensor):
                value = torch.as_tensor(value, dtype=dtype)
            elif value.dtype != dtype:
                value = value.to(dtype)
        if check is not None and getattr(value, "shape", None) != static_shape:
            check(context, name, value, shape_mismatches)
        env[name] = value

    return step


def _tuple_value(value, is_param):
    return python_value(value) if is_param else value


def _shape_check(declared):
    """Return a check of the computed shape against the static dims of `declared`, or None.

    A mismatch does not stop the run: the op's definition decides the result, and the
    mismatch is logged once per op and kept in `ExecutionPlan.shape_mismatches`.
    """
    if declared is None:
        return None
    rank = len(declared)
    fixed = [(axis, dim) for axis, dim in enumerate(declared) if dim is not None]

    def check(context: OpContext, name: str, value, mismatches: dict) -> None:
        shape = getattr(value, "shape", None)
        if shape is None or name in mismatches:
            return
        if len(shape) != rank or any(shape[axis] != dim for axis, dim in fixed):
            shown = tuple("?" if dim is None else dim for dim in declared)
            message = (
                f"op {context.name!r} ({context.op_type}) computes output {name!r} with shape "
                f"{tuple(shape)}, but the program declares {shown}"
            )
            mismatches[name] = message
            logger.warning("%s", message)

    return check


def _upcast(value):
    if isinstance(value, torch.Tensor) and value.dtype == torch.float16:
        return value.float()
    if isinstance(value, list):
        return [_upcast(item) for item in value]
    return value


def python_value(value):
    """Convert a constant or tensor to a Python value: a scalar, a nested list or a str."""
    if isinstance(value, (str, bytes, bool, int, float)):
        return value
    if isinstance(value, torch.Tensor):
        return value.item() if value.dim() == 0 else value.tolist()
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        return array.item() if array.ndim == 0 else array.tolist()
    if isinstance(value, (list, tuple)):
        return [python_value(item) for item in value]
    return value


def _torch_const(name: str, value, precision: str):
    if isinstance(value, (str, bytes)):
        return value
    array = np.asarray(value)
    if array.dtype == np.float16 and precision == dtypes.FP32:
        array = array.astype(np.float32)
    elif array.dtype == np.uint16:
        array = array.astype(np.int32)
    elif array.dtype == np.uint32:
        array = array.astype(np.int64)
    elif array.dtype.kind not in "fiub":
        raise ExecutionError(
            "const", name, f"a constant of numpy dtype {array.dtype} has no torch counterpart"
        )
    # np.ascontiguousarray would turn a 0-d array into a 1-d one.
    return torch.from_numpy(np.array(array, order="C", copy=True))
