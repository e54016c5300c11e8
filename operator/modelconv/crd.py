"""The ModelConversion CustomResourceDefinition, generated from the typed spec models.

`crd_manifest()` turns the pydantic JSON Schema of `ConversionSpec` (and of the status
models in `modelconv.controller.status`) into a structural OpenAPI v3 schema as Kubernetes
requires it:

- `$ref`s are inlined, `Optional[X]` becomes X (an absent field), titles are dropped;
- an integer-or-string union (a dimension "MIN..MAX", a quantity) becomes
  `x-kubernetes-int-or-string` with the pattern kept on the string branch;
- a map with a fixed set of keys becomes an object with those properties;
- defaults are kept, and a nested settings object defaults to `{}` so the API server fills
  in its fields' defaults;
- what a schema cannot express (exactly one source, ordered ranges, unique names, ...)
  becomes CEL rules (`x-kubernetes-validations`) whose messages tell the user what to fix.

`modelconv crd` prints the manifest; crds/modelconversion.yaml is its output, and a test
fails when the file is stale.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from .controller.status import ConversionStatus
from .spec import API_GROUP, KIND, RESERVED_VERSIONS, ConversionSpec

PLURAL = "modelconversions"
SINGULAR = "modelconversion"
SHORT_NAMES = ["mconv"]
CATEGORIES = ["modelconv"]
VERSION = "v1alpha1"
CRD_NAME = f"{PLURAL}.{API_GROUP}"

# Descriptions for fields whose models carry none, so that `kubectl explain` shows every field.
# NOTE: these belong on the fields in modelconv.spec; they live here until they move there.
FALLBACK_DESCRIPTIONS = {
    "requests": "Resources the stage's container requests (cpu, memory).",
    "limits": "Upper bounds of the stage's container (cpu, memory).",
    "activeDeadlineSeconds": "Seconds the Job may run in total before Kubernetes stops it.",
    "backoffLimit": (
        "Pod retries after transient failures before the stage fails; a permanent failure "
        "(exit code 2) fails the stage at once."
    ),
    "command": "Entry point of the training container (replaces the image's ENTRYPOINT).",
    "args": "Arguments of the training container (replace the image's CMD).",
}

# Upper bounds on strings and maps that CEL rules read. The API server estimates the cost of
# each rule from these bounds and rejects a CRD whose rules could cost too much.
# NOTE: `kwargs` has no bound in modelconv.spec; the CRD allows at most 64 entries.
CEL_BOUNDS = {
    "spec.inputs[].name": {"maxLength": 64},
    "spec.outputs[].name": {"maxLength": 64},
    "spec.inputs[].shape[]": {"maxLength": 41},
    "spec.publish.version": {"maxLength": 64},
    "spec.source.factory.kwargs": {"maxProperties": 64},
    "spec.source.factory.entrypoint": {"maxLength": 512},
}


def _rule(rule: str, message: str, **extra: str) -> dict:
    return {"rule": rule, "message": message, **extra}


# CEL rules by schema path, for what the schema itself cannot express.
CEL_RULES = {
    "spec": [_rule(
        "self.outputs.all(output, !self.inputs.exists(input, input.name == output.name))",
        "an output has the name of an input; names of inputs and outputs must all be distinct",
    )],
    "spec.source": [_rule(
        "[has(self.exportedProgram), has(self.torchscript), has(self.onnx), has(self.factory)]"
        ".filter(set, set).size() == 1",
        "set exactly one of spec.source.exportedProgram, torchscript, onnx or factory",
    )],
    "spec.inputs": [_rule(
        "self.all(input, self.exists_one(other, other.name == input.name))",
        "every input needs a unique name",
    )],
    "spec.outputs": [_rule(
        "self.all(output, self.exists_one(other, other.name == output.name))",
        "every output needs a unique name",
    )],
    "spec.inputs[].shape[]": [_rule(
        # A string that misses the pattern is reported by the pattern check alone.
        "type(self) == int || !self.matches('^[0-9]+[.][.][0-9]+$')"
        " || (int(self.split('..')[0]) >= 1"
        " && int(self.split('..')[0]) < int(self.split('..')[1]))",
        'a ranged dimension "MIN..MAX" needs 1 <= MIN < MAX',
        messageExpression=(
            "'range \"' + string(self) + '\" needs 1 <= MIN < MAX, e.g. \"1..128\"'"
        ),
    )],
    "spec.inputs[].values": [_rule(
        "self.max > self.min",
        "max must be greater than min",
    )],
    "spec.publish.version": [
        _rule("!self.contains('..')", "must not contain '..'"),
        _rule(
            "!(self.lowerAscii() in [" + ", ".join(
                f"'{name}'" for name in sorted(RESERVED_VERSIONS)
            ) + "])",
            f"must not be {' or '.join(sorted(RESERVED_VERSIONS))}, names the store keeps "
            "next to the versions",
        ),
    ],
}

# Columns of `kubectl get modelconversions`.
PRINTER_COLUMNS = [
    {"name": "Stage", "type": "string", "jsonPath": ".status.stage",
     "description": "The stage running now, the failed stage, Done, or Invalid for a spec "
                    "the operator rejects."},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
     "description": "Status of the Ready condition."},
    {"name": "Worst Error", "type": "number", "jsonPath": ".status.metrics.worstError",
     "description": "Largest absolute error of the converted model against PyTorch."},
    {"name": "Cosine", "type": "number", "jsonPath": ".status.metrics.cosine", "priority": 1,
     "description": "Smallest cosine similarity of the converted model's outputs."},
    {"name": "Device P50 ms", "type": "number",
     "jsonPath": ".status.metrics.deviceLatencyP50Ms", "priority": 1,
     "description": "Median Core ML prediction time on a Mac, fastest compute unit."},
    {"name": "Reason", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].reason', "priority": 1,
     "description": "Reason of the Ready condition."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


class _DefaultsFromFactories(GenerateJsonSchema):
    """JSON Schema generation that also records defaults made by `default_factory`."""

    def get_default_value(self, schema: Any) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()
            if isinstance(value, BaseModel):
                return value.model_dump(mode="json", by_alias=True)
            return value
        return super().get_default_value(schema)


def model_schema(model: type[BaseModel], root: str, *, defaults: bool = True) -> dict:
    """Return the structural schema of `model`, with CEL rules and bounds for paths under `root`.

    With `defaults=False` no default is kept: the status is written whole by the operator,
    and the API server must not add fields to it.
    """
    raw = model.model_json_schema(by_alias=True, schema_generator=_DefaultsFromFactories)
    definitions = raw.pop("$defs", {})
    schema = _structural(raw, definitions, root)
    if not defaults:
        _strip_defaults(schema)
    return schema


def _strip_defaults(node: object) -> None:
    if isinstance(node, dict):
        node.pop("default", None)
        for value in node.values():
            _strip_defaults(value)
    elif isinstance(node, list):
        for value in node:
            _strip_defaults(value)


def _structural(node: dict, definitions: dict, path: str) -> dict:
    node = _inline(node, definitions)
    node = _collapse_optional(node, definitions)
    result = {key: value for key, value in node.items() if key not in _DROPPED_KEYS}
    if result.get("additionalProperties") is False:
        # Kubernetes prunes unknown fields itself; `false` is not allowed next to properties.
        del result["additionalProperties"]
    _fix_numeric_bounds(result)
    _fix_default(result)
    if "const" in result:
        result["enum"] = [result.pop("const")]
    if _is_int_or_string(result):
        result = _int_or_string(result)
    elif "propertyNames" in result:
        result = _fixed_key_map(result, definitions, path)
    elif "additionalProperties" in result and isinstance(result["additionalProperties"], dict):
        value_schema = _structural(result["additionalProperties"], definitions, path + "{}")
        result["additionalProperties"] = _scalar_values(value_schema)
    if "properties" in result:
        result["properties"] = {
            name: _described(name, _structural(child, definitions, f"{path}.{name}"))
            for name, child in result["properties"].items()
        }
    if "items" in result:
        result["items"] = _structural(result["items"], definitions, path + "[]")
    result.update(CEL_BOUNDS.get(path, {}))
    if path in CEL_RULES:
        result["x-kubernetes-validations"] = copy.deepcopy(CEL_RULES[path])
    return _ordered(result)


_DROPPED_KEYS = {"title", "$defs"}
# Keys that lead each schema node in the YAML, so a reader sees the type and meaning first.
_LEADING_KEYS = ("type", "description", "default", "enum", "x-kubernetes-int-or-string")


def _ordered(node: dict) -> dict:
    leading = {key: node[key] for key in _LEADING_KEYS if key in node}
    rest = {key: node[key] for key in sorted(node) if key not in leading}
    return {**leading, **rest}


def _inline(node: dict, definitions: dict) -> dict:
    """Replace a `$ref` with a copy of its definition; the referring node's keys win."""
    if "$ref" not in node:
        return node
    name = node["$ref"].rsplit("/", 1)[-1]
    merged = copy.deepcopy(definitions[name])
    merged.update({key: value for key, value in node.items() if key != "$ref"})
    return merged


