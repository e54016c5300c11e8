"""Drift checks: what the chart copies from another source must equal that source.

hack/gen-chart.py writes the CRD templates, the operator's RBAC rules, the values table and
the Argo CD patch. These tests fail when one of them is stale. They also compare the
rendered chart with crds/, `modelconv crd` and modelconv.controller.rbac directly.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from chart_rendering import CHART, REPO, find, operator_rules

CRD_FILES = {
    "modelconversions.modelconv.io": REPO / "crds" / "modelconversion.yaml",
    "coremlchecks.modelconv.io": REPO / "crds" / "coremlcheck.yaml",
}
# Metadata the chart adds to each CRD: release labels and the keep annotation.
CHART_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                     "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of"}


def without_chart_metadata(document: dict) -> dict:
    stripped = json.loads(json.dumps(document))
    metadata = stripped["metadata"]
    labels = {key: value for key, value in (metadata.get("labels") or {}).items()
              if key not in CHART_ONLY_LABELS}
    annotations = {key: value for key, value in (metadata.get("annotations") or {}).items()
                   if key != "helm.sh/resource-policy"}
    metadata.pop("labels", None)
    metadata.pop("annotations", None)
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    return stripped


def test_generated_files_are_up_to_date(gen_chart):
    stale = [str(path.relative_to(REPO)) for path, content in gen_chart.generated_files().items()
             if not path.exists() or path.read_text() != content]
    assert stale == [], f"stale: {stale}; run hack/gen-chart.py"


def test_gen_chart_check_mode_reports_success():
    result = subprocess.run([sys.executable, str(REPO / "hack" / "gen-chart.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(CRD_FILES))
def test_rendered_crd_equals_the_file_in_crds(rendered_sets, name):
    (rendered,) = find(rendered_sets["default"], "CustomResourceDefinition", name=name)
    from_file = yaml.safe_load(CRD_FILES[name].read_text())
    assert without_chart_metadata(rendered) == from_file


def test_rendered_modelconversion_crd_equals_modelconv_crd_output(rendered_sets):
    command = [sys.executable, "-c", "import sys, modelconv.cli; sys.exit(modelconv.cli.main())",
               "crd"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    printed = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert [doc["metadata"]["name"] for doc in printed] == ["modelconversions.modelconv.io"]
    for document in printed:
        (rendered,) = find(rendered_sets["default"], "CustomResourceDefinition",
                           name=document["metadata"]["name"])
        assert without_chart_metadata(rendered) == document


def test_rendered_operator_rules_equal_the_controllers_rbac(rendered_sets):
    from modelconv.controller import rbac

    reconcile = [rule.as_policy_rule() for rule in rbac.RECONCILE_RULES]
    lease = [rule.as_policy_rule() for rule in rbac.lease_rules("modelconv")]
    pool = [rule.as_policy_rule() for rule in rbac.POOL_RULES]
    for name in ("default", "namespaced"):
        roles = operator_rules(rendered_sets[name])
        by_scope = {(role["kind"], role["namespace"], role["name"]): role["rules"]
                    for role in roles}
        assert by_scope.pop(("Role", "modelconv-system", "modelconv-leader-election")) == lease
        assert by_scope.pop(("Role", "modelconv-system", "modelconv-pool")) == pool
        if name == "default":
            assert by_scope.pop(("ClusterRole", None, "modelconv")) == reconcile
        else:
            assert by_scope.pop(("Role", "team-a", "modelconv")) == reconcile
            assert by_scope.pop(("Role", "team-b", "modelconv")) == reconcile
        assert by_scope == {}


def test_rule_comments_give_each_rules_reason(gen_chart):
    from modelconv.controller import rbac

    template = (CHART / "templates" / "_operator-rules.tpl").read_text()
    comments = " ".join(line[2:] for line in template.splitlines() if line.startswith("# "))
    for rule in rbac.RECONCILE_RULES:
        assert " ".join(rule.why.split()) in comments


def test_values_table_lists_every_value(gen_chart):
    docs = gen_chart.document_values((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    for doc in docs:
        assert f"| `{doc.path}` |" in readme
    assert len(docs) > 40


def test_undocumented_value_is_reported_with_its_line(gen_chart):
    text = "image:\n  # -- Repository.\n  repository: x\n  tag: y\n"
    with pytest.raises(ValueError, match=r"line 4: image.tag has no '# --' description"):
        gen_chart.document_values(text)


def argocd_patch_script() -> str:
    patch = yaml.safe_load((REPO / "examples" / "argocd" / "argocd-cm-health.yaml").read_text())
    return patch["data"]["resource.customizations.health.modelconv.io_ModelConversion"]


def test_argocd_patch_carries_the_health_script_unchanged():
    assert argocd_patch_script() == (REPO / "docs" / "argocd-health.lua").read_text()


def test_chart_crd_templates_and_crds_folder_name_the_same_crds():
    templates = sorted(path.name for path in (CHART / "templates").glob("crd-*.yaml"))
    assert templates == ["crd-coremlchecks.yaml", "crd-modelconversions.yaml"]
    assert all(path.exists() for path in CRD_FILES.values())



def test_runner_role_equals_the_agent_rbac_example(rendered_sets):
    from chart_rendering import bound_roles

    example = [document for document in
               yaml.safe_load_all((REPO / "examples" / "macos" / "agent-rbac.yaml").read_text())
               if document]
    (example_role,) = [document for document in example if document["kind"] == "Role"]
    (account,) = [document for document in example if document["kind"] == "ServiceAccount"]
    documents = rendered_sets["default"]
    (role,) = bound_roles(documents, "modelconv-system", account["metadata"]["name"])
    assert role["rules"] == example_role["rules"]
