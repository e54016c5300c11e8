"""Reading untrusted check files: zips, samples, expiry and S3 error answers."""

from __future__ import annotations

import datetime
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests

from modelconv.runner.artifacts import (
    INPUTS,
    OUTPUTS,
    CheckDataError,
    _http_failure,
    ensure_not_expired,
    locate_package,
    read_samples,
    unpack_zip,
    write_samples,
    zip_folder,
)
from modelconv.runner.resource import PresignedObject, utc_now


def _zip(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            bundle.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _archive(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "package.zip"
    path.write_bytes(data)
    return path


def test_zip_entry_outside_folder_is_rejected(tmp_path):
    archive = _archive(tmp_path, _zip({"../escape.txt": b"x"}))
    with pytest.raises(CheckDataError, match="outside its folder") as caught:
        unpack_zip(archive, tmp_path / "out")
    assert caught.value.reason == "InvalidCheckData"
    assert not (tmp_path / "escape.txt").exists()


def test_zip_symlink_entry_is_rejected(tmp_path):
    archive = _archive(tmp_path, _zip({"model.mlpackage/Manifest.json": b"{}"},
                                      symlink="model.mlpackage/link"))
    with pytest.raises(CheckDataError, match="symbolic link"):
        unpack_zip(archive, tmp_path / "out")


def test_not_a_zip_is_rejected(tmp_path):
    with pytest.raises(CheckDataError, match="not a valid zip"):
        unpack_zip(_archive(tmp_path, b"plain text"), tmp_path / "out")


def test_package_folder_is_found_in_zip(tmp_path):
    archive = _archive(tmp_path, _zip({"model.mlpackage/Manifest.json": b"{}"}))
    package = locate_package(unpack_zip(archive, tmp_path / "out"))
    assert package.name == "model.mlpackage"
    assert (package / "Manifest.json").is_file()


def test_package_contents_at_zip_root_get_a_package_folder(tmp_path):
    archive = _archive(tmp_path, _zip({"Manifest.json": b"{}", "Data/x": b"1"}))
    package = locate_package(unpack_zip(archive, tmp_path / "out"))
    assert package.suffix == ".mlpackage"
    assert (package / "Data" / "x").read_bytes() == b"1"


def test_zip_folder_is_deterministic(tmp_path):
    folder = tmp_path / "model.mlmodelc"
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "weight.bin").write_bytes(b"\x01" * 100)
    (folder / "model.mil").write_text("program")
    first = zip_folder(folder)
    (folder / "model.mil").touch()
    assert zip_folder(folder) == first
    assert sorted(zipfile.ZipFile(io.BytesIO(first)).namelist()) == [
        "model.mlmodelc/model.mil", "model.mlmodelc/weights/weight.bin"]


def test_npz_samples_round_trip(tmp_path):
    samples = [{"x": np.arange(4, dtype=np.float32)}, {"x": np.ones(2, dtype=np.float32)}]
    path = tmp_path / "inputs"
    path.write_bytes(write_samples(samples))
    read = read_samples(path, "inputs.npz", INPUTS)
    assert len(read) == 2
    np.testing.assert_array_equal(read[0]["x"], samples[0]["x"])
    np.testing.assert_array_equal(read[1]["x"], samples[1]["x"])


def test_npz_with_pickled_objects_is_rejected(tmp_path):
    path = tmp_path / "inputs"
    buffer = io.BytesIO()
    np.savez(buffer, **{"0/x": np.array([{"a": 1}], dtype=object)})
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckDataError, match="without pickled objects"):
        read_samples(path, "inputs.npz", INPUTS)


def test_badly_named_npz_arrays_are_rejected(tmp_path):
    path = tmp_path / "inputs"
    path.write_bytes(_npz({"x": np.zeros(1)}))
    with pytest.raises(CheckDataError, match="<sample index>/<tensor name>"):
        read_samples(path, "inputs.npz", INPUTS)


def _npz(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_safetensors_samples_give_pixels_for_image_inputs(tmp_path):
    from safetensors.numpy import save

    tensors = {
        "sample0/input/image": np.full((1, 3, 2, 2), 0.5, dtype=np.float32),
        "sample0/pixels/image": np.full((1, 3, 2, 2), 128.0, dtype=np.float32),
        "sample0/input/scale": np.ones(1, dtype=np.float32),
        "sample0/output/y": np.zeros(3, dtype=np.float32),
    }
    path = tmp_path / "samples"
    path.write_bytes(save(tensors))
    inputs = read_samples(path, "samples.safetensors", INPUTS)
    outputs = read_samples(path, "samples.safetensors", OUTPUTS)
    assert sorted(inputs[0]) == ["image", "scale"]
    assert float(inputs[0]["image"].max()) == 128.0
    assert list(outputs[0]) == ["y"]


def test_garbage_samples_file_is_rejected(tmp_path):
    path = tmp_path / "samples"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with pytest.raises(CheckDataError, match="neither an .npz nor a safetensors"):
        read_samples(path, "samples.safetensors", INPUTS)


def _presigned(seconds: float) -> PresignedObject:
    return PresignedObject(url="http://127.0.0.1:9/b/k?X-Amz-Signature=secret", key="runs/k",
                           expires_at=utc_now() + datetime.timedelta(seconds=seconds))


def test_expired_urls_are_named_by_key_only():
    with pytest.raises(CheckDataError) as caught:
        ensure_not_expired({"package": _presigned(-1), "inputs": _presigned(60)})
    assert caught.value.reason == "UrlExpired"
    assert "package (runs/k)" in caught.value.message
    assert "inputs" not in caught.value.message
    assert "Signature" not in caught.value.message


def test_presigned_url_is_left_out_of_repr():
    assert "Signature" not in repr(_presigned(60))
    assert "runs/k" in repr(_presigned(60))


def _response(status: int, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    return response


def test_s3_expired_answer_becomes_url_expired():
    body = (b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>"
            b"<Message>Request has expired</Message></Error>")
    failure = _http_failure("download", _presigned(60), _response(403, body))
    assert failure.reason == "UrlExpired"


def test_s3_other_answer_names_code_and_key():
    body = b"<Error><Code>NoSuchKey</Code><Message>The key does not exist</Message></Error>"
    failure = _http_failure("download", _presigned(60), _response(404, body))
    assert failure.reason == "DownloadFailed"
    assert failure.message == "download of runs/k failed with HTTP 404 (NoSuchKey)"
