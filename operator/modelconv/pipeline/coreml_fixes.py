"""Corrections to coremltools 9.0's PyTorch frontend, applied before every conversion.

coremltools translates each torch op with a function from its op registry. Some translations
in 9.0 produce a program that is silently wrong or miss an op that has an obvious MIL form;
`install()` registers corrected translations over them (`register_torch_op(override=True)`),
so both the torch.export and the jit.trace paths use them:

- `diagonal`: 9.0 returns `band_part(x)`, the whole matrix with zeros off the diagonal, so a
  (5, 5) input yields a (5, 5) output instead of (5,); other offsets and dims raise. The
  correction gathers the diagonal for any offset and pair of dims of static size.
- `triu` / `tril` with a diagonal that excludes the main one: 9.0 computes
  `x - band_part(x)`, which turns every infinite element into NaN (-inf - -inf). The
  correction selects elements with a 0/1 mask instead of subtracting.
- bool `|`, `^`, `&` and their in-place forms (`m |= ...`): 9.0 has no translation for
  `bitwise_or`, `bitwise_xor`, `__ior__`, `__iand__`... The correction maps them to
  `logical_or` / `logical_xor` / `logical_and`; integer bitwise ops still raise, because MIL
  has no integer bitwise ops.

`FP16_RANGE_PASS` clamps finite constants beyond the float16 range (such as attention masks
holding torch.finfo(torch.float32).min) to +-65504 before the float16 cast, so they do not
become infinities that turn softmax into NaN.

These functions use coremltools internals (`_get_inputs`, the MIL builder, the pass
registry); they are written for coremltools 9.0, the version pyproject.toml pins.
"""

from __future__ import annotations

import numpy as np

FP16_MAX = float(np.finfo(np.float16).max)
FP16_RANGE_PASS = "modelconv::clamp_constants_to_fp16_range"
_installed = False


def install() -> None:
    """Register the corrected translations and the float16 range pass (once per process)."""
    global _installed
    if _installed:
        return
    _register_translations()
    _register_fp16_range_pass()
    _installed = True


def _argument(value, default):
    """Return a Python value of an op argument given as a MIL Var, a constant or None."""
    if value is None:
        return default
    if hasattr(value, "val"):
        if value.val is None:
            raise NotImplementedError("the argument must be a constant, not computed at run time")
        return value.val.item() if hasattr(value.val, "item") else value.val
    return value


def _register_translations() -> None:
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs, _get_kwinputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op
    from coremltools.converters.mil.mil import types

    @register_torch_op(torch_alias=["diagonal_copy"], override=True)
    def diagonal(context, node):
        inputs = _get_inputs(context, node, min_expected=1)
        x = inputs[0]
        positional = list(inputs[1:]) + [None] * 3
        offset = _argument(_get_kwinputs(context, node, "offset", default=[positional[0]])[0], 0)
        dim1 = _argument(_get_kwinputs(context, node, "dim1", default=[positional[1]])[0], 0)
        dim2 = _argument(_get_kwinputs(context, node, "dim2", default=[positional[2]])[0], 1)
        context.add(_gather_diagonal(mb, x, int(offset), int(dim1), int(dim2), node.name))

    def _band_mask(context, node, upper: bool):
        inputs = _get_inputs(context, node, min_expected=1)
        x = inputs[0]
        diagonal = int(_argument(inputs[1] if len(inputs) > 1 else None, 0))
        keep = _triangle_mask(mb, x, diagonal, upper)
        if types.is_bool(x.dtype):
            result = mb.logical_and(x=x, y=keep, name=node.name)
        else:
            zero = np.zeros((), dtype=types.nptype_from_builtin(x.dtype))
            result = mb.select(cond=keep, a=x, b=zero, name=node.name)
        context.add(result)

    @register_torch_op(override=True)
    def triu(context, node):
        _band_mask(context, node, upper=True)

    @register_torch_op(override=True)
    def tril(context, node):
        _band_mask(context, node, upper=False)

    def _logical(operation):
        def translate(context, node):
            x, y = _get_inputs(context, node, expected=2)[:2]
            if not (types.is_bool(x.dtype) and types.is_bool(y.dtype)):
                raise NotImplementedError(
                    f"{node.kind} of {x.dtype.__name__} and {y.dtype.__name__}: Core ML has"
                    " bitwise operations on bool tensors only"
                )
            context.add(operation(x=x, y=y, name=node.name))

        return translate

    for name, operation, aliases in (
        ("bitwise_or", mb.logical_or, ["or", "ior"]),
        ("bitwise_xor", mb.logical_xor, ["xor", "ixor"]),
        ("bitwise_and", mb.logical_and, ["and", "iand"]),
    ):
        function = _logical(operation)
        function.__name__ = name
        register_torch_op(function, torch_alias=aliases, override=True)


