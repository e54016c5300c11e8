"""Typed models of the CoreMLCheck resource (`modelconv.io/v1alpha1`, namespaced).

A CoreMLCheck is one unit of on-device work. The controller creates it with a spec that a
Mac can act on without cluster or S3 credentials: the package, the inputs and the expected
outputs are presigned GET URLs, the report and the compiled model are presigned PUT URLs.
A runner claims the check, runs it and writes the outcome into the status.

Presigned URLs are credentials. They appear in the spec only: `url` fields are left out of
`repr()`, and logs, status, reports and events name the object `key` instead.

The CRD in `crds/coremlcheck.yaml` is generated from these models (`modelconv.runner.crd`).
Fields read from the API server ignore unknown keys, so an older runner keeps working when
a newer controller adds a field.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator
from pydantic.alias_generators import to_camel

from ..spec import API_GROUP, COMPUTE_UNITS

VERSION = "v1alpha1"
API_VERSION = f"{API_GROUP}/{VERSION}"
KIND = "CoreMLCheck"
PLURAL = "coremlchecks"
SINGULAR = "coremlcheck"
SHORT_NAMES = ("cmc",)

# Check states. A check without status is Pending.
PENDING = "Pending"
CLAIMED = "Claimed"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
STATES = (PENDING, CLAIMED, SUCCEEDED, FAILED)
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED})

# Backends a runner can have. Only `coreml` runs on Apple hardware.
COREML = "coreml"
MIL_REFERENCE = "mil-reference"
BACKENDS = (COREML, MIL_REFERENCE)

# Reasons written into status.reason and per-result reasons (CamelCase, as in conditions).
NO_RUNNER_AVAILABLE = "NoRunnerAvailable"
RUNNER_LOST = "RunnerLost"
DEADLINE_EXCEEDED = "DeadlineExceeded"
URL_EXPIRED = "UrlExpired"
DOWNLOAD_FAILED = "DownloadFailed"
INVALID_CHECK_DATA = "InvalidCheckData"
PACKAGE_LOAD_FAILED = "PackageLoadFailed"
PREDICTION_FAILED = "PredictionFailed"
TOLERANCE_EXCEEDED = "ToleranceExceeded"
UPLOAD_FAILED = "UploadFailed"
RUNNER_ERROR = "RunnerError"
CHECKS_PASSED = "ChecksPassed"

# Sizes of the fields that hold free text or URLs, so a status stays well below etcd's limit.
MAX_MESSAGE = 2048
MAX_URL = 8192


def timestamp(moment: datetime.datetime) -> str:
    """Return RFC 3339 in UTC with microseconds, the form every time field is stored in."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# A time field: read from any RFC 3339 form, written as `timestamp()` returns it.
Timestamp = Annotated[datetime.datetime, PlainSerializer(timestamp, when_used="json")]


class CheckModel(BaseModel):
    """Base of the CoreMLCheck models: camelCase aliases, unknown fields ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def document(self) -> dict:
        """Return the JSON-ready form with camelCase keys and without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- spec -------------------------------------------------------------------------------


class PresignedObject(CheckModel):
    """An object in the store reached through a presigned URL."""

    url: str = Field(
        repr=False,
        min_length=1,
        max_length=MAX_URL,
        pattern=r"^https?://",
        description="Presigned URL (a credential: never copy it into status, logs or events).",
    )
    key: str = Field(
        min_length=1, max_length=1024, description="Object key, the name used in logs and status."
    )
    expires_at: Timestamp = Field(description="Time after which the URL is rejected.")
    sha256: Optional[str] = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Expected SHA-256 of the downloaded bytes (GET objects only).",
    )


class Tolerances(CheckModel):
    """Pass criteria per output: |actual - expected| <= atol + rtol * |expected|, cosine."""

    atol: float = Field(default=1e-3, ge=0, le=10, description="Absolute tolerance.")
    rtol: float = Field(default=1e-2, ge=0, le=1, description="Relative tolerance.")
    min_cosine: float = Field(
        default=0.999, ge=-1, le=1, description="Minimum cosine similarity per output."
    )


class Requirements(CheckModel):
    """Runner properties needed to claim the check; an absent field accepts any runner."""

    minimum_macos: Optional[str] = Field(
        default=None, pattern=r"^[0-9]+(\.[0-9]+)?$", description="Lowest macOS version, e.g. 14."
    )
    chip: Optional[str] = Field(
        default=None, pattern=r"^[a-z0-9]{1,16}$", description="Chip family label, e.g. m2."
    )
    backend: Optional[Literal[BACKENDS]] = Field(  # type: ignore[valid-type]
        default=None, description="Backend the runner must use: coreml or mil-reference."
    )


