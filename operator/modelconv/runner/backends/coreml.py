"""The `coreml` backend: real Core ML predictions on a Mac through coremltools.

Per check, the package is compiled once to `.mlmodelc`. That time is the compile time, and
the compiled model is zipped and uploaded for the release. Then, for each requested compute
unit, the compiled model is loaded (load time) and every sample is predicted and compared.
The latency percentiles come from `measured_runs` predictions of the first sample after
`warmup_runs` untimed ones.

Core ML exists only on macOS: `prepare()` raises BackendUnavailable anywhere else, so an
agent started with `--backend coreml` on Linux stops before it registers.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from ..resource import COREML, PACKAGE_LOAD_FAILED, PREDICTION_FAILED
from . import (
    BackendRequest,
    BackendRun,
    BackendUnavailable,
    CheckCancelled,
    PackageLoadFailure,
    UnitRun,
    elapsed_ms,
    measure_latencies,
)

# Compute unit names in the CoreMLCheck spec -> coremltools.ComputeUnit member names.
COMPUTE_UNIT_MEMBERS = {
    "cpuOnly": "CPU_ONLY",
    "cpuAndGPU": "CPU_AND_GPU",
    "cpuAndNeuralEngine": "CPU_AND_NE",
    "all": "ALL",
}

# coremltools.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType values -> numpy dtypes.
ARRAY_DTYPES = {65568: np.float32, 65552: np.float16, 65600: np.float64, 131104: np.int32,
                131080: np.int8}
# ImageFeatureType.ColorSpace values.
GRAYSCALE, RGB, BGR, GRAYSCALE_FLOAT16 = 10, 20, 30, 40


class CoreMLBackend:
    """Runs checks with Core ML on this Mac."""

    name = COREML

    def prepare(self) -> None:
        if sys.platform != "darwin":
            raise BackendUnavailable(
                f"the coreml backend runs Core ML, which exists only on macOS, and this host "
                f"runs {platform.system()}: start the agent on a Mac, or use --backend "
                "mil-reference here (its results never mark a model as verified on a device)"
            )
        try:
            import coremltools  # noqa: F401
            from coremltools.libcoremlpython import _MLModelProxy  # noqa: F401
        except ImportError as error:
            raise BackendUnavailable(
                f"coremltools with its native Core ML bindings is needed ({error}): install "
                "it with pip install 'modelconv[agent]' on macOS"
            ) from None

    def run(self, request: BackendRequest) -> BackendRun:
        import coremltools as ct

        compiled, compile_ms = _compile(ct, request)
        description = ct.models.MLModel(
            str(request.package), skip_model_load=True
        ).get_spec().description
        units = []
        for compute_unit in request.compute_units:
            unit = _run_unit(ct, compiled, compute_unit, description, request)
            unit.compile_ms = compile_ms
            units.append(unit)
        return BackendRun(units=units, compiled_model=compiled, host=host_details())


def _compile(ct, request: BackendRequest) -> tuple[Path, float]:
    started = time.perf_counter()
    destination = request.workdir / "model.mlmodelc"
    try:
        compiled = ct.models.utils.compile_model(str(request.package), str(destination))
    # coremltools raises plain Exceptions from the Core ML compiler.
    except Exception as error:
        raise PackageLoadFailure(f"Core ML could not compile the package: {error}") from None
    return Path(compiled), elapsed_ms(started)


def _run_unit(ct, compiled: Path, compute_unit: str, description,
              request: BackendRequest) -> UnitRun:
    unit = UnitRun(compute_unit=compute_unit)
    started = time.perf_counter()
    try:
        model = ct.models.CompiledMLModel(
            str(compiled), compute_units=ct.ComputeUnit[COMPUTE_UNIT_MEMBERS[compute_unit]]
        )
    # Core ML reports load failures (an op the unit cannot run...) as plain Exceptions.
    except Exception as error:
        unit.failure_reason = PACKAGE_LOAD_FAILED
        unit.failure_message = f"Core ML could not load the model on {compute_unit}: {error}"
        return unit
    unit.load_ms = elapsed_ms(started)
    try:
        names = coreml_feature_names(description, request)
        feeds = [feed_for(description, names.feed(sample)) for sample in request.samples]
        unit.outputs = [
            names.by_spec_name(prediction_arrays(model.predict(feed))) for feed in feeds
        ]
        unit.latencies_ms = measure_latencies(lambda: model.predict(feeds[0]), request)
    except CheckCancelled:
        raise
    # Same as above: prediction errors come as plain Exceptions with Core ML's message.
    except Exception as error:
        unit.failure_reason = PREDICTION_FAILED
        unit.failure_message = f"prediction on {compute_unit} failed: {error}"
    return unit


def coreml_feature_names(description, request: BackendRequest):
    """Match the samples' names to the model's (coremltools renames e.g. `state`)."""
    from ...pipeline.feature_names import match_feature_names

    return match_feature_names(
        list(request.samples[0]), [feature.name for feature in description.input],
        request.output_names, [feature.name for feature in description.output],
    )


def feed_for(description, sample: Mapping[str, np.ndarray]) -> dict:
    """Return the predict() input dict for `sample`, shaped by the model's input description.

    Multi-arrays are cast to the dtype the model declares (int64 tensors become int32, as
    Core ML has no int64). Image inputs become PIL images: the array contains pixel values in
    0..255, shaped (1, C, H, W), (C, H, W) or (H, W), channels in the model's color layout.
    """
    feed = {}
    for feature in description.input:
        if feature.name not in sample:
            raise ValueError(f"the inputs file has no tensor for model input {feature.name!r}")
        value = np.asarray(sample[feature.name])
        kind = feature.type.WhichOneof("Type")
        if kind == "multiArrayType":
            dtype = ARRAY_DTYPES.get(feature.type.multiArrayType.dataType, np.float32)
            feed[feature.name] = value.astype(dtype, copy=False)
        elif kind == "imageType":
            feed[feature.name] = image_from_array(value, feature.type.imageType.colorSpace)
        else:
            feed[feature.name] = value
    return feed


def image_from_array(value: np.ndarray, color_space: int):
    """Return a PIL image for an image input; `color_space` is the model's ColorSpace."""
    from PIL import Image

    array = np.squeeze(value, axis=0) if value.ndim == 4 else value
    if color_space == GRAYSCALE_FLOAT16:
        return Image.fromarray(array.reshape(array.shape[-2:]).astype(np.float32), mode="F")
    pixels = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if color_space == GRAYSCALE:
        return Image.fromarray(pixels.reshape(pixels.shape[-2:]), mode="L")
    if pixels.ndim != 3 or pixels.shape[0] != 3:
        raise ValueError(f"a color image input needs shape (1, 3, H, W); got {list(value.shape)}")
    channels_last = np.transpose(pixels, (1, 2, 0))
    if color_space == BGR:
        # PIL images are RGB; Core ML reorders channels to the model's BGR layout itself.
        channels_last = channels_last[:, :, ::-1]
    return Image.fromarray(np.ascontiguousarray(channels_last), mode="RGB")


