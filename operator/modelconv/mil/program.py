"""Loading a saved Core ML program into the executor's own description of it.

coremltools 9 reads an `.mlpackage` back into its MIL form on Linux, weights included. This
module turns the `main` function of that form into plain data: the inputs with their allowed
shapes, the ops in order with each input resolved to a var or a constant, and the outputs.
Nothing here runs an op, because `plan` compiles this description into closures.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ProgramLoadError

@dataclass(frozen=True)
class VarRef:
    """An op input produced at run time by an earlier op, a block input or a program input."""

    name: str


@dataclass(frozen=True)
class ConstRef:
    """An op input whose value is known when the program loads; `name` keys `Program.consts`."""

    name: str


@dataclass(frozen=True)
class TensorType:
    """A var's declared dtype (a MIL type name such as 'fp16') and shape.

    `shape` has None for each symbolic dimension, and is None when the rank is unknown.
    """

    dtype: str
    shape: tuple[int | None, ...] | None


@dataclass
class OpNode:
    """One op of a block: its inputs by MIL argument name, its outputs, its nested blocks."""

    name: str
    op_type: str
    inputs: dict[str, VarRef | ConstRef | list[VarRef | ConstRef]]
    outputs: list[tuple[str, TensorType]]
    blocks: list[BlockNode] = field(default_factory=list)


@dataclass
class BlockNode:
    """A sequence of ops with named inputs (bound by the enclosing op) and output vars."""

    inputs: list[str]
    ops: list[OpNode]
    outputs: list[VarRef | ConstRef]


@dataclass(frozen=True)
class InputSpec:
    """A program input: MIL dtype, declared shape, and the flexible-shape limits of Core ML.

    `ranges` has a (lower, upper) pair per dimension, upper None when unbounded; `enumerated`
    lists the allowed shapes of an input with enumerated shapes. Both are None for an input of
    fixed shape.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    ranges: tuple[tuple[int, int | None], ...] | None = None
    enumerated: tuple[tuple[int, ...], ...] | None = None


@dataclass
class Program:
    """The `main` function of a Core ML program, as plain data."""

    spec_version: int
    inputs: list[InputSpec]
    outputs: list[VarRef | ConstRef]
    output_names: list[str]
    block: BlockNode
    consts: dict[str, Any]
    var_types: dict[str, TensorType] = field(default_factory=dict)
    op_types: set[str] = field(default_factory=set)


def read_program(path: str | os.PathLike) -> Program:
    """Read the `main` function of the Core ML program saved at `path`."""
    spec, weights_dir = _read_spec(Path(path))
    function = _load_mil_function(spec, weights_dir, path)
    consts: dict[str, Any] = {}
    block = _convert_block(function, [], consts, set(function.inputs))
    inputs = [_input_spec(name, var, spec) for name, var in function.inputs.items()]
    var_types = {spec.name: TensorType(spec.dtype, spec.shape) for spec in inputs}
    _collect_var_types(block, var_types)
    return Program(
        spec_version=int(spec.specificationVersion),
        inputs=inputs,
        outputs=block.outputs,
        output_names=[var.name for var in function.outputs],
        block=block,
        consts=consts,
        var_types=var_types,
        op_types=_op_types(function),
    )


def _op_types(block) -> set[str]:
    """Return the op types of a coremltools block and its nested blocks, `const` included."""
    found = set()
    for operation in block.operations:
        found.add(operation.op_type)
        for nested in operation.blocks:
            found |= _op_types(nested)
    return found


def _collect_var_types(block: BlockNode, var_types: dict[str, TensorType]) -> None:
    for node in block.ops:
        var_types.update(node.outputs)
        for nested in node.blocks:
            _collect_var_types(nested, var_types)


def _read_spec(path: Path):
    if not path.exists():
        raise ProgramLoadError(f"{path} does not exist; give the path of a saved .mlpackage")
    if path.is_dir() and not (path / "Manifest.json").exists():
        raise ProgramLoadError(
            f"{path} is a folder without Manifest.json, so it is not an .mlpackage"
        )
    if path.is_file() and zipfile.is_zipfile(path):
        raise ProgramLoadError(
            f"{path} is a zip archive; unzip it and give the path of the .mlpackage inside "
            "(a release's model.mlpackage.zip holds model.mlpackage)"
        )
    if path.is_file() and path.suffix != ".mlmodel":
        raise ProgramLoadError(
            f"{path} is neither an .mlpackage folder nor an .mlmodel file; give the path of "
            "a saved Core ML package"
        )
    with _quiet_coremltools():
        # Importing coremltools on Linux logs warnings about its missing native runtime and
        # untested library versions, which do not affect reading a program.
        import coremltools as ct
    try:
        with _quiet_coremltools():
            model = ct.models.MLModel(str(path), skip_model_load=True)
    except Exception as error:  # coremltools raises many types for unreadable packages
        raise ProgramLoadError(f"coremltools cannot read {path}: {error}") from error
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise ProgramLoadError(
            f"{path} contains a Core ML {spec.WhichOneof('Type')!r} model, not an ML program; "
            "convert it with convert_to='mlprogram'"
        )
    return spec, model.weights_dir


