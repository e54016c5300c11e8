"""Fetching and loading sources of every kind, and rejecting unsafe or wrong files."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import onnx
import pytest
import torch
from conftest import make_spec
from onnx import TensorProto, helper
from safetensors.torch import save_file

import conversion_zoo
from modelconv.errors import ConversionError, InvalidSpec
from modelconv.pipeline.sources import _unconverted_operator, load_source

INPUTS = [{"name": "x", "shape": [2, 8]}]


def linear_example():
    return (torch.randn(2, 8),)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class PickleBomb:
    """Unpickling this object writes a marker file: proof that a loader ran pickled code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Model files of every kind, saved from one linear module."""
    directory = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)
    module = conversion_zoo.linear().eval()
    paths = {"module": directory / "module.pkl"}
    torch.save(module, paths["module"])

    paths["pt2"] = directory / "model.pt2"
    torch.export.save(torch.export.export(module, linear_example()), paths["pt2"])
    paths["torchscript"] = directory / "model.ts"
    torch.jit.save(torch.jit.trace(module, linear_example()), paths["torchscript"])
    paths["onnx"] = directory / "model.onnx"
    torch.onnx.export(
        module, linear_example(), str(paths["onnx"]), dynamo=False, input_names=["x"],
        output_names=["y"],
    )
    paths["safetensors"] = directory / "weights.safetensors"
    save_file(module.state_dict(), paths["safetensors"])
    paths["state_dict"] = directory / "weights.pt"
    torch.save(module.state_dict(), paths["state_dict"])
    paths["reference"] = module
    return paths


def load(tmp_path, source: dict, inputs=INPUTS):
    return load_source(make_spec(source=source, inputs=inputs), tmp_path)


# --- kinds that load ------------------------------------------------------------------------


def test_exported_program_loads_from_a_local_path(files, tmp_path):
    source = load(tmp_path, {"exportedProgram": {"uri": str(files["pt2"])}})
    x = torch.randn(2, 8)
    assert source.exported_program is not None
    assert torch.allclose(source.torch_module()(x), files["reference"](x))
    assert source.sha256 == sha256(files["pt2"])


def test_torchscript_loads_from_a_file_uri(files, tmp_path):
    source = load(tmp_path, {"torchscript": {"uri": f"file://{files['torchscript']}"}})
    x = torch.randn(2, 8)
    assert torch.allclose(source.torch_module()(x), files["reference"](x))


def test_onnx_source_loads_and_converts_to_torch_on_demand(files, tmp_path):
    source = load(tmp_path, {"onnx": {"uri": str(files["onnx"])}})
    assert source.onnx_path == files["onnx"]
    x = torch.randn(2, 8)
    assert torch.allclose(source.torch_module()(x), files["reference"](x), atol=1e-6)


def test_matching_sha256_is_accepted(files, tmp_path):
    uri = {"uri": str(files["torchscript"]), "sha256": sha256(files["torchscript"])}
    assert load(tmp_path, {"torchscript": uri}).sha256 == uri["sha256"]


def test_factory_runs_with_kwargs_and_seed(tmp_path):
    factory = {"entrypoint": "conversion_zoo:linear", "kwargs": {"features": 3, "classes": 2}, "seed": 7}
    first = load(tmp_path, {"factory": factory}).torch_module()
    second = load(tmp_path, {"factory": factory}).torch_module()
    assert first.layer.weight.shape == (2, 3)
    assert torch.equal(first.layer.weight, second.layer.weight)


@pytest.mark.parametrize("weights_format, key", [("safetensors", "safetensors"), ("stateDict", "state_dict")])
def test_factory_weights_load_strictly(files, tmp_path, weights_format, key):
    weights = {"uri": str(files[key]), "format": weights_format}
    source = load(tmp_path, {"factory": {"entrypoint": "conversion_zoo:linear", "seed": 99, "weights": weights}})
    assert torch.equal(source.torch_module().layer.weight, files["reference"].layer.weight)
    assert source.sha256 == sha256(files[key])


@pytest.mark.s3
def test_s3_source_downloads_with_the_endpoint_from_the_environment(
    files, tmp_path, s3_server, s3_bucket, monkeypatch
):
    client = s3_server.client()
    client.upload_file(str(files["torchscript"]), s3_bucket, "models/model.ts")
    credentials = client._request_signer._credentials
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

    uri = {"uri": f"s3://{s3_bucket}/models/model.ts", "sha256": sha256(files["torchscript"])}
    source = load(tmp_path, {"torchscript": uri})
    assert source.sha256 == uri["sha256"]

    with pytest.raises(ConversionError) as missing:
        load(tmp_path, {"torchscript": {"uri": f"s3://{s3_bucket}/models/absent.ts"}})
    assert missing.value.reason == "SourceNotFound"
    assert "absent.ts" in missing.value.message


# --- files that are rejected ----------------------------------------------------------------


def test_missing_file_is_source_not_found(tmp_path):
    with pytest.raises(ConversionError) as error:
        load(tmp_path, {"torchscript": {"uri": str(tmp_path / "nowhere.ts")}})
    assert error.value.reason == "SourceNotFound"
    assert "nowhere.ts" in error.value.message
    assert error.value.permanent


def test_sha256_mismatch_names_both_digests(files, tmp_path):
    wrong = "0" * 64
    with pytest.raises(ConversionError) as error:
        load(tmp_path, {"torchscript": {"uri": str(files["torchscript"]), "sha256": wrong}})
    assert error.value.reason == "InvalidModel"
    assert wrong in error.value.message
    assert sha256(files["torchscript"]) in error.value.message
    assert "source.torchscript.sha256" in error.value.message


def test_pickled_module_is_rejected_as_state_dict_weights(files, tmp_path):
    weights = {"uri": str(files["module"]), "format": "stateDict"}
    with pytest.raises(ConversionError) as error:
        load(tmp_path, {"factory": {"entrypoint": "conversion_zoo:linear", "weights": weights}})
    assert error.value.reason == "InvalidModel"
    assert "weights_only=True" in error.value.message
    # torch's own message advises weights_only=False, in bold; neither is passed on.
    assert "weights_only=False" not in error.value.message
    assert "\x1b" not in error.value.message
    assert "trust the source" not in error.value.message
    assert "Unsupported global" in error.value.message
    assert "format: safetensors" in error.value.message
    assert "format: stateDict" in error.value.message


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "marker.txt"
    bomb = tmp_path / "weights.pt"
    torch.save({"layer.weight": PickleBomb(marker)}, bomb)
    weights = {"uri": str(bomb), "format": "stateDict"}
    with pytest.raises(ConversionError) as error:
        load(tmp_path, {"factory": {"entrypoint": "conversion_zoo:linear", "weights": weights}})
    assert error.value.reason == "InvalidModel"
    assert not marker.exists()

    raw = tmp_path / "model.ts"
    raw.write_bytes(pickle.dumps(PickleBomb(marker)))
    with pytest.raises(ConversionError) as as_torchscript:
        load(tmp_path, {"torchscript": {"uri": str(raw)}})
    assert "Python pickle" in as_torchscript.value.message
    assert not marker.exists()


def test_torch_save_archive_is_rejected_as_torchscript(files, tmp_path):
    with pytest.raises(ConversionError) as error:
        load(tmp_path, {"torchscript": {"uri": str(files["module"])}})
    assert error.value.reason == "InvalidModel"
    assert "torch.save archive" in error.value.message
    assert "torch.jit.save" in error.value.message


def test_pt2_with_pickled_objects_is_rejected(files, tmp_path):
    tampered = tmp_path / "tampered.pt2"
    shutil.copyfile(files["pt2"], tampered)
    with zipfile.ZipFile(tampered, "a") as archive:
        archive.writestr("model/data/constants/opaque_obj_0", pickle.dumps(object()))
    with pytest.raises(ConversionError) as error:
        load(tmp_path, {"exportedProgram": {"uri": str(tampered)}})
    assert error.value.reason == "InvalidModel"
    assert "opaque_obj_0" in error.value.message


def test_exported_program_load_forces_weights_only(files, tmp_path):
    os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    load(tmp_path, {"exportedProgram": {"uri": str(files["pt2"])}})
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_corrupt_onnx_is_invalid_model(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07 definitely not protobuf" * 10)
    with pytest.raises(ConversionError) as error:
        load(tmp_path, {"onnx": {"uri": str(path)}})
    assert error.value.reason == "InvalidModel"
    assert "broken.onnx" in error.value.message


def test_onnx_failing_the_checker_is_invalid_model(tmp_path):
    node = helper.make_node("Relu", ["undefined"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    path = tmp_path / "unchecked.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ConversionError) as error:
        load(tmp_path, {"onnx": {"uri": str(path)}})
    assert error.value.reason == "InvalidModel"
    assert "onnx.checker" in error.value.message


def test_onnx_with_external_data_is_rejected(files, tmp_path):
    model = onnx.load(str(files["onnx"]))
    path = tmp_path / "external.onnx"
    onnx.save(model, str(path), save_as_external_data=True, size_threshold=0, location="weights.bin")
    with pytest.raises(ConversionError) as error:
        load(tmp_path, {"onnx": {"uri": str(path)}})
    assert error.value.reason == "InvalidModel"
    assert "save_as_external_data=False" in error.value.message


def test_weight_key_mismatch_lists_missing_and_unexpected_keys(files, tmp_path):
    state = dict(files["reference"].state_dict())
    state["layer.extra"] = torch.zeros(1)
    del state["layer.bias"]
    path = tmp_path / "mismatch.safetensors"
    save_file(state, path)
    weights = {"uri": str(path)}
    with pytest.raises(ConversionError) as error:
        load(tmp_path, {"factory": {"entrypoint": "conversion_zoo:linear", "weights": weights}})
    assert error.value.reason == "InvalidModel"
    assert "missing keys: layer.bias" in error.value.message
    assert "unexpected keys: layer.extra" in error.value.message


def test_weight_shape_mismatch_names_both_shapes(files, tmp_path):
    weights = {"uri": str(files["safetensors"])}
    factory = {"entrypoint": "conversion_zoo:linear", "kwargs": {"features": 5}, "weights": weights}
    with pytest.raises(ConversionError) as error:
        load(tmp_path, {"factory": factory})
    assert "layer.weight (4, 8) in the file, (4, 5) in the model" in error.value.message


def test_checkpoint_wrapping_a_state_dict_is_rejected(files, tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": files["reference"].state_dict(), "epoch": 3}, path)
    weights = {"uri": str(path), "format": "stateDict"}
    with pytest.raises(ConversionError) as error:
        load(tmp_path, {"factory": {"entrypoint": "conversion_zoo:linear", "weights": weights}})
    assert "not a state dict" in error.value.message


def test_unimportable_factory_is_invalid_spec(tmp_path):
    with pytest.raises(InvalidSpec) as error:
        load(tmp_path, {"factory": {"entrypoint": "no_such_module_anywhere:build"}})
    assert "source.factory.entrypoint" in error.value.message
    with pytest.raises(InvalidSpec) as missing_function:
        load(tmp_path, {"factory": {"entrypoint": "conversion_zoo:no_such_factory"}})
    assert "no_such_factory" in missing_function.value.message


def factory_error(tmp_path, monkeypatch, module_name: str, code: str) -> InvalidSpec:
    """Write `code` as module `module_name` on sys.path; return the error of loading it."""
    (tmp_path / f"{module_name}.py").write_text(code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InvalidSpec) as error:
        load(tmp_path, {"factory": {"entrypoint": f"{module_name}:build"}})
    return error.value


def test_factory_syntax_error_names_file_and_line(tmp_path, monkeypatch):
    error = factory_error(tmp_path, monkeypatch, "factory_with_syntax_error", "x = = 1\n")

    assert error.exit_code == 2
    assert error.message.startswith(
        "source.factory.entrypoint: cannot import 'factory_with_syntax_error': SyntaxError in"
    )
    assert f"{tmp_path / 'factory_with_syntax_error.py'}, line 1" in error.message


@pytest.mark.parametrize(
    "module_name, code, expected",
    [
        ("factory_with_name_error", "x = 1\nundefined_name\n", "NameError: name 'undefined_name'"),
        ("factory_with_runtime_error", "raise RuntimeError('no GPU')\n", "RuntimeError: no GPU"),
        ("factory_with_bad_import", "from math import no_such_name\n", "ImportError: cannot import"),
        (
            "factory_with_attribute_error", "import math\nmath.no_such_function()\n",
            "AttributeError: module 'math' has no attribute",
        ),
    ],
)
def test_factory_import_failure_names_module_and_line(
    tmp_path, monkeypatch, module_name, code, expected
):
    error = factory_error(tmp_path, monkeypatch, module_name, code)
    lines = code.count("\n")

    assert error.message.startswith(f"source.factory.entrypoint: cannot import '{module_name}': ")
    assert expected in error.message
    assert f"raised at {tmp_path / module_name}.py, line {lines}" in error.message
    assert "has no 'build'" not in error.message


def test_factory_missing_dependency_is_named(tmp_path, monkeypatch):
    code = "import no_such_dependency_anywhere\n"

    error = factory_error(tmp_path, monkeypatch, "factory_with_missing_dependency", code)

    assert "No module named 'no_such_dependency_anywhere'" in error.message
    assert "install 'no_such_dependency_anywhere'" in error.message
    assert "PYTHONPATH" not in error.message


def test_factory_not_found_explains_import_path(tmp_path):
    with pytest.raises(InvalidSpec) as error:
        load(tmp_path, {"factory": {"entrypoint": "tinynet_not_on_path:build"}})

    message = error.value.message
    assert "cannot import 'tinynet_not_on_path': No module named 'tinynet_not_on_path'" in message
    assert "installed packages and from the folders on PYTHONPATH" in message
    assert "`PYTHONPATH=. modelconv run FILE.yaml`" in message


def test_factory_missing_submodule_names_entrypoint(tmp_path):
    with pytest.raises(InvalidSpec) as error:
        load(tmp_path, {"factory": {"entrypoint": "torch.no_such_submodule:build"}})

    message = error.value.message
    assert "No module named 'torch.no_such_submodule'" in message
    assert "check the module path in the entrypoint" in message


def test_factory_returning_no_module_is_invalid_model(tmp_path):
    with pytest.raises(ConversionError) as error:
        load(tmp_path, {"factory": {"entrypoint": "conversion_zoo:not_a_module"}})
    assert error.value.reason == "InvalidModel"
    assert "not a torch.nn.Module" in error.value.message


def test_onnx_inputs_must_follow_the_graph_order(files, tmp_path):
    from modelconv.pipeline.samples import build_samples

    spec = make_spec(source={"onnx": {"uri": str(files["onnx"])}}, inputs=[{"name": "input", "shape": [2, 8]}])
    with pytest.raises(ConversionError) as error:
        build_samples(spec, load_source(spec, tmp_path), tmp_path)
    assert error.value.reason == "InvalidSpec"
    assert "['x']" in error.value.message


@pytest.mark.parametrize(("text", "expected"), [
    ("Converter is not implemented (OperationDescription(domain='', operation_type='If', "
     "version=16))", "the operator If (opset 16)"),
    ("Converter is not implemented (OperationDescription(domain='com.microsoft', "
     "operation_type='Gelu', version=1))", "the operator com.microsoft.Gelu (opset 1)"),
    ("something else\nsecond line", "an operator (something else)"),
])
def test_unconverted_onnx_operator_is_named(text, expected):
    assert _unconverted_operator(NotImplementedError(text)) == expected
