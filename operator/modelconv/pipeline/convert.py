"""The convert stage: a ladder of paths from PyTorch to a Core ML ML Program.

Each rung (see `ladder`) builds a torch program and converts it with
`ct.convert(..., convert_to="mlprogram")`. A converted program is checked before it is
accepted: its declared output shapes must equal the reference shapes and, when the reference
executor (`modelconv.mil`) is installed, its outputs on the samples must meet the validation
tolerances. A program that fails the check counts as a failed rung and the ladder moves on,
because a converter translation that is wrong on one path is often right on another.

Precision: `float32` and `float16` convert once per rung. `auto` converts in float16, runs
the executor on the samples and, while the tolerances fail, reconverts with the ops where
float16 first diverges (from `diagnose_precision`) kept in float32; when that does not
converge it falls back to float32. Without the executor, `auto` converts in float32, the
only precision that can be trusted unchecked.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import NamedTuple

from ..errors import (
    CONVERSION_FAILED,
    TOLERANCE_EXCEEDED,
    UNSUPPORTED_OPERATOR,
    ConversionError,
)
from ..spec import ConversionSpec
from . import runtimes
from .attempts import (
    Attempt,
    converter_errors_logged,
    describe_attempts,
    operator_name,
    summarize_error,
)
from .comparison import (
    OutputComparison,
    compare_outputs,
    has_shape_mismatch,
    summarize_violations,
)
from .ladder import (
    LADDERS,
    ProgramCache,
    convert_program,
    declared_output_shapes,
    fp16_op_fraction,
    op_type_counts,
    package_size,
)
from .samples import SAMPLES_FILE, Sample, build_samples, load_samples, save_samples
from .sources import load_source
from .stage import StageContext, StageResult

PACKAGE = "model.mlpackage"
# The coreml.path whose rungs a failed path did not try; `auto` tries every rung.
UNTRIED_PATHS = {"auto": None, "export": "trace", "trace": "export"}
# Rounds of "keep the diverging ops in float32" before `auto` falls back to float32.
MAX_PRECISION_ROUNDS = 6
# Samples run through diagnose_precision per round (each runs the program twice).
DIAGNOSED_SAMPLES = 2
# coremltools 9.0's add_fp16_cast pass renames each op it moves to float16 this way.
FP16_SUFFIX = "_cast_fp16"


class PrecisionChoice(NamedTuple):
    """The precision a rung converted in, as report.json and the run summary state it."""

    # The convert stage's `precision` metric: the requested precision, or what `auto` did.
    note: str
    # For coreml.precision auto, the outcome in one clause: "auto kept 3 ops in float32".
    auto_outcome: str = ""


class ExecutorFault(RuntimeError):
    """The reference executor itself failed; propagates instead of failing a rung."""


class WrongProgram(Exception):
    """A converted program whose outputs fail the check; `comparisons` says how."""

    def __init__(self, comparisons, precision: str):
        super().__init__(summarize_violations(comparisons))
        self.comparisons = comparisons
        self.precision = precision


def run_convert(context: StageContext) -> StageResult:
    """Convert the source model to `model.mlpackage`, trying the ladder's rungs in order.

    Artifacts: `mlpackage` (model.mlpackage folder) and `samples` (when no earlier stage
    provided them). Failure classes, all permanent: SourceNotFound, InvalidModel, InvalidSpec
    (loading the source, spec inputs that do not fit an image input); UnsupportedOperator when
    every rung failed and an operator was named; ToleranceExceeded when converted programs
    ran but disagreed with the reference; ConversionFailed otherwise (including an output
    shape that differs from the reference). S3 trouble is transient (StoreUnavailable).
    """
    spec = context.spec
    context.workdir.mkdir(parents=True, exist_ok=True)
    source = load_source(spec, context.workdir)
    samples, samples_path = _samples(context, source)

    cache = ProgramCache(spec, source)
    attempts: list[Attempt] = []
    wrong: list[tuple[str, WrongProgram]] = []
    for rung in LADDERS[spec.coreml.path]:
        context.log(f"converting with {rung}")
        try:
            mlmodel, precision = _convert_rung(spec, cache, rung, samples, context.workdir)
        except WrongProgram as error:
            attempts.append(Attempt(rung, False, f"converted program is wrong: {error}"))
            wrong.append((rung, error))
            continue
        except (ConversionError, ExecutorFault):
            raise
        except Exception as error:  # converters raise many types; each is recorded
            logged = getattr(error, "converter_log", [])
            attempts.append(Attempt(rung, False, summarize_error(error), operator_name(error, logged)))
            continue
        attempts.append(Attempt(rung, True))
        return _result(context, mlmodel, rung, attempts, precision, samples_path)
    raise _ladder_failure(spec, attempts, wrong)


def _samples(context: StageContext, source) -> tuple[list[Sample], Path]:
    provided = context.inputs.get("samples")
    if provided is not None:
        return load_samples(provided), provided
    samples = build_samples(context.spec, source, context.workdir)
    return samples, save_samples(samples, context.workdir / SAMPLES_FILE)


def _convert_rung(spec, cache: ProgramCache, rung: str, samples, workdir: Path):
    """Convert on one rung and check the result; return (mlmodel, PrecisionChoice)."""
    import coremltools as ct

    with converter_errors_logged() as logged:
        try:
            program = cache.program(rung)
            if spec.coreml.precision == "auto" and runtimes.coreml_executor_available():
                return _convert_auto(spec, program, samples, workdir)
            precision = {
                "float16": ct.precision.FLOAT16,
                "float32": ct.precision.FLOAT32,
                "auto": ct.precision.FLOAT32,
            }[spec.coreml.precision]
            mlmodel = _convert_checked(spec, program, precision, samples, workdir)
        except Exception as error:
            error.converter_log = list(logged)
            raise
    if spec.coreml.precision == "auto":
        return mlmodel, PrecisionChoice(
            "float32: precision auto needs the reference executor to check float16",
            "auto chose float32 because float16 cannot be checked without the reference executor",
        )
    return mlmodel, PrecisionChoice(spec.coreml.precision)


def _convert_checked(spec, program, precision, samples, workdir: Path):
    mlmodel = convert_program(spec, program, precision, _output_dtypes(samples))
    _check_program(spec, mlmodel, samples, workdir)
    return mlmodel


def _check_program(spec: ConversionSpec, mlmodel, samples: list[Sample], workdir: Path) -> None:
    """Raise `WrongProgram` when the converted program's outputs fail the check."""
    names = [output.name for output in spec.outputs]
    precision = "fp16" if fp16_op_fraction(mlmodel) > 0 else "fp32"
    if not any(item.is_ranged for item in spec.inputs):
        mismatched = _declared_shape_mismatches(mlmodel, samples[0], names)
        if mismatched:
            raise WrongProgram(mismatched, precision)

    if not runtimes.coreml_executor_available():
        return
    package = _save(mlmodel, workdir / "candidate.mlpackage")
    try:
        actual = runtimes.run_coreml(
            package, [sample.coreml_inputs() for sample in samples], output_names=names
        )
    except runtimes.coreml_executor().MilError:
        # An op the executor lacks or cannot run: the validate stage reports it.
        return
    except Exception as error:
        # Anything else is a fault of the executor, not of this conversion path.
        raise ExecutorFault(f"the reference executor failed on {package.name}") from error
    comparisons = compare_outputs(actual, [s.outputs for s in samples], names, spec.validation)
    failed = [item for item in comparisons if not item.passed]
    if failed:
        raise WrongProgram(failed, precision)


