"""The GitOps examples: the Argo CD Applications and the kustomize base and overlay."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from api_validation import dry_run_create, install_crd
from chart_rendering import REPO, find, operator_deployment, render_chart
from modelconv.spec import parse_conversion

ARGOCD = REPO / "examples" / "argocd"
KUSTOMIZE = REPO / "examples" / "kustomize"


def applications() -> list[dict]:
    documents = yaml.safe_load_all((ARGOCD / "application.yaml").read_text())
    return [document for document in documents if document]


def kustomize_build(folder) -> list[dict]:
    """Return the documents `kubectl kustomize` builds from `folder`."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed, so kustomize cannot build the overlay")
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def test_argocd_applications_point_at_folders_of_this_repository():
    found = applications()
    assert [app["kind"] for app in found] == ["Application", "Application"]
    for app in found:
        assert app["apiVersion"] == "argoproj.io/v1alpha1"
        assert (REPO / app["spec"]["source"]["path"]).is_dir(), app["spec"]["source"]["path"]
        assert app["spec"]["destination"]["server"] == "https://kubernetes.default.svc"


def test_argocd_chart_values_render(helm_without_cluster):
    chart_app = next(app for app in applications()
                     if app["spec"]["source"]["path"] == "charts/modelconv")
    helm_source = chart_app["spec"]["source"]["helm"]
    documents = render_chart(helm_without_cluster, helm_source["valuesObject"],
                             release=helm_source["releaseName"],
                             namespace=chart_app["spec"]["destination"]["namespace"])
    container = operator_deployment(documents)["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("registry.example.com/modelconv/modelconv-operator:")
    assert "--store=s3://models-production/releases" in container["args"]
    assert find(documents, "Service")


def test_kustomize_base_is_a_valid_conversion():
    base = yaml.safe_load((KUSTOMIZE / "base" / "modelconversion.yaml").read_text())
    conversion = parse_conversion(base)
    assert conversion.spec.publish.version == "1.0.0"
    assert conversion.spec.validation.device.enabled is False


def test_kustomize_overlay_patches_the_conversion():
    (document,) = kustomize_build(KUSTOMIZE / "overlays" / "production")
    conversion = parse_conversion(document)
    assert document["metadata"]["namespace"] == "ml-production"
    assert document["metadata"]["labels"] == {"app.kubernetes.io/part-of": "mobilenet"}
    assert conversion.spec.publish.store == "s3://models-production/releases"
    assert conversion.spec.publish.version == "1.0.1"
    assert conversion.spec.publish.channels == ["stable"]
    assert conversion.spec.validation.device.enabled is True
    assert conversion.spec.validation.device.minimum_macos == "14"
    # Fields the patch leaves alone keep the base's values.
    assert conversion.spec.source.factory.entrypoint == "modelconv.zoo:mobilenet_v3_small"
    assert conversion.spec.validation.atol == 0.001


def test_kustomize_overlay_passes_the_crd_validation(kube_api, kube_client, namespace):
    install_crd(kube_api, yaml.safe_load((REPO / "crds" / "modelconversion.yaml").read_text()))
    (document,) = kustomize_build(KUSTOMIZE / "overlays" / "production")
    document["metadata"]["namespace"] = namespace
    dry_run_create(kube_client, document)
