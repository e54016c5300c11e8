"""Locating the ops where a program's float16 computation departs from float32.

`diagnose_precision` runs the program twice, at program precision and at fp32, keeps every op
output, and compares them op by op. An op diverges when its error, relative to the largest
magnitude of its fp32 output, exceeds the threshold, or when the two runs disagree on NaN or
infinity. The first divergent ops are those that diverge although none of their inputs did:
the places where precision is lost, rather than everything downstream of them.

`first_nan_op` finds the op that first turns NaN-free inputs into a NaN, the usual footprint
of a converter fault or of float16 overflow.

`check_against_reference` compares a program's outputs with reference outputs (from PyTorch,
say). For each mismatching output it names the op where the mismatch starts, as far as the
program alone can tell. For NaNs that is the first NaN-producing op. When the fp32 run matches
the reference, it is the first op that loses float16 precision. Otherwise it is the op that
produced the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from . import dtypes
from .errors import InvalidInput
from .executor import LoadedProgram, execute, iterate_ops
from .program import ConstRef, OpNode, VarRef


@dataclass(frozen=True)
class OpDivergence:
    """How far one op's output at program precision is from its fp32 output.

    `max_rel_error` is `max_abs_error` divided by the largest magnitude in the fp32 output,
    or by 1 when that output is all zeros. Both are infinite when the runs disagree on NaN or
    infinity.
    """

    name: str
    op_type: str
    max_abs_error: float
    max_rel_error: float


@dataclass
class PrecisionDiagnosis:
    """The outcome of `diagnose_precision`.

    `first_divergent_ops` are the ops, in program order, whose error exceeds the threshold
    while all their inputs stay within it. `divergent_ops` lists every op over the threshold.
    `ops_in_fp16` counts the ops with a float16 output, `ops_total` every op except `const`.
    """

    first_divergent_ops: list[OpDivergence]
    ops_in_fp16: int
    ops_total: int
    divergent_ops: list[OpDivergence] = field(default_factory=list)
    threshold: float = 1e-2


@dataclass(frozen=True)
class NanOrigin:
    """The first op whose output contains a NaN although none of its inputs does."""

    name: str
    op_type: str
    output: str
    nan_count: int


def diagnose_precision(
    program: LoadedProgram, inputs: Mapping[str, Any], threshold: float = 1e-2
) -> PrecisionDiagnosis:
    """Run `program` at fp32 and at program precision and locate where they diverge."""
    if not threshold > 0:
        raise InvalidInput(f"threshold must be a positive number, got {threshold!r}")
    reference = execute(program, inputs, precision=dtypes.FP32, intermediates=True)
    candidate = execute(program, inputs, precision=dtypes.PROGRAM, intermediates=True)

    divergent_vars: set[str] = set()
    first: list[OpDivergence] = []
    divergent: list[OpDivergence] = []
    nodes = list(iterate_ops(program.program.block.ops))
    for node in nodes:
        errors = [
            _errors(reference[name], candidate[name])
            for name, _ in node.outputs
            if name in reference and name in candidate
        ]
        if not errors:
            continue
        max_abs = max(abs_error for abs_error, _ in errors)
        max_rel = max(rel_error for _, rel_error in errors)
        if not max_rel > threshold:
            continue
        finding = OpDivergence(node.name, node.op_type, max_abs, max_rel)
        divergent.append(finding)
        if not any(name in divergent_vars for name in _input_vars(node)):
            first.append(finding)
        divergent_vars.update(name for name, _ in node.outputs)

    ops_in_fp16 = sum(1 for node in nodes if any(kind.dtype == "fp16" for _, kind in node.outputs))
    return PrecisionDiagnosis(first, ops_in_fp16, len(nodes), divergent, threshold)


def first_nan_op(
    program: LoadedProgram, inputs: Mapping[str, Any], precision: str = dtypes.PROGRAM
) -> NanOrigin | None:
    """Return the first op whose output has a NaN while its inputs have none, or None."""
    values = {name: np.asarray(value) for name, value in inputs.items()}
    values.update(execute(program, inputs, precision=precision, intermediates=True))
    for node in iterate_ops(program.program.block.ops):
        for name, _ in node.outputs:
            output = values.get(name)
            if output is None or not _has_nan(output):
                continue
            if any(_has_nan(value) for value in _input_values(node, values, program)):
                break
            return NanOrigin(node.name, node.op_type, name, int(np.isnan(output).sum()))
    return None


def _errors(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    if reference.shape != candidate.shape:
        return float("inf"), float("inf")
    if reference.size == 0:
        return 0.0, 0.0
    expected = reference.astype(np.float64)
    actual = candidate.astype(np.float64)
    finite = np.isfinite(expected)
    same_special = np.array_equal(np.isnan(expected), np.isnan(actual)) and np.array_equal(
        expected[~finite & ~np.isnan(expected)], actual[~finite & ~np.isnan(expected)]
    )
    if not same_special or not np.array_equal(finite, np.isfinite(actual)):
        return float("inf"), float("inf")
    if not finite.any():
        return 0.0, 0.0
    max_abs = float(np.max(np.abs(expected[finite] - actual[finite])))
    scale = float(np.max(np.abs(expected[finite])))
    return max_abs, max_abs / (scale if scale > 0 else 1.0)


def _input_vars(node: OpNode):
    for ref in node.inputs.values():
        for item in ref if isinstance(ref, list) else [ref]:
            if isinstance(item, VarRef):
                yield item.name


def _input_values(node: OpNode, values: dict, program: LoadedProgram):
    for ref in node.inputs.values():
        for item in ref if isinstance(ref, list) else [ref]:
            if isinstance(item, VarRef) and item.name in values:
                yield values[item.name]
            elif isinstance(item, ConstRef):
                yield program.program.consts[item.name]


def _has_nan(value) -> bool:
    array = np.asarray(value)
    return array.dtype.kind == "f" and bool(np.isnan(array).any())


@dataclass(frozen=True)
class OutputMismatch:
    """One program output that disagrees with its reference.

    `problem` is "shape", "nan" or "values"; `op_name` and `op_type` name the op where the
    disagreement starts (see `check_against_reference`).
    """

    output: str
    problem: str
    message: str
    max_abs_error: float
    op_name: str
    op_type: str


@dataclass
class ReferenceCheck:
    """The outcome of `check_against_reference`."""

    mismatches: list[OutputMismatch]

    @property
    def passed(self) -> bool:
        return not self.mismatches


def check_against_reference(
    program: LoadedProgram,
    inputs: Mapping[str, Any],
    expected: Mapping[str, Any],
    rtol: float = 1e-3,
    atol: float = 1e-4,
    precision: str = dtypes.PROGRAM,
) -> ReferenceCheck:
    """Compare the program's outputs with `expected` and locate where each mismatch starts.

    An output matches when its shape equals the reference shape and every element satisfies
    |actual - expected| <= atol + rtol * |expected|. A NaN matches a NaN and an infinity the
    same infinity.
    """
    outputs = ", ".join(map(repr, program.output_names))
    if not expected:
        raise InvalidInput(f"no reference outputs to compare with. Pass one or more of {outputs}.")
    missing = sorted(set(expected) - set(program.output_names))
    if missing:
        raise InvalidInput(
            f"no program output named {', '.join(map(repr, missing))}. The outputs are {outputs}."
        )
    actual = execute(program, inputs, precision=precision)
    mismatches = []
    for name, reference in expected.items():
        mismatch = _compare_output(program, inputs, precision, name, actual[name],
                                   np.asarray(reference), rtol, atol)
        if mismatch is not None:
            mismatches.append(mismatch)
    return ReferenceCheck(mismatches)


def _compare_output(program, inputs, precision, name, actual, reference, rtol, atol):
    producer = _producer(program, name)
    if actual.shape != reference.shape:
        message = f"shape {actual.shape} differs from the reference shape {reference.shape}"
        return OutputMismatch(name, "shape", message, float("inf"), *producer)
    if _has_nan(actual) and not _has_nan(reference):
        origin = first_nan_op(program, inputs, precision)
        where = (origin.name, origin.op_type) if origin else producer
        count = int(np.isnan(actual).sum())
        message = f"{count} NaN values where the reference has none"
        return OutputMismatch(name, "nan", message, float("inf"), *where)
    if _matches(actual, reference, rtol, atol):
        return None
    error = _max_abs_error(actual, reference)
    message = f"max abs error {error:.3g} exceeds atol {atol:g} + rtol {rtol:g} * |reference|"
    return OutputMismatch(name, "values", message, error,
                          *_value_origin(program, inputs, precision, name, reference, rtol, atol,
                                         producer))


def _value_origin(program, inputs, precision, name, reference, rtol, atol, producer):
    """Name the first fp16-losing op when the fp32 run matches, else the producing op."""
    if precision != dtypes.PROGRAM or not program.is_fp16:
        return producer
    at_fp32 = execute(program, inputs, precision=dtypes.FP32)[name]
    if at_fp32.shape != reference.shape or not _matches(at_fp32, reference, rtol, atol):
        return producer
    diagnosis = diagnose_precision(program, inputs, threshold=max(rtol, 1e-3))
    if diagnosis.first_divergent_ops:
        first = diagnosis.first_divergent_ops[0]
        return first.name, first.op_type
    return producer


def _producer(program: LoadedProgram, output: str) -> tuple[str, str]:
    for node in iterate_ops(program.program.block.ops):
        if any(name == output for name, _ in node.outputs):
            return node.name, node.op_type
    return output, "input"


def _matches(actual, reference, rtol, atol) -> bool:
    a, b = np.asarray(actual, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def _max_abs_error(actual, reference) -> float:
    a, b = np.asarray(actual, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    return float(np.max(np.abs(a[both] - b[both]))) if both.any() else 0.0
