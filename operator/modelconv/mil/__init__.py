"""A Core ML program executor for Linux.

coremltools converts models on Linux but predicts only on macOS. This package reads a saved ML
program (`.mlpackage`) back into its MIL form and executes it op by op with torch, either in
the program's own dtypes (float16 ops computed and rounded as float16) or entirely in float32:

    from modelconv.mil import load_program, execute, diagnose_precision, UnsupportedOp

    program = load_program("model.mlpackage")
    outputs = execute(program, {"x": array})               # precision="program"
    outputs32 = execute(program, {"x": array}, precision="fp32")
    report = diagnose_precision(program, {"x": array})     # where float16 loses precision
    check = check_against_reference(program, {"x": array}, {"y": expected})

It reproduces what the converted program computes, converter faults included, so a validation
against the PyTorch reference can fail on Linux before any Mac is involved.
"""

from .diagnosis import (
    NanOrigin,
    OpDivergence,
    OutputMismatch,
    PrecisionDiagnosis,
    ReferenceCheck,
    check_against_reference,
    diagnose_precision,
    first_nan_op,
)
from .errors import (
    ExecutionError,
    InvalidInput,
    MilError,
    ProgramLoadError,
    UnsupportedOp,
)
from .executor import LoadedProgram, execute, load_program
from .registry import registered_op_types

__all__ = [
    "ExecutionError",
    "InvalidInput",
    "LoadedProgram",
    "MilError",
    "NanOrigin",
    "OpDivergence",
    "OutputMismatch",
    "PrecisionDiagnosis",
    "ReferenceCheck",
    "ProgramLoadError",
    "UnsupportedOp",
    "check_against_reference",
    "diagnose_precision",
    "execute",
    "first_nan_op",
    "load_program",
    "registered_op_types",
]
