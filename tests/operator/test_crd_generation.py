"""The generated ModelConversion CRD (modelconv.crd) and crds/modelconversion.yaml."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from modelconv.crd import crd_manifest, render_crd

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crds" / "modelconversion.yaml"


def schema() -> dict:
    return crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node: dict, path: str = ""):
    """Yield (path, node) for every schema node below `node`."""
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_crd_file_is_up_to_date():
    assert CRD_FILE.read_text() == render_crd(), (
        "crds/modelconversion.yaml is stale; regenerate it with "
        "`modelconv crd > crds/modelconversion.yaml`")


def test_crd_command_prints_the_file():
    printed = subprocess.run([str(Path(sys.executable).parent / "modelconv"), "crd"],
                             capture_output=True, text=True, cwd=REPO_ROOT)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == CRD_FILE.read_text()


def test_names_short_name_and_category():
    names = crd_manifest()["spec"]["names"]
    assert crd_manifest()["metadata"]["name"] == "modelconversions.modelconv.io"
    assert names["kind"] == "ModelConversion"
    assert names["shortNames"] == ["mconv"]
    assert names["categories"] == ["modelconv"]


def test_status_subresource_and_printer_columns():
    version = crd_manifest()["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = {column["name"]: column["jsonPath"] for column in version["additionalPrinterColumns"]}
    assert columns["Stage"] == ".status.stage"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Worst Error"] == ".status.metrics.worstError"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_wide_sample_in_docs_shows_every_column():
    # kubectl prints NAME, then each printer column's name in upper case.
    lines = (REPO_ROOT / "docs" / "operator.md").read_text().splitlines()
    header = lines[lines.index("$ kubectl get mconv -o wide") + 1]
    columns = crd_manifest()["spec"]["versions"][0]["additionalPrinterColumns"]
    expected = ["NAME"] + [column["name"].upper() for column in columns]
    assert re.split(r" {2,}", header) == expected


def test_schema_is_structural():
    for path, node in walk(schema()):
        assert "$ref" not in node, path
        assert "title" not in node, path
        assert "const" not in node, path
        assert node.get("additionalProperties") is not False, path
        special = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields")
        assert special or "type" in node, f"{path} has no type"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf outside int-or-string"
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path


def test_every_spec_and_status_field_has_a_description():
    missing = [path for path, node in walk(schema())
               if path.startswith((".spec", ".status")) and path.count(".") >= 2
               and not path.endswith(("[]", "{}")) and not node.get("description")]
    assert missing == []


def test_dimensions_are_int_or_string_with_the_range_pattern():
    shape = schema()["properties"]["spec"]["properties"]["inputs"]["items"]["properties"]["shape"]
    dimension = shape["items"]
    assert dimension["x-kubernetes-int-or-string"] is True
    assert dimension["pattern"] == r"^[0-9]+\.\.[0-9]+$"
    assert dimension["minimum"] == 1
    assert dimension["maxLength"] == 41
    assert "x-kubernetes-validations" in dimension


def test_nested_settings_default_to_an_empty_object():
    spec = schema()["properties"]["spec"]["properties"]
    assert spec["validation"]["default"] == {}
    assert spec["coreml"]["default"] == {}
    assert spec["coreml"]["properties"]["precision"]["default"] == "float16"
    device = spec["validation"]["properties"]["device"]
    assert device["properties"]["computeUnits"]["default"] == ["cpuOnly", "all"]


def test_status_schema_has_no_defaults():
    assert not [path for path, node in walk(schema()["properties"]["status"]) if "default" in node]


def test_cel_rules_have_messages():
    rules = [(path, rule) for path, node in walk(schema())
             for rule in node.get("x-kubernetes-validations", [])]
    assert len(rules) >= 6
    for path, rule in rules:
        assert rule.get("message"), path


def test_fixed_key_maps_become_properties():
    spec = schema()["properties"]["spec"]["properties"]
    assert set(spec["stages"]["properties"]) == {
        "train", "export", "convert", "validate", "device", "publish"}
    assert set(spec["resources"]["properties"]["limits"]["properties"]) == {"cpu", "memory"}


def test_crd_file_is_yaml_with_one_document():
    documents = list(yaml.safe_load_all(CRD_FILE.read_text()))
    assert len(documents) == 1
    assert documents[0]["kind"] == "CustomResourceDefinition"
