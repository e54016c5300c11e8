"""Plain numpy references for the executor's tests, written from the MIL op definitions.

They loop over output positions where that keeps them obviously right; the tensors in the
tests are small.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def same_padding(size, kernel, stride, dilation=1, lower=False):
    """(before, after) padding of `same` / `same_lower` for one spatial axis."""
    dilated = (kernel - 1) * dilation + 1
    total = max(0, (math.ceil(size / stride) - 1) * stride + dilated - size)
    small, large = total // 2, total - total // 2
    return (large, small) if lower else (small, large)


def conv(x, weight, bias, strides, pads, dilations, groups):
    """Convolution of x [N, C, *D] with weight [O, C / groups, *K]; pads per axis (b, a)."""
    x = x.astype(np.float64)
    weight = weight.astype(np.float64)
    padded = np.pad(x, [(0, 0), (0, 0)] + list(pads))
    n, channels = x.shape[:2]
    out_channels, group_channels = weight.shape[:2]
    kernel = weight.shape[2:]
    out_sizes = [
        (padded.shape[2 + axis] - ((kernel[axis] - 1) * dilations[axis] + 1)) // strides[axis] + 1
        for axis in range(len(kernel))
    ]
    result = np.zeros((n, out_channels, *out_sizes))
    per_group = out_channels // groups
    for o in range(out_channels):
        group = o // per_group
        channels_in = slice(group * group_channels, (group + 1) * group_channels)
        for position in itertools.product(*[range(size) for size in out_sizes]):
            window = tuple(
                slice(p * s, p * s + (k - 1) * d + 1, d)
                for p, s, k, d in zip(position, strides, kernel, dilations)
            )
            patch = padded[(slice(None), channels_in) + window]
            result[(slice(None), o) + position] = (patch * weight[o]).reshape(n, -1).sum(axis=1)
        if bias is not None:
            result[:, o] += bias[o]
    return result


def conv_transpose(x, weight, bias, strides, dilations, groups):
    """Full transposed convolution (no cropping) of x [N, C, *D], weight [C, O / groups, *K]."""
    x = x.astype(np.float64)
    n, channels = x.shape[:2]
    per_group_out = weight.shape[1]
    per_group_in = channels // groups
    kernel = weight.shape[2:]
    sizes = [
        (x.shape[2 + axis] - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1
        for axis in range(len(kernel))
    ]
    result = np.zeros((n, per_group_out * groups, *sizes))
    for c in range(channels):
        group = c // per_group_in
        for position in itertools.product(*[range(size) for size in x.shape[2:]]):
            value = x[(slice(None), c) + position]
            for offset in itertools.product(*[range(k) for k in kernel]):
                target = tuple(p * s + o * d for p, s, o, d in zip(position, strides, offset,
                                                                   dilations))
                for o in range(per_group_out):
                    index = (slice(None), group * per_group_out + o) + target
                    result[index] += value * weight[(c, o) + offset]
    if bias is not None:
        result += bias.reshape([1, -1] + [1] * len(kernel))
    return result


def pool(x, kernel, strides, pads, reducer, pad_value=0.0):
    """Apply `reducer(window_values, valid_mask)` over each window of x [N, C, *D]."""
    padded = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + list(pads),
                    constant_values=pad_value)
    valid = np.pad(np.ones(x.shape[2:]), list(pads))
    out_sizes = [(padded.shape[2 + a] - kernel[a]) // strides[a] + 1 for a in range(len(kernel))]
    result = np.zeros(x.shape[:2] + tuple(out_sizes))
    for position in itertools.product(*[range(size) for size in out_sizes]):
        window = tuple(slice(p * s, p * s + k) for p, s, k in zip(position, strides, kernel))
        values = padded[(slice(None), slice(None)) + window].reshape(x.shape[0], x.shape[1], -1)
        mask = valid[window].reshape(-1)
        result[(slice(None), slice(None)) + position] = reducer(values, mask)
    return result


def linear_interpolate(x, axis, coords):
    """Sample x along `axis` at `coords` (clamped) with linear interpolation."""
    size = x.shape[axis]
    coords = np.clip(coords, 0, size - 1)
    low = np.floor(coords).astype(int)
    high = np.minimum(low + 1, size - 1)
    fraction = coords - low
    shape = [1] * x.ndim
    shape[axis] = -1
    first = np.take(x, low, axis=axis)
    second = np.take(x, high, axis=axis)
    return first + (second - first) * fraction.reshape(shape)


def sampling_grid(mode, size_in, size_out):
    """Grid points of the resize_bilinear sampling modes, from the op's documentation."""
    i = np.arange(size_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if size_out == 1:
            return np.array([(size_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0])
        return i * (size_in - 1) / (size_out - 1)
    if mode == "DEFAULT":
        return i * (size_in - size_in / size_out) / (size_out - 1) if size_out > 1 else i * 0
    if mode == "OFFSET_CORNERS":
        delta = max(1, size_in - 1) / size_out
        return 0.5 * delta + i * delta
    if mode == "UNALIGN_CORNERS":
        spacing = size_in / size_out
        return i * spacing + 0.5 * spacing - 0.5
    raise ValueError(mode)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def lstm(x, h, c, weight_ih, weight_hh, bias, peephole=None, clip=None):
    """MIL lstm over x [S, B, I] with gates ordered i, f, o, z; returns (sequence, h, c)."""
    hidden = weight_hh.shape[1]
    outputs = []
    for step in range(x.shape[0]):
        gates = x[step] @ weight_ih.T + h @ weight_hh.T + (0 if bias is None else bias)
        g_i, g_f, g_o, g_z = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
        if peephole is not None:
            g_i = g_i + peephole[:hidden] * c
            g_f = g_f + peephole[hidden:2 * hidden] * c
        c = sigmoid(g_f) * c + sigmoid(g_i) * np.tanh(g_z)
        if clip is not None:
            c = np.clip(c, -clip, clip)
        if peephole is not None:
            g_o = g_o + peephole[2 * hidden:] * c
        h = sigmoid(g_o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs), h, c
