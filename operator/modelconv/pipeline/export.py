"""The export stage: PyTorch to ONNX, checked with ONNX Runtime against the PyTorch reference.

Exporters, per `export.exporter`: `dynamo` (torch.onnx.export with dynamo=True, ranged
dimensions as torch.export dynamic shapes), `torchscript` (dynamo=False, ranged dimensions as
dynamic axes), or `auto`: dynamo first, then TorchScript. Every attempt is recorded with why
it failed. An ONNX source is passed through after `onnx.checker`.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from pathlib import Path
from typing import Optional

from ..errors import EXPORT_FAILED, ConversionError
from ..spec import ConversionSpec
from . import runtimes
from .attempts import Attempt, describe_attempts, operator_name, summarize_error
from .comparison import compare_outputs, summarize_violations
from .samples import SAMPLES_FILE, build_samples, save_samples
from .signature import example_arguments, export_dynamic_shapes, onnx_dynamic_axes
from .sources import LoadedSource, copy_into, load_source
from .stage import StageContext, StageResult

ONNX_FILE = "model.onnx"
EXPORTERS = {"auto": ("dynamo", "torchscript"), "dynamo": ("dynamo",), "torchscript": ("torchscript",)}


def run_export(context: StageContext) -> StageResult:
    """Export the source model to ONNX and check it with ONNX Runtime on the samples.

    Artifacts: `onnx` (model.onnx) and `samples` (samples.safetensors: inputs and reference
    outputs). Failure classes, all permanent: SourceNotFound, InvalidModel and InvalidSpec
    from loading the source and making samples; ExportFailed when every exporter fails or
    ONNX Runtime disagrees with the reference beyond the validation tolerances. S3 trouble
    while fetching the source is transient (StoreUnavailable).
    """
    spec = context.spec
    result = StageResult(stage="export", succeeded=False)
    context.workdir.mkdir(parents=True, exist_ok=True)

    context.log("loading the source model")
    source = load_source(spec, context.workdir)
    context.log(f"computing reference outputs on {_sample_count(spec)} samples")
    samples = build_samples(spec, source, context.workdir)
    samples_path = save_samples(samples, context.workdir / SAMPLES_FILE)

    onnx_path = context.workdir / ONNX_FILE
    if source.onnx_path is not None:
        copy_into(source.onnx_path, context.workdir, ONNX_FILE)
        attempts = [Attempt("passthrough", True)]
    else:
        attempts = export_onnx(spec, source, onnx_path, context.log)

    # For an ONNX source the reference is ONNX Runtime on the same file, so this check
    # only confirms that the copy runs.
    context.log("checking the ONNX model with ONNX Runtime")
    input_names = [item.name for item in spec.inputs]
    output_names = [output.name for output in spec.outputs]
    actual = runtimes.run_onnx(
        onnx_path, [sample.inputs for sample in samples], input_names, output_names
    )
    comparisons = compare_outputs(actual, [s.outputs for s in samples], output_names, spec.validation)
    failed = [item for item in comparisons if not item.passed]
    if failed:
        used = attempts[-1].path
        other = untried_exporter(attempts)
        hint = f"Try export.exporter: {other}, or loosen" if other else "Loosen"
        raise ConversionError(
            EXPORT_FAILED,
            f"ONNX Runtime disagrees with PyTorch on the exported model ({used} exporter):"
            f" {summarize_violations(failed)}. {hint} validation.atol, rtol or minCosine if"
            " the differences are acceptable.",
        )

    result.succeeded = True
    result.message = f"exported with the {attempts[-1].path} exporter; ONNX Runtime agrees"
    result.artifacts = {"onnx": onnx_path, "samples": samples_path}
    result.metrics = {
        "exporter": attempts[-1].path,
        "attempts": [item.as_dict() for item in attempts],
        "onnxruntime": [item.as_dict() for item in comparisons],
        "source_sha256": source.sha256,
        "samples": len(samples),
    }
    result.finished = time.time()
    return result


def export_onnx(spec: ConversionSpec, source: LoadedSource, path: Path, log=lambda _: None):
    """Run the exporters in ladder order until one writes `path`; return all attempts.

    Raises ExportFailed, naming every attempt, when none succeeds.
    """
    attempts = []
    for exporter in EXPORTERS[spec.export.exporter]:
        log(f"exporting to ONNX with the {exporter} exporter")
        try:
            _export_with(exporter, spec, source, path)
        except Exception as error:  # exporters raise many types; each is recorded
            attempts.append(Attempt(exporter, False, summarize_error(error), operator_name(error)))
            continue
        attempts.append(Attempt(exporter, True))
        return attempts
    other = untried_exporter(attempts)
    hint = f", or try export.exporter: {other}" if other else ""
    raise ConversionError(
        EXPORT_FAILED,
        f"every ONNX exporter failed ({describe_attempts(attempts)}); if an operator is named,"
        f" replace it in the model{hint}",
    )


def untried_exporter(attempts: list[Attempt]) -> Optional[str]:
    """Return the exporter that this run did not try, or None when both ran or the source was
    ONNX (passed through without an exporter)."""
    tried = {item.path for item in attempts}
    if not tried <= set(EXPORTERS["auto"]):
        return None
    return next((name for name in EXPORTERS["auto"] if name not in tried), None)


def _export_with(exporter: str, spec: ConversionSpec, source: LoadedSource, path: Path) -> None:
    import torch

    input_names = [item.name for item in spec.inputs]
    output_names = [output.name for output in spec.outputs]
    arguments = example_arguments(spec)
    options = dict(
        input_names=input_names, output_names=output_names, opset_version=spec.export.opset
    )
    # Exporters print progress and warnings; the attempt record is what matters.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            model = source.exported_program or source.torch_module()
            dynamic = None if source.exported_program is not None else export_dynamic_shapes(spec)
            torch.onnx.export(
                model,
                arguments,
                str(path),
                dynamo=True,
                dynamic_shapes=dynamic,
                external_data=False,
                **options,
            )
        else:
            torch.onnx.export(
                source.torch_module(),
                arguments,
                str(path),
                dynamo=False,
                dynamic_axes=onnx_dynamic_axes(spec) or None,
                **options,
            )
    if not path.is_file():
        raise RuntimeError(f"the {exporter} exporter returned without writing {path.name}")


def _sample_count(spec: ConversionSpec) -> str:
    if spec.validation.samples_file is not None:
        return "the recorded"
    return str(spec.validation.samples.count)
