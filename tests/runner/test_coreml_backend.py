"""The coreml backend: what Linux can check of it, and a real prediction on macOS.

Core ML predicts only on macOS. On Linux these tests check that the backend refuses to start
and that inputs are shaped for Core ML from the model's own input description. The
prediction itself runs only under `@pytest.mark.macos`, on a Mac.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from modelconv.runner.backends import BackendRequest, BackendUnavailable
from modelconv.runner.backends.coreml import (
    BGR,
    GRAYSCALE,
    RGB,
    CoreMLBackend,
    feed_for,
    image_from_array,
)

on_macos = sys.platform == "darwin"
needs_macos = pytest.mark.skipif(not on_macos, reason="Core ML predicts only on macOS")


@pytest.mark.skipif(on_macos, reason="checks the refusal on hosts without Core ML")
def test_coreml_backend_refuses_to_start_off_macos():
    with pytest.raises(BackendUnavailable) as caught:
        CoreMLBackend().prepare()
    assert "exists only on macOS" in str(caught.value)
    assert "--backend mil-reference" in str(caught.value)


@pytest.mark.skipif(on_macos, reason="checks the refusal on hosts without Core ML")
def test_agent_command_with_coreml_backend_exits_with_message(capsys):
    from modelconv.cli import main

    code = main(["agent", "--namespace", "pool", "--backend", "coreml", "--name", "linux-box"])
    assert code == 2
    assert "coreml backend runs Core ML, which exists only on macOS" in capsys.readouterr().err


def _description(*features):
    from coremltools.proto import Model_pb2

    model = Model_pb2.Model()
    for name, setup in features:
        feature = model.description.input.add()
        feature.name = name
        setup(feature.type)
    return model.description


def test_feed_casts_arrays_to_declared_dtypes():
    def int32_array(kind):
        kind.multiArrayType.dataType = 131104

    def float16_array(kind):
        kind.multiArrayType.dataType = 65552

    description = _description(("ids", int32_array), ("mask", float16_array))
    sample = {"ids": np.array([[1, 2, 3]], dtype=np.int64),
              "mask": np.array([[1.0, 0.0, 1.0]], dtype=np.float32)}
    feed = feed_for(description, sample)
    assert feed["ids"].dtype == np.int32
    assert feed["mask"].dtype == np.float16
    np.testing.assert_array_equal(feed["ids"], [[1, 2, 3]])


def test_feed_turns_image_input_into_picture():
    def image(kind):
        kind.imageType.width = 2
        kind.imageType.height = 2
        kind.imageType.colorSpace = RGB

    pixels = np.zeros((1, 3, 2, 2), dtype=np.float32)
    pixels[0, 0] = 255.0  # red channel
    feed = feed_for(_description(("image", image)), {"image": pixels})
    picture = feed["image"]
    assert picture.mode == "RGB"
    assert picture.size == (2, 2)
    assert picture.getpixel((0, 0)) == (255, 0, 0)


def test_bgr_pixels_become_an_rgb_picture():
    pixels = np.zeros((1, 3, 1, 1), dtype=np.float32)
    pixels[0, 0] = 200.0  # blue, first in BGR order
    assert image_from_array(pixels, BGR).getpixel((0, 0)) == (0, 0, 200)


def test_grayscale_pixels_become_a_gray_picture():
    picture = image_from_array(np.full((1, 1, 2, 3), 17.0), GRAYSCALE)
    assert picture.mode == "L"
    assert picture.size == (3, 2)


def test_feed_reports_missing_input():
    def array(kind):
        kind.multiArrayType.dataType = 65568

    with pytest.raises(ValueError, match="no tensor for model input 'x'"):
        feed_for(_description(("x", array)), {})


@pytest.mark.macos
@needs_macos
def test_coreml_predicts_on_every_unit(tiny_model, tmp_path):
    import io
    import zipfile

    from modelconv.runner.compare import compare_samples
    from modelconv.runner.resource import Tolerances

    zipfile.ZipFile(io.BytesIO(tiny_model.package_zip)).extractall(tmp_path)
    backend = CoreMLBackend()
    backend.prepare()
    units = ["cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine", "all"]
    run = backend.run(BackendRequest(
        package=tmp_path / "model.mlpackage", samples=tiny_model.inputs, compute_units=units,
        warmup_runs=2, measured_runs=10, workdir=tmp_path, cancelled=threading.Event(),
    ))
    assert [unit.compute_unit for unit in run.units] == units
    assert run.compiled_model is not None and run.compiled_model.suffix == ".mlmodelc"
    for unit in run.units:
        assert unit.failure_reason is None, unit.failure_message
        assert len(unit.latencies_ms) == 10
        assert unit.load_ms is not None and unit.compile_ms is not None
        comparisons = compare_samples(unit.outputs, tiny_model.outputs,
                                      Tolerances(atol=1e-2, rtol=1e-2, min_cosine=0.99))
        assert all(item.passed for item in comparisons), comparisons


def test_feature_names_follow_the_names_coremltools_gave():
    from modelconv.runner.backends.coreml import coreml_feature_names

    def float32_array(kind):
        kind.multiArrayType.dataType = 65568

    description = _description(("state_workaround", float32_array))
    output = description.output.add()
    output.name = "y"
    request = BackendRequest(
        package=None, samples=[{"state": np.zeros((1, 4), np.float32)}], compute_units=[],
        warmup_runs=0, measured_runs=1, workdir=None, output_names=["y"])

    names = coreml_feature_names(description, request)

    feed = feed_for(description, names.feed(request.samples[0]))
    assert list(feed) == ["state_workaround"]
    assert feed["state_workaround"].dtype == np.float32
    assert names.by_spec_name({"y": np.ones(2)}).keys() == {"y"}
