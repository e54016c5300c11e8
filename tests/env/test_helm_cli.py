"""The real helm binary lints, renders and installs a chart into the local cluster."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from testenv.api import KubeAPI
from testenv.binaries import pinned_versions
from testenv.helm import Helm

CHART = Path(__file__).parent / "fixtures" / "chart"


def test_helm_is_pinned_version(helm_without_cluster: Helm) -> None:
    output = helm_without_cluster.run("version", "--short").stdout

    assert output.startswith(pinned_versions()["HELM_VERSION"])


def test_helm_lint_and_template_render_chart(helm_without_cluster: Helm) -> None:
    lint = helm_without_cluster.run("lint", str(CHART))
    rendered = helm_without_cluster.run("template", "demo", str(CHART),
                                        "--set", "greeting=rendered").stdout
    [configmap] = [doc for doc in yaml.safe_load_all(rendered) if doc]

    assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout
    assert configmap["metadata"]["name"] == "demo-greeting"
    assert configmap["data"] == {"greeting": "rendered"}


def test_helm_template_rejects_values_outside_schema(helm_without_cluster: Helm) -> None:
    result = helm_without_cluster.run("template", "demo", str(CHART), "--set", "colour=red",
                                      check=False)

    assert result.returncode != 0
    assert "colour" in result.stderr


def test_helm_install_creates_release_objects(helm: Helm, kube_api: KubeAPI,
                                              namespace: str) -> None:
    helm.run("install", "demo", str(CHART), "--namespace", namespace, "--wait",
             "--timeout", "60s")
    configmap = kube_api.get(f"/api/v1/namespaces/{namespace}/configmaps/demo-greeting")
    releases = json.loads(helm.run("list", "--namespace", namespace, "--output", "json").stdout)

    assert configmap["data"] == {"greeting": "hello from helm"}
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]

    helm.run("uninstall", "demo", "--namespace", namespace, "--wait")
    remaining = kube_api.get(f"/api/v1/namespaces/{namespace}/configmaps")["items"]
    assert "demo-greeting" not in {item["metadata"]["name"] for item in remaining}
