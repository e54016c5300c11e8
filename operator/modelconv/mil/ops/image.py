"""Resizing, cropping and resampling (coremltools `ops/defs/iOS15..17/image_resizing.py`).

Bilinear ops sample each resized axis on the grid that their sampling mode defines (see
`sampling_grid`), clamped to [0, size - 1], and interpolate linearly between the two nearest
elements, in float32 for float16 inputs. Nearest-neighbor ops pick:

- `upsample_nearest_neighbor`: element floor(i / scale);
- `resize_nearest_neighbor` and `resize` with DEFAULT sampling: floor((i + 0.5) * in / out),
  the half-pixel rule of TensorFlow, whose frontend maps half-pixel resizing onto these ops;
- `resize` with another sampling mode: the element nearest to that mode's grid point.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import op

SAMPLING_MODES = ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS",
                  "UNALIGN_CORNERS")


def sampling_grid(ctx, mode: str, size_in: int, size_out: int) -> torch.Tensor:
    """Return the source coordinate of each output element, before clamping."""
    index = torch.arange(size_out, dtype=torch.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if size_out == 1:
            center = (size_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0
            return torch.full((1,), center, dtype=torch.float64)
        return index * ((size_in - 1) / (size_out - 1))
    if mode == "DEFAULT":
        return index * (size_in / size_out)
    if mode == "OFFSET_CORNERS":
        delta = max(1, size_in - 1) / size_out
        return 0.5 * delta + index * delta
    if mode == "UNALIGN_CORNERS":
        spacing = size_in / size_out
        return index * spacing + 0.5 * spacing - 0.5
    raise ctx.unsupported(f"sampling_mode {mode!r}")


def _interpolate_axis(x: torch.Tensor, axis: int, coords: torch.Tensor) -> torch.Tensor:
    size = x.shape[axis]
    coords = coords.clamp(0, size - 1)
    low = coords.floor().long().clamp(0, size - 1)
    high = (low + 1).clamp(max=size - 1)
    shape = [1] * x.dim()
    shape[axis] = -1
    weight = (coords - low).to(x.dtype).reshape(shape)
    first = x.index_select(axis, low)
    return first + (x.index_select(axis, high) - first) * weight


def _linear_resize(x: torch.Tensor, grids: dict[int, torch.Tensor]) -> torch.Tensor:
    """Resize each axis in `grids` by linear interpolation at the grid's coordinates."""
    work = x.float() if x.dtype == torch.float16 else x
    for axis, coords in grids.items():
        work = _interpolate_axis(work, axis, coords)
    return work.to(x.dtype)


def _bilinear(ctx, x, height, width, mode):
    grids = {
        x.dim() - 2: sampling_grid(ctx, mode, x.shape[-2], height),
        x.dim() - 1: sampling_grid(ctx, mode, x.shape[-1], width),
    }
    return _linear_resize(x, grids)


def _nearest(x: torch.Tensor, axis: int, indices: torch.Tensor) -> torch.Tensor:
    return x.index_select(axis, indices.clamp(0, x.shape[axis] - 1))


def _half_pixel_indices(size_in: int, size_out: int) -> torch.Tensor:
    index = torch.arange(size_out, dtype=torch.float64)
    return torch.floor((index + 0.5) * (size_in / size_out)).long()


@op("upsample_nearest_neighbor", params=("scale_factor_height", "scale_factor_width"))
def upsample_nearest_neighbor(ctx, x, scale_factor_height=1, scale_factor_width=1):
    result = x
    for axis, scale in ((x.dim() - 2, scale_factor_height), (x.dim() - 1, scale_factor_width)):
        size_out = math.floor(x.shape[axis] * scale)
        source = torch.floor(torch.arange(size_out, dtype=torch.float64) / scale).long()
        result = _nearest(result, axis, source)
    return result


@op("resize_nearest_neighbor", params=("target_size_height", "target_size_width"))
def resize_nearest_neighbor(ctx, x, target_size_height, target_size_width):
    result = x
    for axis, size_out in ((x.dim() - 2, target_size_height), (x.dim() - 1, target_size_width)):
        result = _nearest(result, axis, _half_pixel_indices(x.shape[axis], size_out))
    return result


@op("upsample_bilinear",
    params=("scale_factor_height", "scale_factor_width", "align_corners", "half_pixel_centers"))
