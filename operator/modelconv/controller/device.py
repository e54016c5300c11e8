"""The device stage: the on-device Core ML check by the macOS runner pool.

This is the seam where the controller will create a `CoreMLCheck` for a macOS runner and
read its result. Until the runner pool exists no runner can take a check, so:
- spec.validation.device.required=false: the stage is skipped (DeviceVerified=False,
  reason Skipped) and the run goes on to publish;
- spec.validation.device.required=true: the stage fails with NoRunnerAvailable.
"""

from __future__ import annotations

from ..spec import ConversionSpec
from . import status as st
from .observe import JobOutcome


def device_outcome(spec: ConversionSpec) -> JobOutcome:
    """Return the outcome of the device stage for `spec`."""
    # Not yet: create a CoreMLCheck owned by the conversion and follow its status; that needs
    # the runner pool (`modelconv agent`), which does not exist yet.
    if not spec.validation.device.required:
        return JobOutcome(st.SKIPPED, st.REASON_SKIPPED, (
            "no macOS runner pool is available yet, so the on-device check was skipped; "
            "spec.validation.device.required is false, so the run goes on without it"))
    return JobOutcome(st.FAILED, st.REASON_NO_RUNNER, (
        "no macOS runner can take the on-device check (the runner pool is not available); "
        "set spec.validation.device.required: false to publish without it, or "
        "spec.validation.device.enabled: false to turn the check off"))
