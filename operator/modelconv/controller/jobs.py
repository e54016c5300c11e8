"""Manifests of the objects a run creates: one immutable ConfigMap and one Job per stage.

All functions here are pure: they take the conversion, the planned stage and the operator
settings and return manifests as dicts. Names are deterministic (conversion name, stage,
a hash of the conversion's uid and the run hash), so an operator that restarts finds the
objects it made instead of creating twins.

The Job contract with `modelconv stage` is docs/stage-contract.md: the run file at
/etc/modelconv/run.json, exit code 0 (done), 2 (permanent failure), anything else
(transient, retried within backoffLimit), a JSON summary in the termination message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Optional

from ..plan import CACHED_STAGES, PlannedStage, RunPlan
from ..spec import API_VERSION, KIND, ConversionSpec, Resources
from .config import STAGE_USER_ID, OperatorConfig

RUN_FILE_API_VERSION = "modelconv.io/run/v1"
RUN_FILE_DIR = "/etc/modelconv"
RUN_FILE_KEY = "run.json"
PERMANENT_FAILURE_EXIT_CODE = 2
STAGE_CONTAINER = "stage"
TRAIN_CONTAINER = "train"
MAX_NAME_LENGTH = 63

# Labels on every object the operator creates. Selection uses the conversion's uid, because
# a label value is at most 63 characters long and a resource name may be longer.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "modelconv-operator"
LABEL_CONVERSION = "modelconv.io/conversion"
LABEL_CONVERSION_UID = "modelconv.io/conversion-uid"
LABEL_STAGE = "modelconv.io/stage"
LABEL_RUN = "modelconv.io/run"
ANNOTATION_STAGE_KEY = "modelconv.io/stage-key"
RUN_LABEL_LENGTH = 16

# Environment variables of the training container: where to write the trained model.
ENV_TRAIN_OUTPUT = "MODELCONV_TRAIN_OUTPUT"
ENV_TRAIN_OUTPUT_KIND = "MODELCONV_TRAIN_OUTPUT_KIND"
ENV_S3_ENDPOINT = "MODELCONV_S3_ENDPOINT"
ENV_TERMINATION_LOG = "MODELCONV_TERMINATION_LOG"
# Variables the operator sets on stage and training containers, so --stage-env must not.
OPERATOR_STAGE_ENV = frozenset({ENV_S3_ENDPOINT, "AWS_ENDPOINT_URL_S3", ENV_TERMINATION_LOG,
                                ENV_TRAIN_OUTPUT, ENV_TRAIN_OUTPUT_KIND})
TERMINATION_MESSAGE_PATH = "/dev/termination-log"


@dataclasses.dataclass(frozen=True)
class ConversionRef:
    """The identity of a ModelConversion, as owner references and labels need it."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Any) -> "ConversionRef":
        metadata = body["metadata"]
        return cls(metadata["name"], metadata["namespace"], metadata["uid"])

    def owner_reference(self) -> dict:
        # blockOwnerDeletion makes a foreground deletion of the conversion wait for its Jobs.
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def object_name(conversion: ConversionRef, run_hash: str, suffix: str) -> str:
    """Return `<conversion>-<suffix>-<hash>`, at most 63 characters, the same on every call.

    The hash covers the conversion's uid. So a conversion deleted and created again under
    the same name never adopts an object of its predecessor that garbage collection has not
    removed yet. A long conversion name is cut to fit.
    """
    digest = hashlib.sha256(f"{conversion.uid}/{run_hash}/{suffix}".encode()).hexdigest()[:10]
    room = MAX_NAME_LENGTH - len(suffix) - len(digest) - 2
    prefix = conversion.name[:room].rstrip("-.")
    return f"{prefix}-{suffix}-{digest}"


def job_name(conversion: ConversionRef, run_hash: str, stage: str) -> str:
    return object_name(conversion, run_hash, stage)


