"""Validation samples: deterministic inputs and the source model's reference outputs.

Inputs come from `validation.samples` (seeded random values) or `validation.samplesFile`
(recorded tensors, read without pickle). Random inputs follow the spec:
- ranged dimensions take their minimum in sample 0, their maximum in sample 1 and seeded
  values in between after that; dimensions written with the same range (e.g. a sequence
  length "1..128" shared by token ids and their attention mask) take the same value within
  a sample, so inputs that must agree do;
- integers are uniform in [values.min, values.max) or [0, 10); floats are standard normal,
  or uniform in [values.min, values.max); bools are fair coin flips;
- image inputs get pixel values in [0, 255]; the model's tensor is pixels * scale + bias,
  as Core ML computes it.

Reference outputs come from the source model: PyTorch, or ONNX Runtime on the original file
for ONNX sources. Everything is saved in one `samples.safetensors` so later stages need not
load the model again. Keys: `sample<i>/input/<name>`, `sample<i>/output/<name>` and, for
image inputs, `sample<i>/pixels/<name>`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..errors import INVALID_MODEL, ConversionError, InvalidSpec
from ..spec import ConversionSpec, TensorInput
from . import runtimes
from .sources import LoadedSource, fetch_file

SAMPLES_FILE = "samples.safetensors"
# Key group in the samples file -> `Sample` attribute.
SAMPLE_GROUPS = {"input": "inputs", "output": "outputs", "pixels": "pixels"}
NUMPY_DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
}


@dataclasses.dataclass
class Sample:
    """One set of inputs with the reference outputs; `pixels` feeds Core ML image inputs."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    pixels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def coreml_inputs(self) -> dict[str, np.ndarray]:
        """Return the inputs the Core ML program takes: pixels for image inputs."""
        return {**self.inputs, **self.pixels}


def build_samples(spec: ConversionSpec, source: LoadedSource, workdir: Path) -> list[Sample]:
    """Make the inputs and compute reference outputs with the source model.

    Raises `InvalidSpec` for a samples file that does not fit the inputs, and
    `ConversionError` (InvalidSpec, InvalidModel) when the source model rejects the inputs or
    returns a different number of outputs than the spec names.
    """
    if spec.validation.samples_file is not None:
        samples = read_samples_file(spec, workdir)
    else:
        samples = random_samples(spec)

    input_names = [item.name for item in spec.inputs]
    output_names = [output.name for output in spec.outputs]
    inputs = [sample.inputs for sample in samples]
    if source.onnx_path is not None:
        outputs = runtimes.run_onnx(
            source.onnx_path, inputs, input_names, output_names, source_model=True
        )
    else:
        outputs = runtimes.run_torch(source.torch_module(), inputs, input_names, output_names)
    for sample, reference in zip(samples, outputs):
        sample.outputs = reference
    return samples


def random_samples(spec: ConversionSpec) -> list[Sample]:
    """Generate `validation.samples.count` seeded input sets."""
    settings = spec.validation.samples
    generator = np.random.default_rng(settings.seed)
    ranges = sorted({dim for item in spec.inputs for dim in item.shape if isinstance(dim, str)})
    samples = []
    for index in range(settings.count):
        sizes = {text: _ranged_size(text, index, generator) for text in ranges}
        sample = Sample(inputs={})
        for item in spec.inputs:
            shape = [sizes[dim] if isinstance(dim, str) else dim for dim in item.shape]
            if item.image is not None:
                pixels = generator.integers(0, 256, size=shape).astype(np.float32)
                sample.pixels[item.name] = pixels
                sample.inputs[item.name] = image_tensor(item, pixels)
            else:
                sample.inputs[item.name] = _random_values(item, shape, generator)
        samples.append(sample)
    return samples


def _ranged_size(text: str, index: int, generator: np.random.Generator) -> int:
    low, high = (int(part) for part in text.split(".."))
    if index == 0:
        return low
    if index == 1 or high - low < 2:
        return high
    return int(generator.integers(low + 1, high))


def _random_values(item: TensorInput, shape: list[int], generator) -> np.ndarray:
    dtype = NUMPY_DTYPES[item.dtype]
    if item.dtype == "bool":
        return generator.integers(0, 2, size=shape).astype(np.bool_)
    if item.dtype.startswith("int"):
        low, high = (0, 10) if item.values is None else (item.values.min, item.values.max)
        return generator.integers(int(np.ceil(low)), int(np.ceil(high)), size=shape).astype(dtype)
    if item.values is None:
        return generator.standard_normal(size=shape).astype(dtype)
    return generator.uniform(item.values.min, item.values.max, size=shape).astype(dtype)


