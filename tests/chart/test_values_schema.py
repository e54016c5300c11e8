"""values.schema.json: strict everywhere, and in step with values.yaml."""

from __future__ import annotations

import json

import jsonschema
import yaml

from chart_rendering import CHART

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())

# Objects the schema passes through whole: Helm's "global" (a parent chart's values, which
# Helm copies into every subchart), and nested Kubernetes types that the API server
# validates at install (label selectors, the inner parts of affinity and security contexts).
PASS_THROUGH = {
    "global",
    "seLinuxOptions", "appArmorProfile", "windowsOptions", "podSelector", "namespaceSelector",
    "nodeAffinity", "podAffinity", "podAntiAffinity", "valueFrom",
    # A Volume is its name plus one of some thirty volume sources, each a Kubernetes type.
    "extraVolumes[]",
}


def resolve(schema: dict) -> dict:
    reference = schema.get("$ref")
    if reference is None:
        return schema
    return SCHEMA["definitions"][reference.rsplit("/", 1)[-1]]


def object_schemas(schema: dict, path: str = ""):
    """Yield (path, schema) for every object schema reachable from `schema`."""
    schema = resolve(schema)
    if schema.get("type") == "object":
        yield path, schema
        for key, child in (schema.get("properties") or {}).items():
            yield from object_schemas(child, f"{path}.{key}" if path else key)
        if isinstance(schema.get("additionalProperties"), dict):
            yield from object_schemas(schema["additionalProperties"], f"{path}.*")
    if schema.get("type") == "array" and "items" in schema:
        yield from object_schemas(schema["items"], f"{path}[]")
    for branch in schema.get("oneOf") or []:
        yield from object_schemas(branch, path)


def test_schema_is_valid_draft_7():
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_default_values_pass_the_schema():
    jsonschema.Draft7Validator(SCHEMA).validate(VALUES)


def test_every_object_rejects_unknown_keys():
    loose = []
    for path, schema in object_schemas(SCHEMA):
        if any(part in PASS_THROUGH for part in path.split(".")):
            continue
        if "properties" in schema and schema.get("additionalProperties") is not False:
            loose.append(path)
        if "patternProperties" in schema and schema.get("additionalProperties") is not False:
            loose.append(path)
        map_with_typed_values = isinstance(schema.get("additionalProperties"), dict)
        if not ("properties" in schema or "patternProperties" in schema or map_with_typed_values):
            loose.append(path)
    assert loose == []


def value_paths(values: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        paths.add(path)
        if isinstance(value, dict) and value:
            paths |= value_paths(value, path)
    return paths


def schema_paths(schema: dict, prefix: str = "") -> set[str]:
    paths = set()
    schema = resolve(schema)
    for key, child in (schema.get("properties") or {}).items():
        path = f"{prefix}.{key}" if prefix else key
        paths.add(path)
        paths |= schema_paths(child, path)
    return paths


def test_every_value_in_values_yaml_is_in_the_schema():
    assert value_paths(VALUES) - schema_paths(SCHEMA) == set()


def test_every_top_level_setting_of_the_schema_has_a_default():
    # "global" is Helm's own key, which a parent chart may pass down.
    missing = set(SCHEMA["properties"]) - set(VALUES) - {"global"}
    assert missing == set()
