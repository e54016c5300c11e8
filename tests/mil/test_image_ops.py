"""Resize, crop and resample ops against grids written from the op documentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mil_reference import linear_interpolate, sampling_grid
from mil_testing import IOS15, IOS16, IOS17, mb, random, run_fp16, run_ops


def test_reference_grid_matches_documentation():
    # The op documentation lists these grids for Xin = 2, Xout = 5; the test reference must
    # reproduce them before it can judge the executor.
    assert np.allclose(sampling_grid("UNALIGN_CORNERS", 2, 5).clip(0, 1), [0, 0.1, 0.5, 0.9, 1])
    assert np.allclose(sampling_grid("STRICT_ALIGN_CORNERS", 2, 5), [0, 0.25, 0.5, 0.75, 1])
    assert np.allclose(sampling_grid("DEFAULT", 2, 5).clip(0, 1), [0, 0.4, 0.8, 1, 1])
    assert np.allclose(sampling_grid("OFFSET_CORNERS", 2, 5), [0.1, 0.3, 0.5, 0.7, 0.9])


@pytest.mark.parametrize("mode", ["STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT",
                                  "OFFSET_CORNERS", "UNALIGN_CORNERS"])
@pytest.mark.parametrize("size", [(7, 5), (2, 3), (1, 1)])
def test_resize_bilinear_samples_the_mode_grid(tmp_path, mode, size):
    x = random((1, 2, 4, 3), seed=130)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.resize_bilinear(x=x, target_size_height=size[0], target_size_width=size[1],
                                     sampling_mode=mode),
        {"x": x},
    )
    expected = linear_interpolate(x.astype(np.float64), 2, sampling_grid(mode, 4, size[0]))
    expected = linear_interpolate(expected, 3, sampling_grid(mode, 3, size[1]))
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("align_corners,half_pixel,opset", [
    (True, None, IOS15), (False, None, IOS15), (False, False, IOS16), (False, True, IOS16)])
def test_upsample_bilinear_uses_output_sizes_for_its_grid(tmp_path, align_corners, half_pixel,
                                                          opset):
    x = random((1, 1, 3, 4), seed=131)
    arguments = {"scale_factor_height": 2.5, "scale_factor_width": 2.0,
                 "align_corners": align_corners}
    if half_pixel is not None:
        arguments["half_pixel_centers"] = half_pixel
    (result,) = run_ops(tmp_path, lambda x: mb.upsample_bilinear(x=x, **arguments), {"x": x},
                        opset=opset)
    if align_corners:
        mode = "STRICT_ALIGN_CORNERS"
    else:
        mode = "UNALIGN_CORNERS" if half_pixel in (None, True) else "DEFAULT"
    height = math.floor(3 * 2.5)
    expected = linear_interpolate(x.astype(np.float64), 2, sampling_grid(mode, 3, height))
    expected = linear_interpolate(expected, 3, sampling_grid(mode, 4, 8))
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


def test_upsample_nearest_neighbor_repeats_elements(tmp_path):
    x = random((1, 2, 2, 3), seed=132)
    integer, fractional = run_ops(
        tmp_path,
        lambda x: [mb.upsample_nearest_neighbor(x=x, scale_factor_height=2, scale_factor_width=3),
                   mb.upsample_nearest_neighbor(x=x, scale_factor_height=1.5,
                                                scale_factor_width=2.0)],
        {"x": x},
    )
    np.testing.assert_array_equal(integer, x.repeat(2, axis=2).repeat(3, axis=3))
    # Output element i reads input element floor(i / scale).
    rows = np.floor(np.arange(3) / 1.5).astype(int)
    np.testing.assert_array_equal(fractional, x[:, :, rows].repeat(2, axis=3))


def test_resize_nearest_neighbor_uses_half_pixel_centers(tmp_path):
    x = random((1, 1, 4, 6), seed=133)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.resize_nearest_neighbor(x=x, target_size_height=3, target_size_width=9),
        {"x": x},
    )
    rows = np.minimum(np.floor((np.arange(3) + 0.5) * 4 / 3).astype(int), 3)
    columns = np.minimum(np.floor((np.arange(9) + 0.5) * 6 / 9).astype(int), 5)
    np.testing.assert_array_equal(result, x[:, :, rows][:, :, :, columns])


def test_resize_reproduces_the_coremltools_reference_outputs(tmp_path):
    # Expected values from coremltools' own iOS 17 resize tests (recorded on Apple hardware).
    nearest_input = np.array([-6.174, 9.371], dtype=np.float32).reshape(1, 1, 1, 2, 1)
    linear_input = np.array([0, 1], dtype=np.float32).reshape(1, 1, 2)
    (nearest,) = run_ops(
        tmp_path,
        lambda x: mb.resize(x=x, shape=[1, 1, 3, 2], resized_dims=np.uint32(2),
                            interpolation_mode="NEAREST_NEIGHBOR", sampling_mode="DEFAULT"),
        {"x": nearest_input}, opset=IOS17,
    )
    (linear,) = run_ops(
        tmp_path,
        lambda x: mb.resize(x=x, shape=[1, 1, 5], resized_dims=np.uint32(2),
                            interpolation_mode="LINEAR", sampling_mode="DEFAULT"),
        {"x": linear_input}, opset=IOS17,
    )
    np.testing.assert_allclose(
        nearest.reshape(-1), [-6.174, -6.174, 9.371, 9.371, 9.371, 9.371], rtol=1e-6)
    np.testing.assert_allclose(linear.reshape(-1), [0, 0.4, 0.8, 1, 1], rtol=1e-6)


def test_resize_to_runtime_shape_with_zero(tmp_path):
    x = random((1, 2, 3, 4), seed=134)
    target = np.array([0, 6], dtype=np.int32)
    (result,) = run_ops(
        tmp_path,
        lambda x, t: mb.resize(x=x, shape=t, resized_dims=np.uint32(2),
                               interpolation_mode="LINEAR", sampling_mode="ALIGN_CORNERS"),
        {"x": x, "t": target}, opset=IOS17,
    )
    expected = linear_interpolate(x.astype(np.float64), 3, sampling_grid("ALIGN_CORNERS", 4, 6))
    assert result.shape == (1, 2, 3, 6)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


def test_crop_cuts_the_spatial_borders(tmp_path):
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    (result,) = run_ops(tmp_path, lambda x: mb.crop(x=x, crop_height=[0, 1], crop_width=[1, 1]),
                        {"x": x})
    np.testing.assert_array_equal(result.reshape(-1), [1, 2, 5, 6, 9, 10])


def test_crop_resize_align_corners_grid(tmp_path):
    x = random((2, 1, 5, 6), seed=135)
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.2, 0.1, 0.6, 0.9]], dtype=np.float32)
    box_indices = np.array([1, 0], dtype=np.int32)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.crop_resize(x=x, boxes=boxes, box_indices=box_indices, target_height=3,
                                 target_width=4, normalized_coordinates=True,
                                 box_coordinate_mode="CORNERS_HEIGHT_FIRST",
                                 sampling_mode="ALIGN_CORNERS"),
        {"x": x}, opset=IOS17,
    )
    assert result.shape == (2, 1, 3, 4)
    for k, (h1, w1, h2, w2) in enumerate(boxes.astype(np.float64)):
        rows = h1 * 4 + np.arange(3) * (h2 - h1) * 4 / 2
        columns = w1 * 5 + np.arange(4) * (w2 - w1) * 5 / 3
        image = x[box_indices[k]].astype(np.float64)
        expected = linear_interpolate(linear_interpolate(image, 1, rows), 2, columns)
        np.testing.assert_allclose(result[k], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("padding_mode", ["constant", "border", "reflection", "symmetric"])
def test_resample_bilinear_pads_as_configured(tmp_path, padding_mode):
    x = random((1, 1, 3, 4), seed=136)
    coordinates = np.array([[[[-1.5, 0.5], [0.25, 1.0]], [[3.75, 2.5], [5.0, -0.5]]]],
                           dtype=np.float32)
    (result,) = run_ops(
        tmp_path,
        lambda x, c: mb.resample(x=x, coordinates=c, sampling_mode="bilinear",
                                 padding_mode=padding_mode, padding_value=0.5,
                                 coordinates_mode="unnormalized", align_corners=True),
        {"x": x, "c": coordinates}, opset=IOS16,
    )
    image = x[0, 0].astype(np.float64)

    def value(row, column):
        if 0 <= row < 3 and 0 <= column < 4:
            return image[row, column]
        if padding_mode == "constant":
            return 0.5
        if padding_mode == "border":
            return image[min(max(row, 0), 2), min(max(column, 0), 3)]
        size_r, size_c = 3, 4
        if padding_mode == "reflection":
            return image[_reflect(row, size_r), _reflect(column, size_c)]
        return image[_symmetric(row, size_r), _symmetric(column, size_c)]

    expected = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            column, row = coordinates[0, i, j].astype(np.float64)
            r0, c0 = math.floor(row), math.floor(column)
            fr, fc = row - r0, column - c0
            expected[i, j] = (
                (1 - fr) * (1 - fc) * value(r0, c0) + (1 - fr) * fc * value(r0, c0 + 1)
                + fr * (1 - fc) * value(r0 + 1, c0) + fr * fc * value(r0 + 1, c0 + 1)
            )
    np.testing.assert_allclose(result[0, 0], expected, rtol=1e-5, atol=1e-6)


def _reflect(index, size):
    # |1, 2, 3| -> 2, 3, 2, 1, 2, 3, 2, 1: the border element is not repeated.
    period = 2 * (size - 1)
    index = index % period
    return period - index if index > size - 1 else index


def _symmetric(index, size):
    # |1, 2, 3| -> 3, 2, 1, 1, 2, 3, 3, 2, 1: the border element is repeated.
    period = 2 * size
    index = index % period
    return period - 1 - index if index >= size else index


def test_resize_in_fp16_rounds_once(tmp_path):
    x = random((1, 1, 3, 3), seed=137)
    (result,) = run_fp16(
        tmp_path,
        lambda x: mb.resize_bilinear(x=x, target_size_height=5, target_size_width=5,
                                     sampling_mode="ALIGN_CORNERS"),
        {"x": x},
    )
    x16 = x.astype(np.float16).astype(np.float64)
    expected = linear_interpolate(x16, 2, sampling_grid("ALIGN_CORNERS", 3, 5))
    expected = linear_interpolate(expected, 3, sampling_grid("ALIGN_CORNERS", 3, 5))
    np.testing.assert_array_equal(result, expected.astype(np.float16).astype(np.float32))