def _collapse_optional(node: dict, definitions: dict) -> dict:
    """Turn `anyOf: [X, null]` into X, because Kubernetes expresses null by an absent field."""
    branches = node.get("anyOf")
    if not branches:
        return node
    kept = [branch for branch in branches if branch.get("type") != "null"]
    outer = {key: value for key, value in node.items() if key != "anyOf"}
    if outer.get("default", ...) is None:
        del outer["default"]
    if len(kept) == 1:
        inner = _inline(kept[0], definitions)
        return {**inner, **outer}
    return {**outer, "anyOf": kept}


def _is_int_or_string(node: dict) -> bool:
    types = sorted(branch.get("type", "") for branch in node.get("anyOf", []))
    return types == ["integer", "string"]


def _int_or_string(node: dict) -> dict:
    """Express an integer-or-string union in the one form a structural schema allows.

    The branches may only name the two types, so the string's `pattern` and the integer's
    `minimum` move up a level. Validation applies each of them to its own type only.
    """
    result = {key: value for key, value in node.items() if key != "anyOf"}
    for branch in node["anyOf"]:
        result.update({key: value for key, value in branch.items() if key != "type"})
    result["x-kubernetes-int-or-string"] = True
    result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return result


def _fixed_key_map(node: dict, definitions: dict, path: str) -> dict:
    """Turn a map whose keys are an enum into an object with one property per key."""
    keys = node.pop("propertyNames")["enum"]
    value = node.pop("additionalProperties")
    node["properties"] = {key: copy.deepcopy(value) for key in keys}
    return node