class CheckSpec(CheckModel):
    """The work: where the package and data are, how to judge and measure, and by when."""

    package: PresignedObject = Field(description="GET: the zipped .mlpackage.")
    inputs: PresignedObject = Field(
        description=(
            "GET: the validate stage's samples.safetensors, or an .npz with one array per "
            "`<sample>/<input name>`."
        )
    )
    expected_outputs: PresignedObject = Field(
        description=(
            "GET: the reference outputs: the same samples.safetensors (may be the same key as "
            "inputs), or an .npz with one array per `<sample>/<output name>`."
        )
    )
    report_upload: PresignedObject = Field(description="PUT: where the JSON report goes.")
    compiled_model_upload: Optional[PresignedObject] = Field(
        default=None, description="PUT: where a coreml runner uploads the zipped .mlmodelc."
    )
    tolerances: Tolerances = Field(default_factory=Tolerances)
    compute_units: list[Literal[COMPUTE_UNITS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["cpuOnly", "all"],
        min_length=1,
        max_length=4,
        description="Compute units to measure: cpuOnly, cpuAndGPU, cpuAndNeuralEngine, all.",
    )
    requirements: Requirements = Field(default_factory=Requirements)
    deadline: Timestamp = Field(
        description="Time by which the check must finish; later it fails with DeadlineExceeded."
    )
    warmup_runs: int = Field(default=3, ge=0, le=100, description="Predictions before timing.")
    measured_runs: int = Field(
        default=20, ge=1, le=10000, description="Timed predictions behind the latency percentiles."
    )
    heartbeat_seconds: int = Field(
        default=10,
        ge=1,
        le=300,
        description="Interval of the runner's heartbeat; three missed beats requeue the check.",
    )
    max_attempts: int = Field(
        default=3, ge=1, le=10, description="Claims allowed before a lost runner fails the check."
    )

    @field_validator("compute_units")
    @classmethod
    def _unique_units(cls, units: list[str]) -> list[str]:
        if len(set(units)) != len(units):
            raise ValueError(f"compute units must be unique (got {', '.join(units)})")
        return units


# --- status -----------------------------------------------------------------------------


class UnitResult(CheckModel):
    """The outcome on one compute unit; worst values over all samples and outputs."""

    backend: str = Field(description="Backend that produced the result: coreml or mil-reference.")
    compute_unit: Optional[str] = Field(
        default=None,
        description="Compute unit measured; absent for mil-reference, which has none.",
    )
    passed: bool = Field(description="Every output of every sample met the tolerances.")
    max_abs_error: Optional[float] = Field(default=None, description="Largest |actual - expected|.")
    cosine: Optional[float] = Field(default=None, description="Lowest cosine similarity.")
    latency_p50_ms: Optional[float] = Field(default=None, description="Median prediction time.")
    latency_p90_ms: Optional[float] = Field(default=None, description="90th percentile.")
    load_ms: Optional[float] = Field(default=None, description="Time to load the model.")
    compile_ms: Optional[float] = Field(
        default=None, description="Time to compile the package to .mlmodelc (coreml only)."
    )
    reason: Optional[str] = Field(default=None, max_length=64, description="Why it failed.")
    message: Optional[str] = Field(default=None, max_length=MAX_MESSAGE, description="Details.")


class CheckStatus(CheckModel):
    """The observed state of a check, written by runners and the controller."""

    state: Literal[STATES] = Field(default=PENDING, description="Pending, Claimed, Succeeded, Failed.")  # type: ignore[valid-type]
    runner: Optional[str] = Field(default=None, description="Runner that holds or held the claim.")
    claim_id: Optional[str] = Field(
        default=None,
        description="Token of the current claim; a requeue clears it, so a late write is rejected.",
    )
    claim_time: Optional[Timestamp] = None
    heartbeat_time: Optional[Timestamp] = None
    completion_time: Optional[Timestamp] = None
    attempts: int = Field(default=0, ge=0, description="Claims made so far.")
    results: list[UnitResult] = Field(default_factory=list, max_length=8)
    reason: Optional[str] = Field(default=None, max_length=64, description="CamelCase reason.")
    message: Optional[str] = Field(default=None, max_length=MAX_MESSAGE)
    report: Optional[str] = Field(default=None, description="Object key of the uploaded report.")
    compiled_model: Optional[str] = Field(
        default=None, description="Object key of the uploaded .mlmodelc zip."
    )
    runner_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels of the runner that produced the results."
    )


class CoreMLCheck(CheckModel):
    """A whole CoreMLCheck object as read from the API server."""

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: dict = Field(default_factory=dict)
    spec: CheckSpec
    status: CheckStatus = Field(default_factory=CheckStatus)


def utc_now() -> datetime.datetime:
    """Return the current time in UTC, timezone-aware."""
    return datetime.datetime.now(datetime.timezone.utc)


def status_of(obj: dict) -> CheckStatus:
    """Return the parsed status of a raw CoreMLCheck dict (Pending when it has none)."""
    return CheckStatus.model_validate(obj.get("status") or {})
