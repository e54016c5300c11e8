"""Validation samples: seeded inputs, recorded inputs and the samples artifact."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_spec
from safetensors.numpy import save_file

from modelconv.errors import ConversionError, InvalidSpec
from modelconv.pipeline.samples import (
    Sample,
    build_samples,
    load_samples,
    random_samples,
    read_samples_file,
    save_samples,
)
from modelconv.pipeline.sources import load_source


def spec_with(inputs, count=5, seed=0, **validation):
    return make_spec(
        "linear",
        inputs=inputs,
        validation={"samples": {"count": count, "seed": seed}, **validation},
    )


def test_random_samples_are_deterministic_per_seed():
    inputs = [{"name": "x", "shape": ["1..9", 8]}]
    first = random_samples(spec_with(inputs, seed=3))
    again = random_samples(spec_with(inputs, seed=3))
    other = random_samples(spec_with(inputs, seed=4))
    for left, right in zip(first, again):
        assert np.array_equal(left.inputs["x"], right.inputs["x"])
    assert not np.array_equal(first[2].inputs["x"], other[2].inputs["x"])


def test_ranged_dimensions_take_min_max_and_values_between():
    samples = random_samples(spec_with([{"name": "x", "shape": ["2..40", 8]}], count=6))
    sizes = [sample.inputs["x"].shape[0] for sample in samples]
    assert sizes[0] == 2
    assert sizes[1] == 40
    assert all(2 < size < 40 for size in sizes[2:])


def test_inputs_sharing_a_range_get_the_same_size():
    inputs = [
        {"name": "ids", "shape": [1, "1..64"], "dtype": "int64"},
        {"name": "mask", "shape": [1, "1..64"]},
    ]
    for sample in random_samples(spec_with(inputs, count=4)):
        assert sample.inputs["ids"].shape == sample.inputs["mask"].shape


def test_value_ranges_and_dtypes_follow_the_spec():
    inputs = [
        {"name": "ids", "shape": [200], "dtype": "int64", "values": {"min": 5, "max": 9}},
        {"name": "counts", "shape": [200], "dtype": "int32"},
        {"name": "flags", "shape": [200], "dtype": "bool"},
        {"name": "level", "shape": [200], "values": {"min": -0.5, "max": 0.5}},
        {"name": "noise", "shape": [2000]},
    ]
    sample = random_samples(spec_with(inputs, count=1))[0].inputs
    assert sample["ids"].dtype == np.int64
    assert sample["ids"].min() >= 5
    assert sample["ids"].max() <= 8
    assert sample["counts"].dtype == np.int32
    assert sample["counts"].min() >= 0
    assert sample["counts"].max() <= 9
    assert sample["flags"].dtype == np.bool_
    assert sample["flags"].any() and not sample["flags"].all()
    assert sample["level"].min() >= -0.5
    assert sample["level"].max() < 0.5
    assert abs(float(sample["noise"].std()) - 1.0) < 0.1


def test_image_inputs_get_pixels_and_the_preprocessed_tensor():
    inputs = [{
        "name": "image", "shape": [1, 3, 4, 4],
        "image": {"scale": 0.5, "bias": [1.0, 2.0, 3.0]},
    }]
    sample = random_samples(spec_with(inputs, count=1))[0]
    pixels = sample.pixels["image"]
    assert pixels.min() >= 0
    assert pixels.max() <= 255
    assert np.array_equal(pixels, np.round(pixels))
    assert np.allclose(sample.inputs["image"][0, 2], pixels[0, 2] * 0.5 + 3.0)
    assert sample.coreml_inputs()["image"] is pixels


@pytest.mark.parametrize(("layout", "channels", "bias", "expected"), [
    ("RGB", 3, [1.0, 2.0], "2 values, but the RGB layout has 3 channels: give one bias for"
                           " all channels or 3, one per channel"),
    ("G", 1, [1.0, 2.0], "2 values, but the G layout has 1 channel: give one bias"),
])
def test_image_bias_of_the_wrong_length_is_explained(layout, channels, bias, expected):
    inputs = [{
        "name": "image", "shape": [1, channels, 4, 4],
        "image": {"colorLayout": layout, "bias": bias},
    }]
    with pytest.raises(InvalidSpec) as error:
        random_samples(spec_with(inputs, count=1))
    assert expected in error.value.message


def test_samples_round_trip_through_safetensors(tmp_path):
    samples = [
        Sample(inputs={"x": np.ones((2, 3), np.float32)}, outputs={"y": np.zeros(4, np.float16)}),
        Sample(inputs={"x": np.full((1, 3), 2, np.float32)}, outputs={"y": np.ones(4, np.float16)},
               pixels={"image": np.zeros((1, 3, 2, 2), np.float32)}),
    ]
    loaded = load_samples(save_samples(samples, tmp_path / "samples.safetensors"))
    assert len(loaded) == 2
    assert np.array_equal(loaded[1].inputs["x"], samples[1].inputs["x"])
    assert loaded[0].outputs["y"].dtype == np.float16
    assert "image" in loaded[1].pixels


def test_reference_outputs_come_from_the_source_model(tmp_path):
    spec = spec_with([{"name": "x", "shape": ["1..3", 8]}], count=3)
    source = load_source(spec, tmp_path)
    samples = build_samples(spec, source, tmp_path)
    module = source.torch_module()
    import torch

    for sample in samples:
        expected = module(torch.from_numpy(sample.inputs["x"])).detach().numpy()
        assert np.array_equal(sample.outputs["y"], expected)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_samples_file_gives_one_sample_per_row(tmp_path, suffix):
    path = tmp_path / f"recorded{suffix}"
    data = {"x": np.arange(3 * 2 * 8, dtype=np.float64).reshape(3, 2, 8)}
    np.savez(path, **data) if suffix == ".npz" else save_file(data, str(path))
    spec = spec_with([{"name": "x", "shape": [2, 8]}], samplesFile={"uri": str(path)})
    samples = read_samples_file(spec, tmp_path)
    assert len(samples) == 3
    assert samples[2].inputs["x"].dtype == np.float32
    assert np.array_equal(samples[2].inputs["x"], data["x"][2].astype(np.float32))


def test_samples_file_with_pickled_objects_is_rejected(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    spec = spec_with([{"name": "x", "shape": [2]}], samplesFile={"uri": str(path)})
    with pytest.raises(InvalidSpec) as error:
        read_samples_file(spec, tmp_path)
    assert "validation.samplesFile" in error.value.message


def test_samples_file_with_the_wrong_shape_names_both(tmp_path):
    path = tmp_path / "recorded.npz"
    np.savez(path, x=np.zeros((3, 2, 7), np.float32))
    spec = spec_with([{"name": "x", "shape": [2, 8]}], samplesFile={"uri": str(path)})
    with pytest.raises(InvalidSpec) as error:
        read_samples_file(spec, tmp_path)
    assert "(3, 2, 7)" in error.value.message
    assert "[2, 8]" in error.value.message


def test_samples_file_missing_an_input_lists_what_it_has(tmp_path):
    path = tmp_path / "recorded.npz"
    np.savez(path, other=np.zeros((1, 2, 8), np.float32))
    spec = spec_with([{"name": "x", "shape": [2, 8]}], samplesFile={"uri": str(path)})
    with pytest.raises(InvalidSpec) as error:
        read_samples_file(spec, tmp_path)
    assert "'x'" in error.value.message
    assert "other" in error.value.message


def test_samples_file_directory_is_named_so(tmp_path):
    folder = tmp_path / "recorded"
    folder.mkdir()
    spec = spec_with([{"name": "x", "shape": [2]}], samplesFile={"uri": str(folder)})
    with pytest.raises(ConversionError) as error:
        read_samples_file(spec, tmp_path)
    assert "is a directory; give the path of the samples file" in error.value.message
    assert "model file" not in error.value.message
