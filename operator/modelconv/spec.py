"""Typed models of the ModelConversion resource (`modelconv.io/v1alpha1`).

These models are the single source of the resource's shape: `modelconv run` validates files
with them, `modelconv schema` prints their JSON Schema, and the CRD in `crds/` is generated
from them. Field names are camelCase in YAML, as Kubernetes resources spell them.

Unknown fields are rejected with their path, so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from .errors import InvalidSpec
from .redaction import redact_urls

API_GROUP = "modelconv.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "ModelConversion"

# A ranged dimension is written "MIN..MAX"; an integer-or-string field keeps the CRD schema
# structural (Kubernetes rejects a union of integer and object).
RANGE_PATTERN = r"^[0-9]+\.\.[0-9]+$"
# Model names and versions become S3 key segments: no slashes, no "..", bounded length.
MODEL_NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
VERSION_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._+-]{0,62}[A-Za-z0-9])?$"
CHANNEL_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"
# Names the release store uses next to a model's version folders (the index and the channels
# folder, see modelconv.release). Compared without case, because macOS folders ignore it.
RESERVED_VERSIONS = frozenset({"index.json", "channels"})
SHA256_PATTERN = r"^[0-9a-f]{64}$"
# Local path, file:// or s3://bucket/key.
URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+|file://.+|[^:]+)$"
FACTORY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"
FEATURE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
STORE_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file://.+|[^:]+)$"
MACOS_VERSION_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
CHIP_PATTERN = r"^[a-z0-9]{1,16}$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"
KUBERNETES_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# What each pattern allows, in words: error messages show these, never the pattern itself.
PATTERN_DESCRIPTIONS = {
    RANGE_PATTERN: "a whole number or a range MIN..MAX, e.g. 1..512",
    MODEL_NAME_PATTERN: (
        "1 to 63 characters: lowercase letters, digits, '.', '_' and '-', starting and ending"
        " with a letter or digit"
    ),
    VERSION_PATTERN: (
        "1 to 64 characters: letters, digits, '.', '_', '+' and '-', starting and ending with"
        " a letter or digit, e.g. 1.0.0"
    ),
    CHANNEL_PATTERN: (
        "1 to 32 characters: lowercase letters, digits and '-', starting and ending with a"
        " letter or digit, e.g. stable"
    ),
    SHA256_PATTERN: "a SHA-256 digest: 64 lowercase hexadecimal characters",
    URI_PATTERN: "a local path, file:///path or s3://bucket/key",
    FACTORY_PATTERN: "module:attribute, e.g. torchvision.models:mobilenet_v3_small",
    FEATURE_NAME_PATTERN: (
        "1 to 64 letters, digits and '_', not starting with a digit (a name valid in ONNX and"
        " Core ML)"
    ),
    STORE_PATTERN: "s3://bucket/prefix, file:///dir or a local directory",
    MACOS_VERSION_PATTERN: "a macOS version such as 14 or 14.4",
    CHIP_PATTERN: "1 to 16 lowercase letters or digits, e.g. m2",
    QUANTITY_PATTERN: "a Kubernetes quantity such as 500m, 2 or 4Gi",
    KUBERNETES_NAME_PATTERN: (
        "a Kubernetes name: 1 to 63 lowercase letters, digits and '-', starting and ending"
        " with a letter or digit"
    ),
}
# Values YAML makes of unquoted scalars, which a string field gets instead of the text written.
YAML_SCALARS = (int, float, bool, datetime.date, type(None))
# 2**28 float32 elements are 1 GiB per validation sample.
MAX_INPUT_ELEMENTS = 2**28


class SpecModel(BaseModel):
    """Base of every spec model: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        # The JSON Schema's titles: "Minimum deployment target", not "Minimumdeploymenttarget".
        field_title_generator=lambda name, info: name.replace("_", " ").capitalize(),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # NaN would pass no tolerance check and fail every comparison with it.
        allow_inf_nan=False,
    )


# --- source -----------------------------------------------------------------------------


class FileSource(SpecModel):
    """A model file located by local path, `file://` or `s3://` URI."""

    uri: str = Field(
        min_length=1,
        max_length=2048,
        pattern=URI_PATTERN,
        description="Location of the file: a local path, file:///abs/path or s3://bucket/key.",
    )
    sha256: Optional[str] = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="Expected lowercase hex SHA-256 of the file; the run fails when it differs.",
    )


