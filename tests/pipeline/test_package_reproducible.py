"""Two conversions of one spec give the same Core ML package bytes, which Core ML tools read."""

from __future__ import annotations

import hashlib
import json
import uuid
import zipfile
from pathlib import Path

from modelconv.pipeline.run import run_pipeline
from modelconv.release.package import make_package_reproducible
from modelconv.spec import parse_conversion

CONVERSION = {
    "apiVersion": "modelconv.io/v1alpha1",
    "kind": "ModelConversion",
    "metadata": {"name": "repeatable"},
    "spec": {
        "source": {
            "factory": {
                "entrypoint": "torch.nn:Linear",
                "kwargs": {"in_features": 5, "out_features": 2},
            }
        },
        "inputs": [{"name": "x", "shape": [1, 5]}],
        "outputs": [{"name": "y"}],
        "validation": {"samples": {"count": 1}},
        "publish": {"model": "repeatable", "version": "1.0.0"},
    },
}


def package_zip(store: Path) -> Path:
    outcome = run_pipeline(parse_conversion(CONVERSION), store=str(store))
    assert outcome.succeeded, f"{outcome.reason}: {outcome.message}"
    return store / "repeatable" / "1.0.0" / "model.mlpackage.zip"


def test_two_conversions_give_the_same_package_bytes(tmp_path: Path) -> None:
    first = package_zip(tmp_path / "first")
    second = package_zip(tmp_path / "second")

    assert hashlib.sha256(first.read_bytes()).hexdigest() == hashlib.sha256(
        second.read_bytes()
    ).hexdigest()

    # coremltools' own package reader finds the root model through the rewritten ids.
    import coremltools as ct
    from coremltools.libmodelpackage import ModelPackage

    with zipfile.ZipFile(first) as archive:
        archive.extractall(tmp_path / "unzipped")
    package = tmp_path / "unzipped" / "model.mlpackage"
    root_model = Path(ModelPackage(str(package)).getRootModel().path())
    assert root_model == package / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    assert [feature.name for feature in spec.description.input] == ["x"]


def test_item_ids_become_name_based_uuids(tmp_path: Path) -> None:
    package = tmp_path / "model.mlpackage"
    (package / "Data" / "com.apple.CoreML").mkdir(parents=True)
    (package / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"")
    manifest = {
        "fileFormatVersion": "1.0.0",
        "itemInfoEntries": {
            str(uuid.uuid4()): {"author": "com.apple.CoreML", "name": "model.mlmodel",
                                "path": "com.apple.CoreML/model.mlmodel"},
            str(uuid.uuid4()): {"author": "com.apple.CoreML", "name": "weights",
                                "path": "com.apple.CoreML/weights"},
        },
    }
    manifest["rootModelIdentifier"] = next(iter(manifest["itemInfoEntries"]))
    (package / "Manifest.json").write_text(json.dumps(manifest))

    assert make_package_reproducible(package)

    rewritten = json.loads((package / "Manifest.json").read_text())
    ids = list(rewritten["itemInfoEntries"])
    assert len(ids) == 2
    assert all(uuid.UUID(item).version == 5 for item in ids)
    root = rewritten["itemInfoEntries"][rewritten["rootModelIdentifier"]]
    assert root["path"] == "com.apple.CoreML/model.mlmodel"
    assert set(ids).isdisjoint(manifest["itemInfoEntries"])
