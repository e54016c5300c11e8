"""The publish stage: the verified artifacts become an immutable release in the store.

The release contains the zipped Core ML package, the ONNX model and the run report
(report.json, report.html). Its manifest, written last by `publish_release`, records what
was converted (source and spec digests, tool versions), the model's inputs and outputs as
the Core ML package declares them, and the validation figures.

Failure classes: VersionExists (other bytes already published under this version),
AccessDenied and IntegrityFailed are permanent; StoreUnavailable is transient when the store
is unreachable. Any of them leaves no visible release, because the manifest is written last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import CONVERSION_FAILED, ConversionError
from ..redaction import redact_url
from ..spec import ConversionSpec
from .feature_names import package_feature_names
from .report import (
    build_report, json_safe, spec_digest, tool_versions, validation_rows, write_report,
)
from .stage import StageContext, StageResult

# File names inside a release.
PACKAGE_ZIP = "model.mlpackage.zip"
ONNX_FILE = "model.onnx"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
# From the device stage of a cluster run, when a coreml runner compiled the package.
COMPILED_MODEL_ZIP = "model.mlmodelc.zip"


def find_artifact(inputs: dict[str, Path], file_name: str) -> Optional[Path]:
    """Return the input artifact with this file name, whatever name its stage gave it."""
    if file_name in inputs:
        return Path(inputs[file_name])
    return next((Path(path) for path in inputs.values() if Path(path).name == file_name), None)


def _required_artifact(context: StageContext, file_name: str, stage: str) -> Path:
    path = find_artifact(context.inputs, file_name)
    if path is None or not path.exists():
        raise ConversionError(
            CONVERSION_FAILED,
            f"publish needs {file_name} from the {stage} stage, but it is missing; rerun the"
            f" {stage} stage",
        )
    return path


def run_publish(context: StageContext) -> StageResult:
    """Zip the package, write the report, and publish the release with its manifest.

    Reads `model.mlpackage` and `model.onnx` from the inputs and the results of earlier
    stages from `context.previous`; the store is `spec.publish.store`, which the runner has
    already resolved.
    """
    from ..release import publish_release, zip_package
    from ..store import open_store
    from .run import skipped_stages

    spec = context.spec
    package = _required_artifact(context, "model.mlpackage", "convert")
    onnx_path = _required_artifact(context, ONNX_FILE, "export")
    store = open_store(spec.publish.store)
    location = store.url_of(f"{spec.publish.model}/{spec.publish.version}")

    context.log(f"zipping {package.name}")
    package_zip = context.workdir / PACKAGE_ZIP
    zip_package(package, package_zip)

    context.log("writing the report")
    package_signature = coreml_signature(package, spec)
    skipped = skipped_stages(spec)
    if "device" in context.previous:  # a runner checked the package (cluster runs)
        skipped.pop("device", None)
    report = build_report(
        spec, list(context.previous.values()), skipped,
        name=context.name,
        release={"location": location, "store": store.describe()},
        package_signature=package_signature,
    )
    report_json, report_html = write_report(report, context.workdir)

    context.log(f"publishing to {location}")
    manifest = json_safe(build_manifest(spec, context, package_signature))
    files = {
        PACKAGE_ZIP: package_zip,
        ONNX_FILE: onnx_path,
        REPORT_JSON: report_json,
        REPORT_HTML: report_html,
    }
    compiled = find_artifact(context.inputs, COMPILED_MODEL_ZIP)
    if compiled is not None:  # compiled by a coreml runner in the device stage
        files[COMPILED_MODEL_ZIP] = compiled
    published = publish_release(
        store,
        model=spec.publish.model,
        version=spec.publish.version,
        files=files,
        manifest=manifest,
        channels=tuple(spec.publish.channels),
    )
    return StageResult(
        stage="publish",
        succeeded=True,
        message=f"published {location}",
        # The package is in the release already; a stage cache needs only the reports.
        artifacts={REPORT_JSON: report_json, REPORT_HTML: report_html},
        metrics=release_metrics(published, location),
    )


def finish_stopped_publish(
    store, spec: ConversionSpec, stored, started: float
) -> Optional[StageResult]:
    """Finish a publish of this spec that stopped after its manifest, without converting again.

    Returns a succeeded publish result when the index entry or a channel was missing and is
    now written, and None when nothing is left to finish. A version published from another
    spec whose index entry is missing gives a failed VersionExists result that names the
    command which records it.
    """
    import time

    from ..errors import VERSION_EXISTS
    from ..release import complete_release
    from ..release.publish import unfinished_steps

    model, version = spec.publish.model, spec.publish.version
    channels = tuple(spec.publish.channels)
    location = store.url_of(f"{model}/{version}")
    try:
        completed = complete_release(store, model, version, channels, spec_digest(spec))
        missing_from_index = completed is None and unfinished_steps(store, stored, ())[0]
    except ConversionError as error:
        return StageResult(stage="publish", succeeded=False, reason=error.reason,
                           message=error.message, started=started, finished=time.time())
    if completed is not None:
        return StageResult(
            stage="publish",
            succeeded=True,
            message=f"finished the publish of {location}: its index entry and channels",
            metrics=release_metrics(completed, location),
            started=started,
            finished=time.time(),
        )
    if not missing_from_index:
        return None
    return StageResult(
        stage="publish",
        succeeded=False,
        reason=VERSION_EXISTS,
        message=(
            f"{location} is published from another spec (its manifest's specSha256 differs)"
            f" and is not in index.json yet. Set publish.version to a new version; to list"
            f" the existing one, run `modelconv promote {location} CHANNEL`"
        ),
        started=started,
        finished=time.time(),
    )


def stopped_run_state(conversion, store_option: Optional[str]):
    """Return the PublishState of a run stopped by Ctrl-C: nothing, or a version to finish.

    The stop may have come after the manifest was written, so the store is read to find out.
    """
    from ..release import PublishState, publish_state
    from ..store import open_store
    from .run import resolve_store

    spec = conversion.spec
    store_url = resolve_store(conversion, store_option)
    try:
        store = open_store(store_url)
        return publish_state(
            store, spec.publish.model, spec.publish.version, tuple(spec.publish.channels)
        )
    except (ConversionError, OSError, KeyboardInterrupt) as error:
        # A second Ctrl-C or an unreachable store: report what is unknown and how to check it.
        cause = error.message if isinstance(error, ConversionError) else type(error).__name__
        return PublishState(
            f"could not read {store_url} to find whether version {spec.publish.version} was"
            f" published ({cause})",
            "`modelconv releases` and `modelconv verify` show it, and running the same"
            " `modelconv run` command again finishes the release",
        )


def release_metrics(published, location: str) -> dict:
    """Return the publish stage's metrics: where the release is and what it contains."""
    return {
        "location": location,
        "report": f"{location}/{REPORT_HTML}",
        "manifest": f"{location}/manifest.json",
        "manifest_sha256": published.manifest_sha256,
        # False when the same bytes had been published before (a retried publish).
        "created": published.created,
        "channels": list(published.channels),
        "files": published.manifest.get("files", {}),
    }


