"""Which chart values reach the run hash, as docs/install.md lists them under "Upgrade".

The operator names each run by a hash that covers its Job settings
(OperatorConfig.job_settings), so a chart value that changes them starts a new run of every
ModelConversion after `helm upgrade`. These tests render the chart with the real helm, parse
the operator's arguments with the operator's own code, and compare the Job settings.
"""

from __future__ import annotations

import pytest

from chart_rendering import operator_deployment

NAMESPACED = {"watch": {"namespaces": ["team-a"]}}


def job_settings(render, values: dict) -> dict:
    from modelconv.cli import build_parser
    from modelconv.cli.cluster_commands import operator_config

    container = operator_deployment(render(values))["spec"]["template"]["spec"]["containers"][0]
    return operator_config(build_parser().parse_args(container["args"])).job_settings()


@pytest.mark.parametrize(("base", "changed"), [
    ({}, {"stages": {"image": {"repository": "registry.test/modelconv-stage"}}}),
    ({}, {"stages": {"image": {"tag": "0.2.0"}}}),
    ({}, {"stages": {"image": {"digest": "sha256:" + "ab" * 32}}}),
    ({}, {"store": {"credentialsSecret": "modelconv-s3"}}),
    ({}, {"store": {"endpoint": "http://127.0.0.1:9000"}}),
    ({}, {"stages": {"env": {"HF_HUB_OFFLINE": "1"}}}),
    ({}, {"stages": {"backoffLimit": 3}}),
    ({}, {"stages": {"activeDeadlineSeconds": 600}}),
    ({}, {"stages": {"trainActiveDeadlineSeconds": 7200}}),
    ({}, NAMESPACED),
    (NAMESPACED, {**NAMESPACED, "stages": {"serviceAccount": {"name": "stage-runner"}}}),
])
def test_value_changes_job_settings(render, base, changed):
    assert job_settings(render, base) != job_settings(render, changed)


@pytest.mark.parametrize(("base", "changed"), [
    ({}, {"store": {"uri": "s3://models/releases"}}),
    ({}, {"store": {"region": "eu-west-1"}}),
    ({}, {"stages": {"ttlSecondsAfterFinished": 60}}),
    ({}, {"stages": {"imagePullGraceSeconds": 300}}),
    ({}, {"recheckIntervalSeconds": 60, "devicePollIntervalSeconds": 10}),
    ({}, {"runners": {"namespace": "modelconv-runners",
                      "presignEndpoint": "http://127.0.0.1:9000"}}),
    # The operator image is no Job setting. It changes the run hash, and every cache key,
    # only when the image contains another modelconv version, which rendering cannot show.
    ({}, {"image": {"tag": "0.2.0"}}),
    ({}, {"logging": {"level": "debug"}, "replicaCount": 2}),
    ({}, {"stages": {"serviceAccount": {"name": "stage-runner"}}}),
    (NAMESPACED, {"watch": {"namespaces": ["team-a", "team-b"]}}),
])
def test_value_keeps_job_settings(render, base, changed):
    assert job_settings(render, base) == job_settings(render, changed)
