"""NOTES.txt, the text that `helm install` prints, rendered by the real helm."""

from __future__ import annotations

import json

from chart_rendering import CHART


def install_notes(helm, values: dict | None = None) -> str:
    """Return the NOTES that `helm install --dry-run=client` prints for `values`."""
    args = ["install", "modelconv", str(CHART), "--namespace", "modelconv-system",
            "--dry-run=client"]
    for key, value in (values or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    output = helm.run(*args).stdout
    return output[output.index("NOTES:"):]


def test_notes_name_stage_account_when_namespaced(helm_without_cluster):
    notes = install_notes(helm_without_cluster, {"watch": {"namespaces": ["team-a", "team-b"]}})
    assert 'Stage and training pods run as the ServiceAccount "modelconv-stage"' in notes
    assert "in each watched namespace (--stage-service-account)" in notes
    assert "default ServiceAccount" not in notes
    assert "mount no ServiceAccount token" in notes


def test_notes_name_default_account_for_all_namespaces(helm_without_cluster):
    notes = install_notes(helm_without_cluster)
    assert "run as the default ServiceAccount of their namespace" in notes
    assert "stages.serviceAccount has no effect" in notes
    assert '"modelconv-stage"' not in notes
    assert "mount no ServiceAccount token" in notes


def test_notes_ask_for_secret_in_release_namespace(helm_without_cluster):
    notes = install_notes(helm_without_cluster, {"store": {"credentialsSecret": "modelconv-s3"}})
    assert 'The operator and the stage Jobs read S3 credentials from the Secret "modelconv-s3"' \
        in notes
    assert 'It must exist in namespace "modelconv-system"' in notes
    assert "CreateContainerConfigError" in notes
    assert "in each namespace that holds ModelConversions" in notes


def test_notes_omit_secret_without_one(helm_without_cluster):
    notes = install_notes(helm_without_cluster)
    assert "Secret" not in notes