def run_config_map_name(conversion: ConversionRef, run_hash: str) -> str:
    return object_name(conversion, run_hash, "run")


def object_labels(conversion: ConversionRef, run_hash: str, stage: Optional[str] = None) -> dict:
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_CONVERSION: conversion.name[:MAX_NAME_LENGTH].rstrip("-._"),
        LABEL_CONVERSION_UID: conversion.uid,
        LABEL_RUN: run_hash[:RUN_LABEL_LENGTH],
    }
    if stage is not None:
        labels[LABEL_STAGE] = stage
    return labels


# Stages with a result.json in the store: the cached stages, and device, whose result the
# controller writes from its CoreMLCheck for the publish stage to read.
RUN_FILE_STAGES = (*CACHED_STAGES, "device")


def run_document(body: Any, plan: RunPlan, store: str,
                 source: Optional[dict] = None) -> dict:
    """Return the run file of docs/stage-contract.md for `plan`.

    `stages` lists the stages with a result in the store (export, convert, validate, device,
    publish) with their keys. train runs the user's own command and has no cache folder.
    """
    document = {
        "apiVersion": RUN_FILE_API_VERSION,
        "conversion": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": body["metadata"]["name"],
                         "namespace": body["metadata"]["namespace"]},
            "spec": body["spec"],
        },
        "store": store,
        "stages": {stage.name: {"key": stage.key} for stage in plan.stages
                   if stage.name in RUN_FILE_STAGES and stage.key is not None},
    }
    if source is not None:
        document["source"] = source
    return document


def run_config_map(conversion: ConversionRef, plan: RunPlan, document: dict) -> dict:
    """Return the immutable ConfigMap that carries the run file to every stage Job."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": run_config_map_name(conversion, plan.run_hash),
            "namespace": conversion.namespace,
            "labels": object_labels(conversion, plan.run_hash),
            "ownerReferences": [conversion.owner_reference()],
        },
        "immutable": True,
        "data": {RUN_FILE_KEY: json.dumps(document, sort_keys=True, indent=1)},
    }


def container_resources(spec: ConversionSpec, stage: str) -> dict:
    """Return the container resources of `stage`: its override, else spec.resources."""
    override = spec.stages.get(stage)
    chosen: Optional[Resources] = None
    if stage == "train" and spec.train is not None and spec.train.resources is not None:
        chosen = spec.train.resources
    if override is not None and override.resources is not None:
        chosen = override.resources
    if chosen is None:
        chosen = spec.resources
    if chosen is None:
        return {}
    resources = {}
    for kind in ("requests", "limits"):
        values = getattr(chosen, kind)
        if values:
            resources[kind] = {name: str(value) for name, value in values.items()}
    return resources


def _container_security_context() -> dict:
    # The restricted Pod Security Standard, plus a read-only root filesystem.
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _store_environment(config: OperatorConfig) -> tuple[list, list]:
    """Return (env, envFrom) that give a container the store's endpoint and credentials."""
    env = [{"name": name, "value": value} for name, value in config.stage_env]
    if config.s3_endpoint:
        # The store reads MODELCONV_S3_ENDPOINT; boto3 clients created elsewhere read the
        # standard AWS_ENDPOINT_URL_S3 (botocore's service-specific endpoint variable).
        env += [{"name": ENV_S3_ENDPOINT, "value": config.s3_endpoint},
                {"name": "AWS_ENDPOINT_URL_S3", "value": config.s3_endpoint}]
    env_from = []
    if config.store_secret:
        env_from.append({"secretRef": {"name": config.store_secret}})
    return env, env_from


def _pod_failure_policy(container: str) -> dict:
    return {"rules": [
        # Exit code 2 is a permanent failure (bad input, tolerance exceeded): no retry.
        {"action": "FailJob", "onExitCodes": {
            "containerName": container, "operator": "In",
            "values": [PERMANENT_FAILURE_EXIT_CODE]}},
        # A pod evicted or preempted did not fail on its own; it does not count as a retry.
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]}