def _declared_shape_mismatches(mlmodel, sample: Sample, names: list[str]) -> list:
    declared = declared_output_shapes(mlmodel)
    mismatched = []
    for name in names:
        shape, expected = declared.get(name, ()), tuple(sample.outputs[name].shape)
        # An empty declared shape means the converter left it dynamic: nothing to compare.
        if shape and shape != expected:
            mismatched.append(
                OutputComparison(
                    name,
                    shape=shape,
                    expected_shape=expected,
                    violations=[f"declared shape {shape} differs from the reference shape {expected}"],
                )
            )
    return mismatched


def _convert_auto(spec: ConversionSpec, program, samples: list[Sample], workdir: Path):
    """Convert in float16, keeping in float32 the ops where float16 breaks the tolerances."""
    import coremltools as ct

    kept: set[str] = set()
    for _ in range(MAX_PRECISION_ROUNDS):
        selectable: set[str] = set()

        def in_fp16(op) -> bool:
            selectable.add(op.name)
            return op.name not in kept

        precision = ct.transform.FP16ComputePrecision(op_selector=in_fp16)
        try:
            mlmodel = _convert_checked(spec, program, precision, samples, workdir)
        except WrongProgram as error:
            if has_shape_mismatch(error.comparisons):
                raise
            package = workdir / "candidate.mlpackage"
            diverging = _diverging_ops(spec, package, samples, selectable - kept)
            if not diverging:
                break
            kept |= diverging
            continue
        fraction = fp16_op_fraction(mlmodel)
        note = f"auto: {fraction:.0%} of ops in float16, {len(kept)} kept in float32"
        if kept:
            return mlmodel, PrecisionChoice(note, f"auto kept {len(kept)} ops in float32")
        return mlmodel, PrecisionChoice(note, "auto met the tolerances in float16")

    mlmodel = _convert_checked(spec, program, ct.precision.FLOAT32, samples, workdir)
    return mlmodel, PrecisionChoice(
        "auto: float32 (keeping single ops in float32 did not meet the tolerances)",
        "auto fell back to float32 because keeping single ops in float32 did not meet the"
        " tolerances",
    )