def _scalar_values(value_schema: dict) -> dict:
    """Map values of several scalar types become any JSON value.

    A structural schema has no union of string, number and boolean, and CEL cannot inspect
    values kept by `x-kubernetes-preserve-unknown-fields`. The operator's own validation
    rejects an object or list there (condition reason InvalidSpec).
    """
    if "anyOf" in value_schema:
        return {"x-kubernetes-preserve-unknown-fields": True}
    return value_schema


def _fix_numeric_bounds(node: dict) -> None:
    # JSON Schema 2020-12 writes exclusive bounds as numbers; OpenAPI v3.0 as booleans.
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node[bound], bool):
            node[inclusive] = node.pop(bound)
            node[bound] = True


def _fix_default(node: dict) -> None:
    if "default" not in node:
        return
    default = node["default"]
    if isinstance(default, dict) and node.get("type") == "object" and "properties" in node:
        # The API server applies the nested fields' own defaults to an empty object.
        node["default"] = {}
    elif default in ([], {}):
        del node["default"]


def _described(name: str, node: dict) -> dict:
    if not node.get("description") and name in FALLBACK_DESCRIPTIONS:
        node["description"] = FALLBACK_DESCRIPTIONS[name]
    return node


def openapi_schema() -> dict:
    """Return the openAPIV3Schema of the ModelConversion resource."""
    spec = model_schema(ConversionSpec, "spec")
    status = model_schema(ConversionStatus, "status", defaults=False)
    status["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
    status["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    return {
        "type": "object",
        "description": (
            "A PyTorch or ONNX model to convert to Core ML, validate and publish. The operator "
            "runs each stage as a Job and reports progress in status.conditions."
        ),
        "x-kubernetes-validations": [_rule(
            "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')",
            "metadata.name must be a DNS label: at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (it names the stage Jobs)",
        )],
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "modelconv.io/v1alpha1"},
            "kind": {"type": "string", "description": "ModelConversion"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def crd_manifest() -> dict:
    """Return the CustomResourceDefinition of ModelConversion as a manifest."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "modelconv"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": openapi_schema()},
            }],
        },
    }


def render_crd() -> str:
    """Return the CRD as the YAML text of crds/modelconversion.yaml."""
    header = (
        "# Generated by `modelconv crd` from the models in operator/modelconv/spec.py and\n"
        "# operator/modelconv/controller/status.py. Do not edit: change the models and run\n"
        "#   modelconv crd > crds/modelconversion.yaml\n"
    )
    body = yaml.safe_dump(crd_manifest(), sort_keys=False, width=100, allow_unicode=True)
    return header + body