class FactoryWeights(FileSource):
    """Weights loaded into a factory-built module, without unpickling arbitrary objects."""

    format: Literal["safetensors", "stateDict"] = Field(
        default="safetensors",
        description=(
            "safetensors, or stateDict: a torch.save'd state dict read with "
            "torch.load(weights_only=True)."
        ),
    )


class FactorySource(SpecModel):
    """A Python callable that returns an `nn.Module`, importable in the stage's environment."""

    entrypoint: str = Field(
        pattern=FACTORY_PATTERN,
        description="`module:function` returning a torch.nn.Module, e.g. torchvision.models:mobilenet_v3_small.",
    )
    kwargs: dict[str, Union[str, int, float, bool]] = Field(
        default_factory=dict,
        description="Keyword arguments passed to the factory (scalars only).",
    )
    weights: Optional[FactoryWeights] = Field(
        default=None, description="Weights to load into the module with strict key matching."
    )
    seed: int = Field(
        default=0,
        strict=True,
        ge=0,
        description="torch.manual_seed applied before the factory runs, so random init is reproducible.",
    )


class Source(SpecModel):
    """Where the model comes from: exactly one of the four kinds."""

    exported_program: Optional[FileSource] = Field(
        default=None, description="A torch.export ExportedProgram file (.pt2)."
    )
    torchscript: Optional[FileSource] = Field(
        default=None, description="A TorchScript file loaded with torch.jit.load."
    )
    onnx: Optional[FileSource] = Field(default=None, description="An ONNX model file.")
    factory: Optional[FactorySource] = Field(
        default=None, description="A Python factory that builds the module."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> "Source":
        kinds = [k for k in SOURCE_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "set exactly one of exportedProgram, torchscript, onnx or factory"
                f" (found {len(kinds)}: {', '.join(to_camel(k) for k in kinds) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        """The source kind in snake_case: exported_program, torchscript, onnx or factory."""
        return next(k for k in SOURCE_KINDS if getattr(self, k) is not None)


SOURCE_KINDS = ("exported_program", "torchscript", "onnx", "factory")


# --- inputs and outputs -----------------------------------------------------------------

Dim = Annotated[
    Union[
        # strict: YAML reads true and false as booleans, which a lax int would take as 1 and 0.
        Annotated[int, Field(ge=1, strict=True)],
        Annotated[str, Field(pattern=RANGE_PATTERN)],
    ],
    Field(description='A fixed size (integer >= 1) or a range "MIN..MAX".'),
]


class ValueRange(SpecModel):
    """Bounds of the random values generated for an input (integers: max is exclusive)."""

    min: float = Field(description="Lowest value.")
    max: float = Field(description="Upper bound (exclusive for integer inputs).")

    @model_validator(mode="after")
    def _ordered(self) -> "ValueRange":
        if self.max <= self.min:
            raise ValueError(f"max ({self.max}) must be greater than min ({self.min})")
        return self


class ImagePreprocessing(SpecModel):
    """Makes the Core ML input an image; the converter adds `x * scale + bias`."""

    color_layout: Literal["RGB", "BGR", "G"] = Field(default="RGB", description="Channel order.")
    scale: float = Field(default=1.0, gt=0, description="Multiplier applied to each pixel value.")
    bias: list[float] = Field(
        default_factory=list,
        max_length=3,
        description="Added per channel after scaling (one value per channel, or empty for 0).",
    )


class TensorInput(SpecModel):
    """One model input."""

    name: str = Field(
        pattern=FEATURE_NAME_PATTERN, description="Input name in ONNX and Core ML."
    )
    shape: list[Dim] = Field(min_length=0, max_length=8, description="Dimensions, outermost first.")
    dtype: Literal["float32", "float16", "int32", "int64", "bool"] = Field(
        default="float32", description="Element type the model takes."
    )
    values: Optional[ValueRange] = Field(
        default=None,
        description=(
            "Range of the random validation values. Default: standard normal for floats, "
            "0..10 for integers. Token-id inputs need the vocabulary size here."
        ),
    )
    image: Optional[ImagePreprocessing] = Field(
        default=None, description="Present when the Core ML input is an image."
    )

    @field_validator("shape")
    @classmethod
    def _ranges_ordered(cls, shape: list) -> list:
        for index, dim in enumerate(shape):
            if isinstance(dim, str):
                low, high = (int(part) for part in dim.split(".."))
                if low < 1 or high <= low:
                    raise ValueError(
                        f"dimension {index}: range {dim!r} needs 1 <= MIN < MAX"
                    )
        return shape

    @model_validator(mode="after")
    def _bounded_size(self) -> "TensorInput":
        elements = 1
        for _, high in self.bounds():
            elements *= high
        if elements > MAX_INPUT_ELEMENTS:
            raise ValueError(
                f"input {self.name!r} holds up to {elements} elements; validation samples are"
                f" limited to {MAX_INPUT_ELEMENTS} elements per input: lower the shape or its"
                " range maximum"
            )
        return self

    @property
    def is_ranged(self) -> bool:
        return any(isinstance(dim, str) for dim in self.shape)

    def bounds(self) -> list[tuple[int, int]]:
        """Return (min, max) per dimension; a fixed dimension has min == max."""
        result = []
        for dim in self.shape:
            if isinstance(dim, int):
                result.append((dim, dim))
            else:
                low, high = (int(part) for part in dim.split(".."))
                result.append((low, high))
        return result

    def example_shape(self) -> list[int]:
        """Return the concrete shape used for export and tracing.

        A ranged dimension takes 16 clamped into its range: exporters specialize sizes 0 and
        1, and a small size keeps tracing fast.
        """
        return [min(high, max(low, 16)) if low != high else low for low, high in self.bounds()]


class TensorOutput(SpecModel):
    """One model output, in the order the model returns them."""

    name: str = Field(
        pattern=FEATURE_NAME_PATTERN, description="Output name in ONNX and Core ML."
    )


# --- stages -----------------------------------------------------------------------------


class ExportSettings(SpecModel):
    """PyTorch to ONNX export."""

    opset: int = Field(default=18, strict=True, ge=13, le=23, description="ONNX opset version.")
    exporter: Literal["auto", "dynamo", "torchscript"] = Field(
        default="auto",
        description="auto tries the dynamo-based exporter, then the TorchScript exporter.",
    )


DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")
COMPUTE_UNITS = ("all", "cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine")


class CoreMLSettings(SpecModel):
    """Conversion to a Core ML ML Program."""

    minimum_deployment_target: Literal[DEPLOYMENT_TARGETS] = Field(  # type: ignore[valid-type]
        default="iOS16", description="Oldest OS the package must run on."
    )
    precision: Literal["float16", "float32", "auto"] = Field(
        default="float16",
        description=(
            "Compute precision. auto starts at float16 and keeps in float32 the ops whose "
            "float16 results break the validation tolerances."
        ),
    )
    compute_units: Literal[COMPUTE_UNITS] = Field(  # type: ignore[valid-type]
        default="all", description="Compute units the package asks Core ML for."
    )
    path: Literal["auto", "export", "trace"] = Field(
        default="auto",
        description=(
            "Conversion path: export (torch.export), trace (torch.jit.trace), or auto, which "
            "tries torch.export, then torch.export with decompositions, then jit.trace."
        ),
    )


class RandomSamples(SpecModel):
    """Seeded random validation inputs; ranged dimensions are sampled at min, max and between."""

    count: int = Field(
        default=3, strict=True, ge=1, le=64, description="Number of random input sets."
    )
    seed: int = Field(default=0, strict=True, ge=0, description="Seed of the generator.")


class DeviceCheck(SpecModel):
    """On-device check by the macOS runner pool (cluster mode only)."""

    enabled: bool = Field(default=False, description="Run the check on a macOS runner.")
    required: bool = Field(
        default=True,
        description="When false, a missing runner skips the check instead of failing the run.",
    )
    compute_units: list[Literal[COMPUTE_UNITS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["cpuOnly", "all"],
        min_length=1,
        max_length=4,
        description="Compute units to measure.",
    )
    minimum_macos: Optional[str] = Field(
        default=None, pattern=MACOS_VERSION_PATTERN, description="Lowest macOS version, e.g. 14."
    )
    chip: Optional[str] = Field(
        default=None, pattern=CHIP_PATTERN, description="Chip family label, e.g. m2."
    )
    # Presigned URLs live for the timeout plus 10 minutes, and S3 signatures are valid for
    # at most 7 days, so the timeout stops an hour short of that.
    timeout_seconds: int = Field(
        default=3600,
        ge=60,
        le=601200,
        description=(
            "Seconds from the check's creation until it fails with DeadlineExceeded, waiting"
            " for a runner included."
        ),
    )


class ValidationSettings(SpecModel):
    """Numerical comparison of every output against the PyTorch reference.

    An output passes when all elements satisfy |actual - expected| <= atol + rtol * |expected|,
    its cosine similarity is at least minCosine and its PSNR at least minPsnr.
    """

    atol: float = Field(default=1e-3, ge=0, le=10, description="Absolute tolerance.")
    rtol: float = Field(default=1e-2, ge=0, le=1, description="Relative tolerance.")
    min_cosine: float = Field(
        default=0.999, ge=-1, le=1, description="Minimum cosine similarity per output."
    )
    min_psnr: Optional[float] = Field(
        default=None, ge=0, le=200, description="Minimum PSNR in dB per output (optional)."
    )
    samples: RandomSamples = Field(default_factory=RandomSamples, description="Random inputs.")
    samples_file: Optional[FileSource] = Field(
        default=None,
        description=(
            "Recorded inputs instead of random ones: a .safetensors or .npz file (read without "
            "pickle) whose tensors are named like the inputs, with a leading sample dimension."
        ),
    )
    device: DeviceCheck = Field(default_factory=DeviceCheck, description="On-device check.")


class PublishSettings(SpecModel):
    """Where and under which name the release is published."""

    store: Optional[str] = Field(
        default=None,
        max_length=2048,
        pattern=STORE_PATTERN,
        description=(
            "Release store: s3://bucket/prefix, file:///dir or a local directory. "
            "`modelconv run --store` overrides it."
        ),
    )
    model: str = Field(pattern=MODEL_NAME_PATTERN, description="Model name: the release folder.")
    version: str = Field(pattern=VERSION_PATTERN, description="Release version, immutable once published.")
    channels: list[Annotated[str, Field(pattern=CHANNEL_PATTERN)]] = Field(
        default_factory=list,
        max_length=8,
        description="Channels (e.g. stable, canary) moved to this version after publishing.",
    )

    @field_validator("version")
    @classmethod
    def _safe_version(cls, version: str) -> str:
        if ".." in version:
            raise ValueError("must not contain '..'")
        if version.lower() in RESERVED_VERSIONS:
            raise ValueError(
                f"{version!r} is the name of a file or folder the store keeps next to the "
                "versions. Choose another version."
            )
        return version


# --- cluster-only settings --------------------------------------------------------------

Quantity = Annotated[
    Union[int, Annotated[str, Field(pattern=QUANTITY_PATTERN)]],
    Field(description="A Kubernetes quantity, e.g. 500m, 2, 4Gi."),
]


class Resources(SpecModel):
    """Container resource requests and limits."""

    requests: dict[Literal["cpu", "memory"], Quantity] = Field(default_factory=dict)
    limits: dict[Literal["cpu", "memory"], Quantity] = Field(default_factory=dict)


class StageOverride(SpecModel):
    """Per-stage Job settings."""

    image: Optional[str] = Field(
        default=None,
        max_length=512,
        description="Image for this stage instead of the default stage image; must carry modelconv.",
    )
    resources: Optional[Resources] = Field(default=None, description="Requests and limits.")
    active_deadline_seconds: Optional[int] = Field(default=None, strict=True, ge=10, le=86400)
    backoff_limit: Optional[int] = Field(default=None, strict=True, ge=0, le=10)


class TrainSettings(SpecModel):
    """An optional training Job whose output becomes the source."""

    image: str = Field(min_length=1, max_length=512, description="Training image.")
    command: list[str] = Field(default_factory=list, max_length=64)
    args: list[str] = Field(default_factory=list, max_length=256)
    output: FileSource = Field(description="Where the training Job writes the trained model.")
    output_kind: Literal["exportedProgram", "torchscript", "onnx"] = Field(
        default="exportedProgram", description="Format of the trained model file."
    )
    resources: Optional[Resources] = None
    active_deadline_seconds: Optional[int] = Field(default=None, strict=True, ge=10, le=604800)


class ConversionSpec(SpecModel):
    """The desired conversion: source, signature, stage settings and release."""

    source: Source = Field(description="The model to convert.")
    inputs: list[TensorInput] = Field(min_length=1, max_length=32, description="Model inputs.")
    outputs: list[TensorOutput] = Field(min_length=1, max_length=32, description="Model outputs.")
    export: ExportSettings = Field(default_factory=ExportSettings)
    coreml: CoreMLSettings = Field(default_factory=CoreMLSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    publish: PublishSettings
    train: Optional[TrainSettings] = Field(default=None, description="Optional training Job.")
    resources: Optional[Resources] = Field(default=None, description="Default stage resources.")
    stages: dict[
        Literal["train", "export", "convert", "validate", "device", "publish"], StageOverride
    ] = Field(default_factory=dict, description="Per-stage Job overrides.")

    @model_validator(mode="after")
    def _unique_names(self) -> "ConversionSpec":
        for label, items in (("input", self.inputs), ("output", self.outputs)):
            names = [item.name for item in items]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"{label} names must be unique (repeated: {', '.join(duplicates)})")

        # An ONNX graph defines each value name once, so ONNX Runtime rejects an output named
        # like an input ("Duplicate definition of name").
        input_names = {item.name for item in self.inputs}
        for index, output in enumerate(self.outputs):
            if output.name in input_names:
                renamed = f"{output.name}_out"
                fits = re.fullmatch(FEATURE_NAME_PATTERN, renamed)
                example = f", e.g. to {renamed}" if fits else ""
                raise ValueError(
                    f"outputs[{index}].name {output.name!r} is also the name of an input; names"
                    f" of inputs and outputs must all be distinct, so rename the output{example}"
                )
        return self


class ObjectMeta(BaseModel):
    """The subset of Kubernetes metadata that a local run reads; the rest is kept as is."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=KUBERNETES_NAME_PATTERN)
    namespace: Optional[str] = None


class ModelConversion(SpecModel):
    """A whole ModelConversion document."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    api_version: Literal["modelconv.io/v1alpha1"]
    kind: Literal["ModelConversion"]
    metadata: ObjectMeta
    spec: ConversionSpec
    status: Optional[dict] = None


# --- parsing ----------------------------------------------------------------------------


def _field_path(location: tuple) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            # Pydantic names union branches like "int" or "constrained-str"; skip them.
            continue
        else:
            path += f".{part}" if path else part
    return path


# What an entry of inputs or outputs looks like, for an entry written as a bare name.
FEATURE_EXAMPLES = {
    "TensorInput": (
        "input is a mapping with a name and a shape", "`- {name: x, shape: [1, 3, 224, 224]}`"
    ),
    "TensorOutput": ("output is a mapping with a name", "`- name: y`"),
}
# Names pydantic gives the members of a union of scalar types, such as factory kwargs values.
SCALAR_BRANCHES = {"str", "int", "float", "bool"}


def _first_error(error: ValidationError) -> InvalidSpec:
    details = error.errors(include_url=False)
    loc = details[0]["loc"] if details else ()
    if loc and loc[-1] in SCALAR_BRANCHES and all(
            item["loc"][:-1] == loc[:-1] and item["loc"][-1] in SCALAR_BRANCHES
            for item in details):
        # Every member of a scalar union rejected the value, so report it once.
        return InvalidSpec(_field_path(loc[:-1]), (
            f"{quoted_value(details[0].get('input'))} is invalid: use a string, number or"
            " boolean"))
    # A misspelled field also makes the real one "missing"; the misspelling is the news.
    unknown = [item for item in details if item["type"] == "extra_forbidden"]
    # Union members each report an error, and the most specific one is the deepest. At equal
    # depth a pattern mismatch wins, because its description lists every accepted form, such
    # as "a whole number or a range MIN..MAX", where the integer member reports only
    # "valid integer".
    detail = max(
        unknown or details,
        key=lambda item: (len(item["loc"]), item["type"] == "string_pattern_mismatch"),
    )
    return InvalidSpec(_field_path(detail["loc"]), describe_error(detail))


def quoted_value(value: object, limit: int = 80) -> str:
    """Return `value` quoted for a message: URL credentials redacted, at most `limit` characters.

    A cut value ends in "..." inside its closing quote, so the reader sees where it was cut.
    """
    text = redact_urls(str(value))
    if len(text) > limit:
        text = text[: limit - 3]
        if text.rfind("<") > text.rfind(">"):
            text = text[: text.rfind("<")]  # Never cut a `<redacted>` in half.
        text += "..."
    return repr(text)


def describe_error(detail: dict) -> str:
    """Return the message of one pydantic error detail in words a user can act on."""
    kind = detail["type"]
    value = detail.get("input")
    if kind == "extra_forbidden":
        name = str(detail["loc"][-1]) if detail.get("loc") else ""
        if "_" in name:
            return f"unknown field; field names are camelCase, e.g. {to_camel(name)}"
        return "unknown field; check its spelling against `modelconv schema`"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch":
        allowed = PATTERN_DESCRIPTIONS.get(detail.get("ctx", {}).get("pattern"), "")
        value_text = quoted_value(value)
        return f"{value_text} is invalid: use {allowed}" if allowed else f"{value_text} is invalid"
    if kind == "string_type" and isinstance(value, YAML_SCALARS):
        key = next((part for part in reversed(detail["loc"]) if isinstance(part, str)), "field")
        example = "1.10" if key == "version" else "..."
        return (
            f"must be a string, but YAML read the unquoted value as {_yaml_reading(value)};"
            f' put the value in quotes exactly as you wrote it, e.g. {key}: "{example}"'
        )
    if kind == "int_type" and isinstance(value, bool):
        return (
            f"YAML read the unquoted value as the boolean {str(value).lower()}; give a whole"
            " number"
        )
    if kind == "finite_number" and isinstance(value, float):
        word = "NaN" if value != value else "infinity"
        return f"{word} is not allowed: give a finite number"
    if kind == "model_type" and detail.get("ctx", {}).get("class_name") in FEATURE_EXAMPLES:
        feature, example = FEATURE_EXAMPLES[detail["ctx"]["class_name"]]
        return f"{quoted_value(value)} is invalid: each {feature}, e.g. {example}"
    if detail.get("ctx", {}).get("class_name") == "FileSource":
        path = value if isinstance(value, str) else "PATH"
        return (
            f"{quoted_value(value)} is invalid: give a mapping {{uri: ...}},"
            f" e.g. {{uri: {path}}}"
        )
    return detail["msg"].removeprefix("Value error, ")


def _yaml_reading(value: object) -> str:
    # YAML 1.1 turns unquoted 1.10 into the number 1.1, yes into true and 2026-01-01 into a
    # date, so the text the user wrote cannot be recovered from the parsed value.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"the date {value.isoformat()}"
    return f"the number {value!r}"


def parse_conversion(document: object) -> ModelConversion:
    """Validate a decoded YAML/JSON document; raise `InvalidSpec` naming the field path."""
    if not isinstance(document, dict):
        raise InvalidSpec("", "the file must hold one YAML mapping (a ModelConversion)")
    try:
        # Only the camelCase names of the CRD and `modelconv schema`, so a file that runs
        # locally also applies to a cluster.
        return ModelConversion.model_validate(document, by_alias=True, by_name=False)
    except ValidationError as error:
        raise _first_error(error) from None


def load_conversion(path: str) -> ModelConversion:
    """Read and validate a ModelConversion YAML file; a key repeated in a mapping is invalid."""
    import yaml

    from .spec_yaml import DuplicateKeyError, load_all

    try:
        with open(path, encoding="utf-8") as handle:
            documents = [doc for doc in load_all(handle) if doc is not None]
    except FileNotFoundError:
        raise InvalidSpec("", f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidSpec("", f"cannot read {path}: {error}") from None
    except DuplicateKeyError as error:
        raise InvalidSpec("", (
            f"{path}, line {error.line}: duplicate key {error.key!r}, first set on line"
            f" {error.first_line}; keep one of the two because YAML allows each key once per"
            " mapping"
        )) from None
    except yaml.YAMLError as error:
        raise InvalidSpec("", f"{path} is not valid YAML: {error}") from None
    if len(documents) != 1:
        raise InvalidSpec("", f"{path} must hold exactly one document (found {len(documents)})")
    return parse_conversion(documents[0])


def json_schema() -> dict:
    """Return the JSON Schema of a ModelConversion document (camelCase field names)."""
    return ModelConversion.model_json_schema(by_alias=True)