def upsample_bilinear(ctx, x, scale_factor_height=1, scale_factor_width=1, align_corners=True,
                      half_pixel_centers=None):
    height = math.floor(x.shape[-2] * scale_factor_height)
    width = math.floor(x.shape[-1] * scale_factor_width)
    if half_pixel_centers is None:
        half_pixel_centers = not align_corners
    # The grid is computed from the input and output sizes, not from the scale factors.
    if align_corners:
        mode = "STRICT_ALIGN_CORNERS"
    else:
        mode = "UNALIGN_CORNERS" if half_pixel_centers else "DEFAULT"
    return _bilinear(ctx, x, height, width, mode)


@op("resize_bilinear", params=("target_size_height", "target_size_width", "sampling_mode"))
def resize_bilinear(ctx, x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT"):
    return _bilinear(ctx, x, target_size_height, target_size_width, sampling_mode)


@op("resize", params=("shape", "resized_dims", "interpolation_mode", "sampling_mode"))
def resize(ctx, x, shape, resized_dims, interpolation_mode="LINEAR", sampling_mode="DEFAULT"):
    count = int(resized_dims)
    if count > len(shape) or len(shape) > x.dim():
        raise ctx.invalid(f"shape {shape} and resized_dims {count} do not fit x of rank {x.dim()}")
    result = x
    for offset in range(count, 0, -1):
        axis = x.dim() - offset
        requested = int(shape[len(shape) - offset])
        size_out = requested if requested != 0 else x.shape[axis]
        result = _resize_axis(ctx, result, axis, size_out, interpolation_mode, sampling_mode)
    return result


def _resize_axis(ctx, x, axis, size_out, interpolation_mode, sampling_mode):
    size_in = x.shape[axis]
    if interpolation_mode == "LINEAR":
        return _linear_resize(x, {axis: sampling_grid(ctx, sampling_mode, size_in, size_out)})
    if interpolation_mode != "NEAREST_NEIGHBOR":
        raise ctx.unsupported(f"interpolation_mode {interpolation_mode!r}")
    if sampling_mode == "DEFAULT":
        return _nearest(x, axis, _half_pixel_indices(size_in, size_out))
    # NOTE: Core ML's nearest rule for the other sampling modes is not documented. Taking the
    # element nearest to the mode's grid point (halves rounded up) is an assumption.
    coords = sampling_grid(ctx, sampling_mode, size_in, size_out).clamp(0, size_in - 1)
    return _nearest(x, axis, torch.floor(coords + 0.5).long())


@op("crop", params=("crop_height", "crop_width"))
def crop(ctx, x, crop_height, crop_width):
    height, width = x.shape[-2], x.shape[-1]
    return x[..., crop_height[0]: height - crop_height[1], crop_width[0]: width - crop_width[1]]


@op("crop_resize",
    params=("target_height", "target_width", "normalized_coordinates", "spatial_scale",
            "box_coordinate_mode", "sampling_mode", "pad_value"))
def crop_resize(ctx, x, roi=None, boxes=None, box_indices=None, target_height=1, target_width=1,
                normalized_coordinates=False, spatial_scale=1.0,
                box_coordinate_mode="CORNERS_HEIGHT_FIRST", sampling_mode="DEFAULT",
                pad_value=0.0):
    if sampling_mode not in ("ALIGN_CORNERS", "STRICT_ALIGN_CORNERS"):
        # The op definition gives no grid inside a box for the other sampling modes.
        raise ctx.unsupported(f"sampling_mode {sampling_mode!r}")
    if boxes is None:
        # iOS 15/16: roi [N, 1, 4 or 5, 1, 1]; with 4 coordinates every image is cropped.
        flat = roi.reshape(roi.shape[0], -1).double()
        if flat.shape[1] == 5:
            indices, corners = flat[:, 0].long(), flat[:, 1:]
        else:
            indices, corners = None, flat
    else:
        corners = boxes.double()
        indices = torch.arange(boxes.shape[0]) if box_indices is None else box_indices.long()
    h1, w1, h2, w2 = _box_corners(ctx, corners, box_coordinate_mode)
    scale_h = (x.shape[-2] - 1) if normalized_coordinates else 1.0
    scale_w = (x.shape[-1] - 1) if normalized_coordinates else 1.0
    rows = [h1 * scale_h * spatial_scale, h2 * scale_h * spatial_scale]
    columns = [w1 * scale_w * spatial_scale, w2 * scale_w * spatial_scale]
    images = x if indices is None else None
    crops = []
    for box in range(corners.shape[0]):
        source = images if images is not None else x[indices[box]].unsqueeze(0)
        crops.append(_crop_box(source, rows, columns, box, target_height, target_width,
                               pad_value))
    # iOS 17 returns [N, C, H, W]; iOS 15/16 return [N, B, C, H, W], B = 1 with box indices.
    result = torch.stack(crops)
    return result.squeeze(1) if boxes is not None else result


def _box_corners(ctx, corners, mode):
    first, second, third, fourth = corners.unbind(1)
    if mode == "CORNERS_HEIGHT_FIRST":
        return first, second, third, fourth
    if mode == "CORNERS_WIDTH_FIRST":
        return second, first, fourth, third
    if mode == "CENTER_SIZE_HEIGHT_FIRST":
        return first - third / 2, second - fourth / 2, first + third / 2, second + fourth / 2
    if mode == "CENTER_SIZE_WIDTH_FIRST":
        return second - fourth / 2, first - third / 2, second + fourth / 2, first + third / 2
    raise ctx.unsupported(f"box_coordinate_mode {mode!r}")


def _crop_box(images, rows, columns, box, height, width, pad_value):
    """Sample one box from every image in `images` (TensorFlow crop_and_resize grid)."""

    def grid(start, end, count):
        if count == 1:
            return torch.full((1,), float((start + end) / 2), dtype=torch.float64)
        return start + torch.arange(count, dtype=torch.float64) * ((end - start) / (count - 1))

    row_grid = grid(rows[0][box], rows[1][box], height)
    column_grid = grid(columns[0][box], columns[1][box], width)
    work = images.float() if images.dtype == torch.float16 else images
    sampled = _linear_resize(work, {work.dim() - 2: row_grid, work.dim() - 1: column_grid})
    inside = (
        ((row_grid >= 0) & (row_grid <= images.shape[-2] - 1)).reshape(-1, 1)
        & ((column_grid >= 0) & (column_grid <= images.shape[-1] - 1)).reshape(1, -1)
    )
    return torch.where(inside, sampled, torch.tensor(pad_value, dtype=sampled.dtype)).to(
        images.dtype
    )


@op("resample",
    params=("sampling_mode", "padding_mode", "padding_value", "coordinates_mode", "align_corners"))
def resample(ctx, x, coordinates, sampling_mode, padding_mode, padding_value, coordinates_mode,
             align_corners):
    if sampling_mode not in ("bilinear", "nearest"):
        raise ctx.unsupported(f"sampling_mode {sampling_mode!r}")
    work = x.float() if x.dtype == torch.float16 else x
    coords = coordinates.to(torch.float64)
    height, width = x.shape[-2], x.shape[-1]
    columns = _pixel_coordinates(ctx, coords[..., 0], width, coordinates_mode, align_corners)
    rows = _pixel_coordinates(ctx, coords[..., 1], height, coordinates_mode, align_corners)
    if padding_mode in ("reflection", "symmetric"):
        columns = _fold(columns, width, padding_mode)
        rows = _fold(rows, height, padding_mode)
    elif padding_mode not in ("constant", "border"):
        raise ctx.unsupported(f"padding_mode {padding_mode!r}")
    # Pixel centers map to grid_sample's align_corners=True coordinates.
    grid = torch.stack([_to_unit(columns, width), _to_unit(rows, height)], dim=-1).to(work.dtype)
    torch_padding = "zeros" if padding_mode == "constant" else "border"
    offset = float(padding_value) if padding_mode == "constant" else 0.0
    # Sampling x - v with zero padding and adding v back pads with the constant v.
    sampled = F.grid_sample(work - offset, grid, mode=sampling_mode, padding_mode=torch_padding,
                            align_corners=True) + offset
    return sampled.to(x.dtype)


def _pixel_coordinates(ctx, values, size, mode, align_corners):
    """Convert coordinates to pixel units, where pixel i's center is at i."""
    if mode == "unnormalized":
        return values
    if mode == "normalized_zero_to_one":
        values = values * 2 - 1
    elif mode != "normalized_minus_one_to_one":
        raise ctx.unsupported(f"coordinates_mode {mode!r}")
    if align_corners:
        return (values + 1) / 2 * (size - 1)
    return ((values + 1) * size - 1) / 2


def _fold(pixels, size, padding_mode):
    if size == 1:
        return torch.zeros_like(pixels)
    if padding_mode == "reflection":
        # Mirror about the first and last pixel centers: period 2 * (size - 1).
        period = 2 * (size - 1)
        folded = torch.remainder(pixels, period)
        return torch.where(folded > size - 1, period - folded, folded)
    # symmetric: mirror about the outer pixel edges, -0.5 and size - 0.5.
    period = 2 * size
    folded = torch.remainder(pixels + 0.5, period)
    return torch.where(folded > size, period - folded, folded) - 0.5


def _to_unit(pixels, size):
    if size == 1:
        return torch.zeros_like(pixels)
    return pixels / (size - 1) * 2 - 1