def image_tensor(item: TensorInput, pixels: np.ndarray) -> np.ndarray:
    """Apply the image preprocessing Core ML performs: pixels * scale + bias per channel."""
    bias = np.asarray(channel_bias(item), dtype=np.float32).reshape(1, -1, 1, 1)
    return (pixels * np.float32(item.image.scale) + bias).astype(np.float32)


def channel_bias(item: TensorInput) -> list[float]:
    """Return one bias per channel of an image input (an empty or single bias is broadcast)."""
    channels = 1 if item.image.color_layout == "G" else 3
    bias = list(item.image.bias) or [0.0]
    if len(bias) == 1:
        bias = bias * channels
    if len(bias) != channels:
        raise InvalidSpec(
            f"inputs.{item.name}.image.bias",
            f"{len(bias)} values, but the {item.image.color_layout} layout has {channels}"
            f" channel{'s' if channels > 1 else ''}: give one bias"
            + (f" for all channels or {channels}, one per channel" if channels > 1 else ""),
        )
    return bias


# --- samples file -----------------------------------------------------------------------


def read_samples_file(spec: ConversionSpec, workdir: Path) -> list[Sample]:
    """Read recorded inputs from .safetensors or .npz (never pickle), one sample per row."""
    field = "validation.samplesFile"
    path = fetch_file(spec.validation.samples_file, workdir / "samples-file", field)
    tensors = _read_tensor_file(path, field)

    counts = set()
    for item in spec.inputs:
        if item.name not in tensors:
            raise InvalidSpec(field, f"{path.name} has no tensor named {item.name!r} (has: {sorted(tensors)})")
        _check_recorded(item, tensors[item.name], field)
        counts.add(tensors[item.name].shape[0])
    if len(counts) != 1:
        raise InvalidSpec(field, f"inputs have different sample counts {sorted(counts)}")

    samples = []
    for index in range(counts.pop()):
        sample = Sample(inputs={})
        for item in spec.inputs:
            row = np.ascontiguousarray(tensors[item.name][index])
            if item.image is not None:
                sample.pixels[item.name] = row.astype(np.float32)
                sample.inputs[item.name] = image_tensor(item, sample.pixels[item.name])
            else:
                sample.inputs[item.name] = row.astype(NUMPY_DTYPES[item.dtype])
        samples.append(sample)
    return samples


def _read_tensor_file(path: Path, field: str) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except ValueError as error:  # numpy raises ValueError for object arrays without pickle
            raise InvalidSpec(field, f"{path.name}: {error}; store numeric arrays only") from None
        except (OSError, EOFError) as error:
            raise InvalidSpec(field, f"{path.name} is not a readable .npz file: {error}") from None
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise InvalidSpec(field, f"{path.name} is not a safetensors file: {error}") from None
    raise InvalidSpec(field, f"{path.name}: use a .safetensors or .npz file")


def _check_recorded(item: TensorInput, array: np.ndarray, field: str) -> None:
    shape = array.shape[1:]
    bounds = item.bounds()
    fits = len(shape) == len(bounds) and all(
        low <= size <= high for size, (low, high) in zip(shape, bounds)
    )
    if array.ndim == 0 or not fits:
        raise InvalidSpec(
            field,
            f"tensor {item.name!r} has shape {tuple(array.shape)}; expected a leading sample"
            f" dimension followed by a shape within {item.shape}",
        )
    if array.dtype.kind not in "biuf":
        raise InvalidSpec(field, f"tensor {item.name!r} has unsupported dtype {array.dtype}")


# --- the samples artifact ---------------------------------------------------------------


def save_samples(samples: list[Sample], path: Path) -> Path:
    """Write all samples to one safetensors file."""
    from safetensors.numpy import save_file

    tensors = {}
    for index, sample in enumerate(samples):
        for key_group, attribute in SAMPLE_GROUPS.items():
            for name, array in getattr(sample, attribute).items():
                tensors[f"sample{index}/{key_group}/{name}"] = np.ascontiguousarray(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"samples": json.dumps(len(samples))})
    return path


def load_samples(path: Path) -> list[Sample]:
    """Read samples written by `save_samples`."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ConversionError(INVALID_MODEL, f"cannot read samples {path}: {error}") from None
    samples: dict[int, Sample] = {}
    for key, array in tensors.items():
        head, group, name = key.split("/", 2)
        sample = samples.setdefault(int(head.removeprefix("sample")), Sample(inputs={}))
        getattr(sample, SAMPLE_GROUPS[group])[name] = array
    return [samples[index] for index in sorted(samples)]
