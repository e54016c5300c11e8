"""The validate stage: every output of the converted model against the PyTorch reference.

Two runtimes are compared on the samples: ONNX Runtime on `model.onnx`, and the Core ML
program of `model.mlpackage` executed on Linux by the reference executor (`modelconv.mil`),
in the program's own precision (float16 ops emulated). When the executor is not installed,
or cannot run one of the program's ops, only ONNX Runtime and the package's declared output
shapes are checked, and the result says plainly that the Core ML program was not executed.

Figures and the pass rule are those of `comparison`. A failing fp16 program is diagnosed:
the failure names the first ops where float16 diverges from float32.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import TOLERANCE_EXCEEDED, ConversionError
from ..spec import ConversionSpec
from . import runtimes
from .feature_names import package_feature_names
from .comparison import OutputComparison, compare_outputs, summarize_violations
from .samples import Sample, load_samples
from .stage import StageContext, StageResult

# First diverging ops listed in a failure message.
MAX_DIVERGING_OPS = 5


def run_validate(context: StageContext) -> StageResult:
    """Compare ONNX Runtime and the Core ML program with the reference outputs.

    Inputs: `samples` (required), `mlpackage` and `onnx` (each checked when present).
    Failure classes, all permanent: ToleranceExceeded naming the output, the check, the value
    and the limit (an output of the wrong shape, NaN, or an error beyond atol/rtol, minCosine
    or minPsnr), with the first diverging ops for float16 programs; InvalidModel for an
    unreadable samples file.
    """
    spec = context.spec
    samples = load_samples(context.inputs["samples"])
    names = [output.name for output in spec.outputs]
    expected = [sample.outputs for sample in samples]
    metrics: dict = {"samples": len(samples)}
    failures: list[str] = []

    onnx_path = context.inputs.get("onnx")
    if onnx_path is not None:
        context.log("validating ONNX Runtime")
        input_names = [item.name for item in spec.inputs]
        actual = runtimes.run_onnx(
            onnx_path, [sample.inputs for sample in samples], input_names, names
        )
        comparisons = compare_outputs(actual, expected, names, spec.validation)
        metrics["onnxruntime"] = [item.as_dict() for item in comparisons]
        failures += _failures("ONNX Runtime", comparisons)

    package = context.inputs.get("mlpackage")
    if package is not None:
        context.log("validating the Core ML program")
        renamed = package_feature_names(package, [item.name for item in spec.inputs], names)
        if renamed.renamed():
            # Reported so that callers of the package know which names to pass.
            metrics["coreml_renamed"] = renamed.renamed()
            context.log(f"coremltools renamed features: {renamed.renamed()}")
        coreml, note, diagnosis = _validate_coreml(spec, package, samples)
        metrics["coreml_source"] = note
        metrics["coreml"] = [item.as_dict() for item in coreml] if coreml else None
        failures += _failures("Core ML", coreml)
        if diagnosis:
            metrics["fp16_diagnosis"] = diagnosis
        if note in (runtimes.COREML_EXECUTED_FP16, runtimes.COREML_EXECUTED_FP32):
            metrics.update(_headline(coreml))
    else:
        note = "no Core ML package given"

    if failures:
        message = "; ".join(failures)
        if metrics.get("fp16_diagnosis"):
            divergence = _describe_divergence(metrics["fp16_diagnosis"], spec.coreml.precision)
            message += f"; float16 first diverges at {divergence}"
        error = ConversionError(TOLERANCE_EXCEEDED, f"{message} ({note})")
        error.metrics = metrics
        raise error

    result = StageResult(stage="validate", succeeded=True, metrics=metrics)
    result.message = f"all outputs within tolerance; {note}"
    result.finished = time.time()
    return result


def _validate_coreml(spec: ConversionSpec, package: Path, samples: list[Sample]):
    """Return (comparisons, note on where the figures came from, fp16 diagnosis or None)."""
    names = [output.name for output in spec.outputs]
    declared = _declared_shapes(package, samples, names, spec)
    if not runtimes.coreml_executor_available():
        return declared, runtimes.COREML_NOT_EXECUTED, None

    mil = runtimes.coreml_executor()
    try:
        program = mil.load_program(package)
        feature_names = runtimes.program_feature_names(
            program, [item.name for item in spec.inputs], names
        )
        actual = []
        for sample in samples:
            results = mil.execute(program, feature_names.feed(sample.coreml_inputs()))
            actual.append(feature_names.by_spec_name(results))
    except mil.UnsupportedOp as error:
        note = (
            f"Core ML package not executed: the reference executor has no implementation of"
            f" op {error.op_type!r}; only ONNX Runtime and the declared shapes were checked"
        )
        return declared, note, None

    note = runtimes.COREML_EXECUTED_FP16 if program.is_fp16 else runtimes.COREML_EXECUTED_FP32
    comparisons = compare_outputs(actual, [s.outputs for s in samples], names, spec.validation)
    diagnosis = None
    if program.is_fp16 and any(not item.passed for item in comparisons):
        diagnosis = _diagnose(mil, program, feature_names.feed(samples[0].coreml_inputs()), spec)
    return comparisons, note, diagnosis


def _declared_shapes(package: Path, samples, names, spec: ConversionSpec) -> list:
    """Compare the output shapes the package declares with the reference shapes."""
    import coremltools as ct

    if any(item.is_ranged for item in spec.inputs):
        return []
    declared = {
        output.name: tuple(int(size) for size in output.type.multiArrayType.shape)
        for output in ct.utils.load_spec(str(package)).description.output
    }
    coreml_names = package_feature_names(package, [item.name for item in spec.inputs], names)
    comparisons = []
    for name in names:
        shape = declared.get(coreml_names.outputs[name], ())
        expected = tuple(samples[0].outputs[name].shape)
        comparison = OutputComparison(name, shape=shape, expected_shape=expected)
        if shape and shape != expected:
            comparison.violations.append(
                f"declared shape {shape} differs from the reference shape {expected}"
            )
        comparisons.append(comparison)
    return comparisons


def _diagnose(mil, program, coreml_inputs: dict, spec: ConversionSpec) -> dict:
    threshold = max(spec.validation.rtol, 1e-3)
    diagnosis = mil.diagnose_precision(program, coreml_inputs, threshold)
    return {
        "ops_in_fp16": diagnosis.ops_in_fp16,
        "ops_total": diagnosis.ops_total,
        "first_divergent_ops": [
            {
                "name": item.name,
                "op_type": item.op_type,
                "max_abs_error": item.max_abs_error,
                "max_rel_error": item.max_rel_error,
            }
            for item in diagnosis.first_divergent_ops
        ],
    }


def _describe_divergence(diagnosis: dict, precision: str) -> str:
    """Name the first ops where float16 diverges and the precision setting to try next.

    `precision` is spec.coreml.precision. Only a program with float16 ops is diagnosed, so
    it is float16, or `auto`, which has already tried keeping single ops in float32.
    """
    ops = diagnosis["first_divergent_ops"][:MAX_DIVERGING_OPS]
    untried = "auto or float32" if precision == "float16" else "float32"
    if not ops:
        return f"no single op (the error accumulates); try coreml.precision: {untried}"
    listed = ", ".join(
        f"{item['op_type']} {item['name']!r} (rel. error {item['max_rel_error']:.3g})" for item in ops
    )
    if precision == "float16":
        return f"{listed}; coreml.precision: auto keeps such ops in float32"
    return f"{listed}; try coreml.precision: float32"


def _failures(runtime: str, comparisons: list[OutputComparison]) -> list[str]:
    failed = [item for item in comparisons if not item.passed]
    return [f"{runtime}: {summarize_violations(failed)}"] if failed else []


def _headline(comparisons: list[OutputComparison]) -> dict:
    """Return the worst figures over all outputs of an executed program, for status columns."""
    return {
        "max_abs_error": max(item.max_abs_error for item in comparisons),
        "min_cosine": min(item.cosine for item in comparisons),
    }
