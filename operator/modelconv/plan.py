"""Run planning for cluster mode: which stages a ModelConversion needs and their cache keys.

A run is planned once per generation of the resource. Each stage gets a cache key:

    key = sha256(stage name, the stage's own settings, the key of the stage before it,
                 the versions of the tools the stage runs)

so two stages with the same key produce the same artifacts, and a key whose `result.json`
already says "succeeded" in the store is a cache hit: the stage is not run again. Chaining
each key to the previous stage's key makes every key cover all of its inputs. The run hash
covers the whole spec and the Job settings, and names the run's Jobs and ConfigMap.

Everything here is pure (no Kubernetes, no store, no torch), so the operator imports it
without the ML stack and unit tests run it directly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, Optional

from . import __version__
from .spec import ConversionSpec

# Stages in pipeline order. `train` runs only when spec.train is set and `device` only when
# spec.validation.device.enabled is true; the other four always run.
STAGE_ORDER = ("train", "export", "convert", "validate", "device", "publish")
# Stages that run `modelconv stage NAME` in a Job and keep their results in the store cache.
CACHED_STAGES = ("export", "convert", "validate", "publish")

# Versions of the ML tools in the stage image, as pinned in requirements.lock. A test
# compares this table with the lock file, so a version bump there fails until it is copied
# here; the operator never imports the tools themselves to learn their versions.
TOOL_VERSIONS = {
    "coremltools": "9.0",
    "numpy": "2.3.5",
    "onnx": "1.23.2",
    "onnx2torch": "1.5.15",
    "onnxruntime": "1.32.0",
    "onnxscript": "0.7.2",
    "safetensors": "0.8.0",
    "torch": "2.13.0",
    "torchvision": "0.28.0",
}

# The tools whose versions can change each stage's output.
STAGE_TOOLS = {
    "train": (),
    "export": ("torch", "torchvision", "onnx", "onnxscript", "onnx2torch", "safetensors", "numpy"),
    "convert": ("torch", "torchvision", "coremltools", "onnx2torch", "safetensors", "numpy"),
    "validate": ("torch", "onnx", "onnxruntime", "coremltools", "numpy"),
    "device": ("coremltools",),
    "publish": (),
}

# Version of the format of the key material; bump it to invalidate every cached result.
KEY_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class PlannedStage:
    """One stage of a run.

    `key` is None for stages after `train` until the training Job has succeeded, because
    their keys depend on that run. `image` is the per-stage image override, if any.
    """

    name: str
    key: Optional[str]
    image: Optional[str] = None

    @property
    def runs_as_job(self) -> bool:
        """Whether the controller runs this stage as a Job (the device stage is not one)."""
        return self.name != "device"


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """The ordered stages of one run and the hash that names the run's objects."""

    run_hash: str
    stages: tuple[PlannedStage, ...]

    def stage(self, name: str) -> Optional[PlannedStage]:
        return next((stage for stage in self.stages if stage.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    def cache_keys(self) -> dict[str, str]:
        """Return the keys of the cached stages whose keys are known, in pipeline order."""
        return {
            stage.name: stage.key
            for stage in self.stages
            if stage.name in CACHED_STAGES and stage.key is not None
        }


def canonical_json(value: Any) -> str:
    """Serialize `value` with sorted keys and no whitespace: equal values, equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sha256_hex(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def stage_key(stage: str, config: Any, previous_key: Optional[str]) -> str:
    """Return the cache key of `stage` given its settings and the previous stage's key."""
    return sha256_hex({
        "format": KEY_FORMAT,
        "stage": stage,
        "config": config,
        "previous": previous_key,
        "tools": {tool: TOOL_VERSIONS[tool] for tool in STAGE_TOOLS[stage]},
        "modelconv": __version__,
    })


def planned_stage_names(spec: ConversionSpec) -> tuple[str, ...]:
    """Return the stages the spec asks for, in pipeline order."""
    names = []
    for name in STAGE_ORDER:
        if name == "train" and spec.train is None:
            continue
        if name == "device" and not spec.validation.device.enabled:
            continue
        names.append(name)
    return tuple(names)


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True) if model is not None else None


def stage_config(spec: ConversionSpec, stage: str, *, source_version: str = "",
                 trained_run: Optional[str] = None) -> Any:
    """Return the settings that can change `stage`'s output, as JSON-compatible values.

    Job settings (resources, deadlines, retries) are left out: they change how a stage runs,
    not what it produces. An image override is kept, because another image may hold other
    tool versions. `source_version` identifies the bytes behind spec.source when its URI
    alone does not (an S3 ETag); `trained_run` identifies the training run whose output
    replaces spec.source.
    """
    signature = {"inputs": [_dump(item) for item in spec.inputs],
                 "outputs": [_dump(item) for item in spec.outputs]}
    override = spec.stages.get(stage)
    config: dict[str, Any] = {"image": override.image if override else None}
    if stage == "train":
        config["train"] = _dump(spec.train.model_copy(
            update={"resources": None, "active_deadline_seconds": None}))
    elif stage == "export":
        if spec.train is not None:
            config["source"] = {"trainedRun": trained_run}
        else:
            config["source"] = {"spec": _dump(spec.source), "version": source_version}
        config.update(signature, export=_dump(spec.export))
    elif stage == "convert":
        config.update(signature, coreml=_dump(spec.coreml))
    elif stage == "validate":
        validation = spec.validation.model_copy(update={"device": None})
        config.update(signature, validation=_dump(validation))
    elif stage == "device":
        # The timeout decides how long to wait for a runner, not what the check measures.
        device = spec.validation.device
        config["device"] = device.model_dump(mode="json", by_alias=True,
                                             exclude={"timeout_seconds"})
    elif stage == "publish":
        config["publish"] = _dump(spec.publish.model_copy(update={"store": None}))
    else:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGE_ORDER)}")
    return config


def plan_run(spec: ConversionSpec, *, job_settings: Any = None, source_version: str = "",
             trained_run: Optional[str] = None) -> RunPlan:
    """Plan the stages of `spec` with their cache keys.

    `job_settings` is whatever else decides how the Jobs look (the operator's stage image,
    for instance); it goes into the run hash only. Stages after `train` get a key once
    `trained_run` (the uid of the succeeded training Job) is known.
    """
    stages = []
    previous: Optional[str] = None
    for name in planned_stage_names(spec):
        waits_for_training = spec.train is not None and name != "train" and trained_run is None
        if waits_for_training:
            key = None
        else:
            config = stage_config(spec, name, source_version=source_version,
                                  trained_run=trained_run)
            key = stage_key(name, config, previous)
        override = spec.stages.get(name)
        stages.append(PlannedStage(name, key, override.image if override else None))
        previous = key
    run_hash = sha256_hex({
        "format": KEY_FORMAT,
        "spec": _dump(spec),
        "sourceVersion": source_version,
        "jobs": job_settings,
        "tools": TOOL_VERSIONS,
        "modelconv": __version__,
    })
    return RunPlan(run_hash, tuple(stages))


def read_tool_versions(lock_text: str) -> dict[str, str]:
    """Return the pinned versions of the tools in TOOL_VERSIONS from a requirements.lock text."""
    pins = {}
    for line in lock_text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return {tool: pins[tool] for tool in TOOL_VERSIONS if tool in pins}