def _gather_diagonal(mb, x, offset: int, dim1: int, dim2: int, name: str):
    """Gather `torch.diagonal(x, offset, dim1, dim2)`: the diagonal becomes the last axis."""
    rank = x.rank
    dim1, dim2 = dim1 % rank, dim2 % rank
    rows, columns = x.shape[dim1], x.shape[dim2]
    if not (isinstance(rows, (int, np.integer)) and isinstance(columns, (int, np.integer))):
        raise NotImplementedError("diagonal over a dimension with a range is not supported")
    if offset >= 0:
        length = max(0, min(rows, columns - offset))
        pairs = [(index, index + offset) for index in range(length)]
    else:
        length = max(0, min(rows + offset, columns))
        pairs = [(index - offset, index) for index in range(length)]
    if length == 0:
        raise NotImplementedError(f"diagonal with offset {offset} is empty for shape {x.shape}")

    others = [axis for axis in range(rank) if axis not in (dim1, dim2)]
    moved = mb.transpose(x=x, perm=[dim1, dim2] + others) if (dim1, dim2) != (0, 1) else x
    indices = np.asarray(pairs, dtype=np.int32)
    if not others:
        return mb.gather_nd(x=moved, indices=indices, name=name)
    gathered = mb.gather_nd(x=moved, indices=indices)
    return mb.transpose(x=gathered, perm=list(range(1, rank - 1)) + [0], name=name)


def _triangle_mask(mb, x, diagonal: int, upper: bool):
    """Return a bool mask of x's shape: True where triu (upper) or tril keeps the element.

    The mask comes from band_part of ones, which never meets an infinity.
    """
    ones = mb.fill(shape=mb.shape(x=x), value=1.0)
    if upper and diagonal <= 0:
        mask = mb.band_part(x=ones, lower=-diagonal, upper=-1)
    elif upper:
        mask = mb.sub(x=ones, y=mb.band_part(x=ones, lower=-1, upper=diagonal - 1))
    elif diagonal >= 0:
        mask = mb.band_part(x=ones, lower=-1, upper=diagonal)
    else:
        mask = mb.sub(x=ones, y=mb.band_part(x=ones, lower=-diagonal - 1, upper=-1))
    return mb.greater(x=mask, y=np.float32(0.5))


def _register_fp16_range_pass() -> None:
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass
    from coremltools.converters.mil.mil.passes.helper import block_context_manager
    from coremltools.converters.mil.mil.passes.pass_registry import register_pass

    @register_pass(namespace="modelconv", override=True)
    class clamp_constants_to_fp16_range(AbstractGraphPass):
        """Clamp finite fp32 constants beyond +-65504 so the fp16 cast keeps them finite."""

        def apply(self, prog):
            for function in prog.functions.values():
                self._clamp_block(function)

        @block_context_manager
        def _clamp_block(self, block):
            for op in list(block.operations):
                for inner in op.blocks:
                    self._clamp_block(inner)
                if op.op_type != "const" or op.outputs[0].dtype != types.fp32:
                    continue
                value = op.outputs[0].val
                array = np.asarray(value)
                beyond = np.isfinite(array) & (np.abs(array) > FP16_MAX)
                if not beyond.any():
                    continue
                clamped = np.where(beyond, np.clip(array, -FP16_MAX, FP16_MAX), array)
                clamped = clamped.astype(np.float32) if array.ndim else np.float32(clamped)
                replacement = mb.const(val=clamped, name=op.name + "_fp16_range", before_op=op)
                block.replace_uses_of_var_after_op(
                    anchor_op=op, old_var=op.outputs[0], new_var=replacement
                )
                block.remove_ops([op])


def fp16_pass_pipeline():
    """Return the default pass pipeline with the float16 range pass before the fp16 cast."""
    import coremltools as ct

    install()
    pipeline = ct.PassPipeline.DEFAULT
    position = pipeline.passes.index("common::add_fp16_cast")
    pipeline.insert_pass(position, FP16_RANGE_PASS)
    return pipeline
