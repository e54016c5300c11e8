"""Settings of the operator process, set by `modelconv operator` flags (see docs/operator.md)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from .. import __version__

DEFAULT_STAGE_IMAGE = f"modelconv/modelconv-stage:{__version__}"
# The stage image runs as this user (images/stage/Dockerfile); Jobs require a non-root user.
STAGE_USER_ID = 65532


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """Settings of the reconciliation: stage Jobs, store, timing and leader election."""

    # Image of the export, convert, validate and publish Jobs; it must carry modelconv.
    stage_image: str = DEFAULT_STAGE_IMAGE
    # Command of the stage containers; `stage NAME --run FILE` follows as arguments.
    stage_command: tuple[str, ...] = ("modelconv",)
    # Store for the stage cache and releases when spec.publish.store is not set.
    store: Optional[str] = None
    # Secret (in each conversion's namespace) whose keys become the stage containers'
    # environment, e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    store_secret: Optional[str] = None
    # S3-compatible endpoint, passed to stages as MODELCONV_S3_ENDPOINT.
    s3_endpoint: Optional[str] = None
    # Endpoint in the presigned URLs of CoreMLChecks, when runners reach the store elsewhere.
    presign_endpoint: Optional[str] = None
    # Extra environment variables of every stage container (no secrets: they are visible).
    stage_env: tuple[tuple[str, str], ...] = ()
    # ServiceAccount of the stage and training pods, in each conversion's namespace; None
    # leaves the namespace's default. The pods mount no token either way.
    stage_service_account: Optional[str] = None
    # Namespaces to watch; empty means all namespaces.
    namespaces: tuple[str, ...] = ()
    # Job defaults, each overridable per stage in spec.stages.
    backoff_limit: int = 2
    active_deadline_seconds: int = 3600
    train_deadline_seconds: int = 86400
    ttl_seconds_after_finished: int = 3600
    # Seconds between periodic re-checks of every conversion, besides Job and Pod events.
    recheck_interval: float = 30.0
    # Seconds between reads of a running device check's CoreMLCheck.
    device_poll_interval: float = 5.0
    # Seconds a pod may keep failing to pull its image before the stage fails.
    image_pull_grace_seconds: float = 120.0
    # Leader election.
    lease_name: str = "modelconv-operator"
    lease_namespace: str = "default"
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0
    # Namespace of the macOS runner pool: the device stage creates CoreMLChecks there.
    pool_namespace: str = "default"

    def job_settings(self) -> dict:
        """Return the settings that shape every Job; they are part of the run hash."""
        settings = {
            "stageImage": self.stage_image,
            "stageCommand": list(self.stage_command),
            "storeSecret": self.store_secret,
            "s3Endpoint": self.s3_endpoint,
            "stageEnv": sorted(self.stage_env),
            "backoffLimit": self.backoff_limit,
            "activeDeadlineSeconds": self.active_deadline_seconds,
            "trainDeadlineSeconds": self.train_deadline_seconds,
        }
        # Only when set, so the runs of operators without it keep their hashes.
        if self.stage_service_account:
            settings["stageServiceAccount"] = self.stage_service_account
        return settings