def prediction_arrays(prediction: Mapping) -> dict[str, np.ndarray]:
    """Return predict()'s outputs as numpy arrays (image outputs included)."""
    return {name: np.asarray(value) for name, value in prediction.items()}


def host_details() -> dict:
    """Return the macOS version, chip and coremltools version of this Mac."""
    import coremltools

    return {
        "os": f"macOS {platform.mac_ver()[0]}",
        "chip": chip_brand() or platform.machine(),
        "coremltools": coremltools.__version__,
    }


def chip_brand() -> Optional[str]:
    """Return the CPU brand string on macOS (e.g. 'Apple M2'), or None elsewhere."""
    if sys.platform != "darwin":
        return None
    try:
        result = subprocess.run(
            ["/usr/sbin/sysctl", "-n", "machdep.cpu.brand_string"],
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def detected_labels() -> dict[str, str]:
    """Return `chip` and `macos` labels for this Mac (e.g. m2, 15.1); empty elsewhere."""
    labels = {}
    brand = chip_brand() or ""
    words = brand.lower().split()
    if len(words) >= 2 and words[0] == "apple" and words[1].isalnum():
        labels["chip"] = words[1]
    version = platform.mac_ver()[0] if sys.platform == "darwin" else ""
    if version:
        labels["macos"] = ".".join(version.split(".")[:2])
    return labels