def _diverging_ops(spec, package: Path, samples: list[Sample], candidates: set[str]) -> set[str]:
    """Return the candidate ops where float16 first diverges, at the highest threshold that
    finds any; empty when no candidate op diverges (the error is spread over many ops).
    """
    consumers = runtimes.op_consumers(package)
    for threshold in (spec.validation.rtol, spec.validation.rtol / 10, spec.validation.rtol / 100):
        names: set[str] = set()
        for sample in samples[:DIAGNOSED_SAMPLES]:
            diagnosis = runtimes.diagnose_fp16(package, sample.coreml_inputs(), max(threshold, 1e-5))
            for item in diagnosis.first_divergent_ops:
                name = _pre_cast_name(item.name)
                # A cast that the float16 pass inserted (rounding an input to float16) cannot
                # be selected; keeping the ops that read it in float32 removes it.
                names |= {name} if name in candidates else set(map(_pre_cast_name, consumers.get(item.name, ())))
        if names & candidates:
            return names & candidates
    return set()


def _pre_cast_name(name: str) -> str:
    """Return the op's name before coremltools' float16 pass appended `_cast_fp16` to it."""
    return name.removesuffix(FP16_SUFFIX)


def _output_dtypes(samples: list[Sample]) -> dict:
    return {name: array.dtype for name, array in samples[0].outputs.items()}


def _save(mlmodel, path: Path) -> Path:
    from ..release.package import make_package_reproducible

    if path.exists():
        shutil.rmtree(path)
    mlmodel.save(str(path))
    # Same model, same bytes: a rerun then finds the package of an earlier attempt equal.
    make_package_reproducible(path)
    return path


def _result(context, mlmodel, rung, attempts, precision, samples_path) -> StageResult:
    package = _save(mlmodel, context.workdir / PACKAGE)
    shutil.rmtree(context.workdir / "candidate.mlpackage", ignore_errors=True)
    result = StageResult(stage="convert", succeeded=True)
    result.message = f"converted with {rung} ({precision.note})"
    result.artifacts = {"mlpackage": package, "samples": samples_path}
    result.metrics = {
        "path": rung,
        "attempts": [item.as_dict() for item in attempts],
        "precision": precision.note,
        "auto_precision": precision.auto_outcome or None,
        "fp16_op_fraction": fp16_op_fraction(mlmodel),
        "mil_op_types": op_type_counts(mlmodel),
        "package_bytes": package_size(package),
        "checked_by": (
            "reference executor" if runtimes.coreml_executor_available() else "declared shapes"
        ),
    }
    result.finished = time.time()
    return result


def _describe_briefly(attempts: list[Attempt], wrong: list) -> str:
    """Describe the failed rungs, with the first failed check of each wrong program only.

    The attempts in the report keep up to five failed checks per rung.
    """
    first = {rung: summarize_violations(error.comparisons, limit=1) for rung, error in wrong}
    brief = []
    for item in attempts:
        if item.path in first:
            item = Attempt(item.path, False, f"converted program is wrong: {first[item.path]}",
                           item.operator)
        brief.append(item)
    return describe_attempts(brief)


def _ladder_failure(spec: ConversionSpec, attempts: list[Attempt], wrong: list) -> ConversionError:
    error = _classify_ladder_failure(spec, attempts, wrong)
    error.details["attempts"] = [item.as_dict() for item in attempts]
    error.metrics = {"attempts": error.details["attempts"]}
    return error


def _classify_ladder_failure(
    spec: ConversionSpec, attempts: list[Attempt], wrong: list
) -> ConversionError:
    """Classify the failure of a ladder whose rungs all failed.

    The message's hint suggests only settings that this run has not tried.
    """
    tried = _describe_briefly(attempts, wrong)
    other_path = UNTRIED_PATHS[spec.coreml.path]
    path_hint = f", or try coreml.path: {other_path}" if other_path else ""
    if any(has_shape_mismatch(error.comparisons) for _, error in wrong):
        return ConversionError(
            CONVERSION_FAILED,
            f"every conversion path failed, and the converter produced outputs of the wrong"
            f" shape ({tried}); this is a converter fault: rewrite the operator producing that"
            " output in the model, or report it with the model",
        )
    if wrong:
        return ConversionError(
            TOLERANCE_EXCEEDED,
            f"every conversion path failed and the converted programs disagree with the"
            f" reference ({tried}); {_tolerance_hint(spec)}",
        )
    operators = [(item.operator, item.path) for item in attempts if item.operator]
    if operators:
        named = ", ".join(f"{operator!r} on {path}" for operator, path in operators)
        return ConversionError(
            UNSUPPORTED_OPERATOR,
            f"no conversion path supports the model: operator {named} ({tried}); replace the"
            f" operator with supported ones in the model{path_hint}",
        )
    return ConversionError(
        CONVERSION_FAILED,
        f"every conversion path failed ({tried}); check the model against torch.export and"
        f" torch.jit.trace{path_hint}",
    )


def _tolerance_hint(spec: ConversionSpec) -> str:
    """Return what to change when every converted program missed the tolerances."""
    settings = []
    # `auto` converts each rung in float32 as its last resort, so only float16 leaves
    # another precision to try.
    if spec.coreml.precision == "float16":
        settings.append("coreml.precision: auto or float32")
    other_path = UNTRIED_PATHS[spec.coreml.path]
    if other_path:
        settings.append(f"coreml.path: {other_path}")
    loosen = "loosen validation.atol/rtol if the differences are acceptable"
    if not settings:
        return loosen
    return f"try {' or '.join(settings)}, or {loosen}"
