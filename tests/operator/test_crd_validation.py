"""The API server enforces the CRD's schema and CEL rules, with messages naming the fix.

Each invalid document is also rejected by the spec models (`modelconv run` and the stages),
so the cluster and a local run agree on what is valid.
"""

from __future__ import annotations

import copy

import pytest

import operator_harness as harness
from modelconv.errors import InvalidSpec
from modelconv.spec import parse_conversion
from testenv.api import ApiError


def valid() -> dict:
    return harness.conversion("valid")


def with_spec(change) -> dict:
    document = valid()
    change(document["spec"])
    return document


INVALID = [
    ("two sources", lambda spec: spec["source"].update(onnx={"uri": "s3://bucket/m.onnx"}),
     "set exactly one of spec.source.exportedProgram, torchscript, onnx or factory"),
    ("no source", lambda spec: spec.update(source={}),
     "set exactly one of spec.source.exportedProgram, torchscript, onnx or factory"),
    ("range reversed", lambda spec: spec["inputs"][0].update(shape=[1, "16..4"]),
     'range "16..4" needs 1 <= MIN < MAX'),
    ("range from zero", lambda spec: spec["inputs"][0].update(shape=[1, "0..8"]),
     'range "0..8" needs 1 <= MIN < MAX'),
    ("range not numeric", lambda spec: spec["inputs"][0].update(shape=[1, "a..4"]),
     "spec.inputs[0].shape[1] in body should match"),
    ("zero dimension", lambda spec: spec["inputs"][0].update(shape=[0, 4]),
     "spec.inputs[0].shape[0] in body should be greater than or equal to 1"),
    ("duplicate inputs", lambda spec: spec["inputs"].append({"name": "x", "shape": [1]}),
     "every input needs a unique name"),
    ("output named like an input",
     lambda spec: spec["outputs"].append({"name": spec["inputs"][0]["name"]}),
     "an output has the name of an input"),
    ("duplicate outputs", lambda spec: spec["outputs"].append({"name": "logits"}),
     "every output needs a unique name"),
    ("value range reversed",
     lambda spec: spec["inputs"][0].update(values={"min": 5, "max": 1}),
     "max must be greater than min"),
    ("atol too large", lambda spec: spec.update(validation={"atol": 20}),
     "spec.validation.atol in body should be less than or equal to 10"),
    ("cosine above one", lambda spec: spec.update(validation={"minCosine": 1.5}),
     "spec.validation.minCosine in body should be less than or equal to 1"),
    ("negative rtol", lambda spec: spec.update(validation={"rtol": -0.1}),
     "spec.validation.rtol in body should be greater than or equal to 0"),
    ("version with dot segment", lambda spec: spec["publish"].update(version="1..2"),
     "must not contain '..'"),
    ("version named like the index", lambda spec: spec["publish"].update(version="index.json"),
     "must not be channels or index.json"),
    ("version named like channels", lambda spec: spec["publish"].update(version="Channels"),
     "must not be channels or index.json"),
    ("unknown field", lambda spec: spec.update(bogus=1), 'unknown field "spec.bogus"'),
    ("bad quantity", lambda spec: spec.update(resources={"limits": {"memory": "4 GB"}}),
     "spec.resources.limits.memory in body should match"),
    ("unknown stage override", lambda spec: spec.update(stages={"compile": {}}),
     'unknown field "spec.stages.compile"'),
    ("unknown precision", lambda spec: spec["coreml"].update(precision="int8"),
     'spec.coreml.precision: Unsupported value: "int8"'),
    ("missing publish", lambda spec: spec.pop("publish"), "spec.publish: Required value"),
    ("no inputs", lambda spec: spec.update(inputs=[]),
     "spec.inputs in body should have at least 1 items"),
]


@pytest.mark.parametrize("case, change, message", INVALID, ids=[case[0] for case in INVALID])
def test_api_server_rejects_invalid_spec(kube_api, modelconv_crd, namespace, case, change,
                                         message):
    document = with_spec(change)
    with pytest.raises(ApiError) as rejected:
        harness.apply(kube_api, namespace, document)
    assert rejected.value.status in (400, 422)
    assert message in rejected.value.message

    # The spec models reject it too (the first error they report may differ in wording).
    with pytest.raises(InvalidSpec):
        parse_conversion(copy.deepcopy({**document, "metadata": {"name": "valid"}}))


def test_api_server_rejects_dotted_names(kube_api, modelconv_crd,
                                                              namespace):
    document = valid()
    document["metadata"]["name"] = "model.v2"
    with pytest.raises(ApiError) as rejected:
        harness.apply(kube_api, namespace, document)
    assert "metadata.name must be a DNS label" in rejected.value.message


def test_api_server_fills_defaults(kube_api, modelconv_crd, namespace):
    document = valid()
    document["spec"]["inputs"][0]["shape"] = [1, "1..128"]
    document["spec"]["resources"] = {"requests": {"cpu": 2, "memory": "4Gi"}}
    created = harness.apply(kube_api, namespace, document)
    spec = created["spec"]
    assert spec["inputs"][0]["shape"] == [1, "1..128"]
    assert spec["inputs"][0]["dtype"] == "float32"
    assert spec["export"] == {"opset": 18, "exporter": "auto"}
    assert spec["validation"]["device"]["computeUnits"] == ["cpuOnly", "all"]
    assert spec["resources"]["requests"]["cpu"] == 2
    # What the API server stored is valid for the spec models as it is.
    parse_conversion({**created, "status": None})