def _load_mil_function(spec, weights_dir, path):
    from coremltools.converters.mil.frontend.milproto.load import load

    try:
        with _quiet_coremltools():
            program = load(
                spec,
                specification_version=spec.specificationVersion,
                file_weights_dir=weights_dir,
            )
    except Exception as error:  # the milproto loader raises many types for bad programs
        raise ProgramLoadError(
            f"coremltools cannot read the ML program in {path}: {error}"
        ) from error
    if "main" not in program.functions:
        raise ProgramLoadError(
            f"the ML program in {path} has no 'main' function "
            f"(functions: {', '.join(sorted(program.functions))})"
        )
    return program.functions["main"]


@contextlib.contextmanager
def _quiet_coremltools():
    # The milproto loader reruns type inference and logs per-op chatter at INFO and WARNING.
    logger = logging.getLogger("coremltools")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(previous)


def _convert_block(block, block_inputs: list[str], consts: dict, visible: set[str]) -> BlockNode:
    """Convert a coremltools block; `visible` holds var names bound before the block runs."""
    visible = set(visible) | set(block_inputs)
    ops = []
    for operation in block.operations:
        if operation.op_type == "const":
            output = operation.outputs[0]
            consts[output.name] = _const_value(output)
            continue
        node = _convert_op(operation, consts, visible)
        visible.update(name for name, _ in node.outputs)
        ops.append(node)
    outputs = [_reference(var, consts, visible) for var in block.outputs]
    return BlockNode(inputs=block_inputs, ops=ops, outputs=outputs)


def _convert_op(operation, consts: dict, visible: set[str]) -> OpNode:
    inputs: dict[str, Any] = {}
    for argument, value in operation.inputs.items():
        if isinstance(value, (list, tuple)):
            inputs[argument] = [_reference(var, consts, visible) for var in value]
        else:
            inputs[argument] = _reference(value, consts, visible)
    outputs = [(var.name, tensor_type(var)) for var in operation.outputs]
    blocks = [
        _convert_block(block, [var.name for var in block.inputs], consts, visible)
        for block in operation.blocks
    ]
    return OpNode(operation.name, operation.op_type, inputs, outputs, blocks)


def _reference(var, consts: dict, visible: set[str]) -> VarRef | ConstRef:
    if var.name in consts:
        return ConstRef(var.name)
    if var.name in visible:
        return VarRef(var.name)
    # Inputs filled in by the op definition's defaults are vars with a value but no const op.
    if var.val is not None:
        consts[var.name] = _const_value(var)
        return ConstRef(var.name)
    raise ProgramLoadError(f"var {var.name!r} is used before any op produces it")


def _const_value(var) -> Any:
    value = var.val
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, np.ndarray):
        return value
    return np.asarray(value)


def tensor_type(var) -> TensorType:
    from coremltools.converters.mil.mil import types

    try:
        name = types.builtin_to_string(var.dtype)
    except (KeyError, AttributeError):
        # Lists, dicts and states have no single element dtype.
        name = "unknown"
    return TensorType(name, _static_shape(var))


def _static_shape(var) -> tuple[int | None, ...] | None:
    try:
        shape = var.shape
    except (AttributeError, ValueError):
        return None
    if shape is None:
        return None
    return tuple(int(dim) if isinstance(dim, (int, np.integer)) else None for dim in shape)


def _input_spec(name: str, var, spec) -> InputSpec:
    declared = tensor_type(var)
    description = next((item for item in spec.description.input if item.name == name), None)
    ranges = enumerated = None
    if description is not None and description.type.WhichOneof("Type") == "multiArrayType":
        array_type = description.type.multiArrayType
        kind = array_type.WhichOneof("ShapeFlexibility")
        if kind == "shapeRange":
            ranges = tuple(
                (int(size.lowerBound), None if size.upperBound < 0 else int(size.upperBound))
                for size in array_type.shapeRange.sizeRanges
            )
        elif kind == "enumeratedShapes":
            shapes = array_type.enumeratedShapes.shapes
            enumerated = tuple(tuple(int(dim) for dim in shape.shape) for shape in shapes)
    shape = declared.shape if declared.shape is not None else ()
    return InputSpec(name, declared.dtype, shape, ranges, enumerated)