def _job(conversion: ConversionRef, plan: RunPlan, stage: PlannedStage, pod_spec: dict,
         *, backoff_limit: int, deadline: int, config: OperatorConfig) -> dict:
    labels = object_labels(conversion, plan.run_hash, stage.name)
    annotations = {ANNOTATION_STAGE_KEY: stage.key} if stage.key else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(conversion, plan.run_hash, stage.name),
            "namespace": conversion.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [conversion.owner_reference()],
        },
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
            "podFailurePolicy": _pod_failure_policy(pod_spec["containers"][0]["name"]),
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def _pod_spec(container: dict, volumes: list, config: OperatorConfig) -> dict:
    spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": STAGE_USER_ID,
            "runAsGroup": STAGE_USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        # The root filesystem is read-only; /tmp is the stage's work space.
        "volumes": volumes + [{"name": "tmp", "emptyDir": {}}],
    }
    if config.stage_service_account:
        spec["serviceAccountName"] = config.stage_service_account
    return spec


def stage_job(conversion: ConversionRef, plan: RunPlan, stage: PlannedStage,
              spec: ConversionSpec, config: OperatorConfig) -> dict:
    """Return the Job that runs `modelconv stage NAME --run /etc/modelconv/run.json`."""
    env, env_from = _store_environment(config)
    container = {
        "name": STAGE_CONTAINER,
        "image": stage.image or config.stage_image,
        "command": list(config.stage_command),
        "args": ["stage", stage.name, "--run", f"{RUN_FILE_DIR}/{RUN_FILE_KEY}"],
        # The stage writes its JSON summary where this variable points (the kubelet's
        # default terminationMessagePath), see docs/stage-contract.md.
        "env": env + [{"name": ENV_TERMINATION_LOG, "value": TERMINATION_MESSAGE_PATH}],
        "envFrom": env_from,
        "resources": container_resources(spec, stage.name),
        "securityContext": _container_security_context(),
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "run", "mountPath": RUN_FILE_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    config_map = run_config_map_name(conversion, plan.run_hash)
    volumes = [{"name": "run", "configMap": {"name": config_map}}]
    override = spec.stages.get(stage.name)
    return _job(
        conversion, plan, stage, _pod_spec(container, volumes, config),
        backoff_limit=_pick(override and override.backoff_limit, config.backoff_limit),
        deadline=_pick(override and override.active_deadline_seconds,
                       config.active_deadline_seconds),
        config=config,
    )


def train_job(conversion: ConversionRef, plan: RunPlan, stage: PlannedStage,
              spec: ConversionSpec, config: OperatorConfig) -> dict:
    """Return the Job that runs the user's training image (spec.train)."""
    train = spec.train
    env, env_from = _store_environment(config)
    env += [
        {"name": ENV_TRAIN_OUTPUT, "value": train.output.uri},
        {"name": ENV_TRAIN_OUTPUT_KIND, "value": train.output_kind},
    ]
    container = {
        "name": TRAIN_CONTAINER,
        "image": stage.image or train.image,
        "env": env,
        "envFrom": env_from,
        "resources": container_resources(spec, "train"),
        "securityContext": _container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if train.command:
        container["command"] = list(train.command)
    if train.args:
        container["args"] = list(train.args)
    override = spec.stages.get("train")
    deadline = _pick(override and override.active_deadline_seconds,
                     _pick(train.active_deadline_seconds, config.train_deadline_seconds))
    return _job(
        conversion, plan, stage, _pod_spec(container, [], config),
        backoff_limit=_pick(override and override.backoff_limit, config.backoff_limit),
        deadline=deadline, config=config,
    )


def trained_source(spec: ConversionSpec) -> dict:
    """Return the run file's `source`: the training output in place of spec.source."""
    return {"uri": spec.train.output.uri, "kind": spec.train.output_kind}


def _pick(value: Optional[int], default: int) -> int:
    return default if value is None else value