# --- the manifest ---------------------------------------------------------------------------


def build_manifest(spec: ConversionSpec, context: StageContext, package_signature: dict) -> dict:
    """Return the manifest fields that describe the release (publish_release adds the files).

    Keys are camelCase, as in the rest of the manifest.
    """
    export = context.previous.get("export")
    convert = context.previous.get("convert")
    validate = context.previous.get("validate")
    device = context.previous.get("device")
    fields = {
        "model": spec.publish.model,
        "version": spec.publish.version,
        "source": source_description(spec, export),
        "specSha256": spec_digest(spec),
        "tools": tool_versions(),
        **package_signature,
        "conversion": {
            "path": (convert.metrics.get("path") if convert else None),
            "precision": spec.coreml.precision,
            "minimumDeploymentTarget": spec.coreml.minimum_deployment_target,
        },
        "validation": validation_summary(spec, validate),
    }
    if device is not None and device.metrics.get("device"):
        fields["device"] = device.metrics["device"]
    return fields


def source_description(spec: ConversionSpec, export: Optional[StageResult]) -> dict:
    """Return the source kind, its location or entrypoint, and the sha256 of its file."""
    source = spec.source
    kind = source.kind
    described = {"kind": kind, "sha256": (export.metrics.get("source_sha256") if export else None) or None}
    if kind == "factory":
        described["entrypoint"] = source.factory.entrypoint
        described["seed"] = source.factory.seed
        if source.factory.weights is not None:
            described["weights"] = redact_url(source.factory.weights.uri)
    else:
        described["uri"] = redact_url(getattr(source, kind).uri)
    return described


def validation_summary(spec: ConversionSpec, validate: Optional[StageResult]) -> dict:
    """Return the validation figures per runtime and output, for the manifest."""
    rows = validation_rows(validate, spec)
    return {
        "source": validate.metrics.get("coreml_source", "") if validate else "",
        "tolerances": spec.validation.model_dump(
            mode="json", by_alias=True, include={"atol", "rtol", "min_cosine", "min_psnr"}
        ),
        "outputs": [
            {
                "runtime": row["runtime"],
                "output": row["output"],
                "maxAbsError": row.get("max_abs_error"),
                "maxRelError": row.get("max_rel_error"),
                "cosine": row.get("cosine"),
                "psnrDb": row.get("psnr_db"),
                "passed": all(state is not False for state in row["checks"].values()),
            }
            for row in rows
        ],
    }


def coreml_signature(package: Path, spec: Optional[ConversionSpec] = None) -> dict:
    """Return the inputs and outputs that the Core ML package declares: name, shape, dtype.

    A ranged dimension appears as "MIN..MAX" ("MIN.." when unbounded); `shape` is None for
    an output whose shape the program leaves to run time. With `spec`, a feature that
    coremltools renamed (an input called `state` becomes `state_workaround`) also has
    `specName`, the name in the spec.
    """
    import coremltools as ct

    description = ct.utils.load_spec(str(package)).description
    signature = {
        "inputs": [_feature(feature) for feature in description.input],
        "outputs": [_feature(feature) for feature in description.output],
    }
    if spec is not None:
        names = package_feature_names(
            package, [item.name for item in spec.inputs], [item.name for item in spec.outputs]
        )
        for kind, renamed in (("inputs", names.inputs), ("outputs", names.outputs)):
            spec_names = {coreml: name for name, coreml in renamed.items() if coreml != name}
            for feature in signature[kind]:
                if feature["name"] in spec_names:
                    feature["specName"] = spec_names[feature["name"]]
    return signature


def _feature(feature) -> dict:
    from coremltools.proto import FeatureTypes_pb2

    kind = feature.type.WhichOneof("Type")
    if kind == "imageType":
        image = feature.type.imageType
        color = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)
        return {"name": feature.name, "shape": [image.height, image.width], "dtype": f"image/{color}"}
    if kind != "multiArrayType":
        return {"name": feature.name, "shape": None, "dtype": kind}
    array = feature.type.multiArrayType
    dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType).lower()
    shape = list(array.shape) or None
    if array.WhichOneof("ShapeFlexibility") == "shapeRange":
        shape = [
            size.lowerBound if size.lowerBound == size.upperBound
            else f"{size.lowerBound}..{size.upperBound if size.upperBound >= 0 else ''}"
            for size in array.shapeRange.sizeRanges
        ]
    return {"name": feature.name, "shape": shape, "dtype": dtype}
