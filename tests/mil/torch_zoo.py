"""Small PyTorch models covering the layer families the executor must handle, and their
conversion to saved Core ML programs (torch.export first, jit.trace where export fails)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mil_testing import ct
from torch import nn

from modelconv.mil import load_program

_counter = itertools.count()


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Hardswish(),
            nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU6(),
            nn.MaxPool2d(2), nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.GELU(),
            nn.AvgPool2d(2, ceil_mode=True),
        )
        self.head = nn.Linear(16, 10)

    def forward(self, image):
        return torch.softmax(self.head(self.features(image).mean(dim=(2, 3))), dim=-1)


class Decoder(nn.Module):
    """Transposed convolutions, pixel shuffle and interpolation, as in segmentation heads."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 8, 4, stride=2, padding=1)
        self.shuffle = nn.Conv2d(8, 16, 3, padding=1)
        self.norm = nn.InstanceNorm2d(4, affine=True)

    def forward(self, features):
        x = torch.relu(self.up(features))
        x = F.pixel_shuffle(self.shuffle(x), 2)
        bilinear = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        corners = F.interpolate(x, size=(13, 11), mode="bilinear", align_corners=True)
        nearest = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.norm(bilinear + nearest), corners


class Attention(nn.Module):
    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens, mask):
        batch, length, dim = tokens.shape
        q, k, v = self.qkv(self.norm(tokens)).chunk(3, dim=-1)
        split = lambda t: t.reshape(batch, length, self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        scores = q @ k.transpose(-1, -2) / (dim // self.heads) ** 0.5
        scores = scores + (1.0 - mask[:, None, None, :]) * -10000.0
        attended = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch, length, dim)
        return tokens + self.out(attended)


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 8, num_layers=2, bidirectional=True)
        self.gru = nn.GRU(16, 5)

    def forward(self, sequence):
        hidden, _ = self.lstm(sequence)
        output, state = self.gru(hidden)
        return output, state


class EinsumAndNorms(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 4, 5))
        self.norm = nn.LayerNorm([5])
        self.group = nn.GroupNorm(1, 3)

    def forward(self, x):
        mixed = torch.einsum("bij,jkl->bikl", x, self.weight)
        mixed = self.norm(mixed)
        batched = torch.einsum("bikl,bikm->bilm", mixed, mixed)
        return self.group(batched), torch.cumsum(x, dim=1), torch.topk(x, 2, dim=-1).values


class RangedSequence(nn.Module):
    """Conv1d, gather and reductions over a sequence whose length varies per call."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 12)
        self.conv = nn.Conv1d(12, 12, 3, padding=1)
        self.proj = nn.Linear(12, 4)

    def forward(self, ids):
        x = self.embed(ids).transpose(1, 2)
        x = F.silu(self.conv(x)).transpose(1, 2)
        weights = torch.softmax(self.proj(x).mean(dim=-1), dim=-1)
        return (x * weights.unsqueeze(-1)).sum(dim=1), x.amax(dim=1)


@dataclass
class ZooCase:
    """A model with example inputs; `ranged` maps an input name to (axis, lower, upper)."""

    build: type
    inputs: dict
    ranged: dict = field(default_factory=dict)
    trace: bool = False


def _seeded(shape, seed, low=-1.0, high=1.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator) * (high - low) + low


ZOO = {
    "convnet": ZooCase(ConvNet, {"image": _seeded((1, 3, 32, 32), 1)}),
    "decoder": ZooCase(Decoder, {"features": _seeded((1, 4, 5, 6), 2)}),
    "attention": ZooCase(Attention, {"tokens": _seeded((2, 7, 32), 3),
                                     "mask": torch.tensor([[1.0] * 7, [1.0] * 4 + [0.0] * 3])}),
    "recurrent": ZooCase(Recurrent, {"sequence": _seeded((5, 2, 6), 4)}, trace=True),
    "einsum_norms": ZooCase(EinsumAndNorms, {"x": _seeded((2, 3, 6), 5)}),
    "ranged_sequence": ZooCase(RangedSequence,
                               {"ids": torch.randint(0, 50, (1, 9),
                                                     generator=torch.Generator().manual_seed(6))},
                               ranged={"ids": (1, 2, 64)}),
}


def build_model(case: ZooCase) -> nn.Module:
    torch.manual_seed(0)
    model = case.build().eval()
    # Random running statistics, so batch norms do more than pass values through.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return model


def convert(model: nn.Module, inputs: dict, folder: Path, precision: str, ranged=None,
            trace: bool = False, decompose: bool = True) -> Path:
    """Convert `model` with coremltools and save it; return the .mlpackage path.

    The torch.export path runs the default core ATen decompositions, or none with
    `decompose=False`; `trace=True` uses jit.trace instead.
    """
    ranged = ranged or {}
    example = tuple(inputs.values())
    types = []
    for name, value in inputs.items():
        shape = list(value.shape)
        if name in ranged:
            axis, lower, upper = ranged[name]
            shape[axis] = ct.RangeDim(lower, upper, value.shape[axis])
        dtype = np.int32 if not value.dtype.is_floating_point else np.float32
        types.append(ct.TensorType(name=name, shape=shape, dtype=dtype))
    if trace:
        source = torch.jit.trace(model, example)
    else:
        dynamic = None
        if ranged:
            # Inputs with the same range share one export Dim, so torch.export may assume
            # their sizes are equal (an attention mask and its token ids).
            shared = {bounds: torch.export.Dim(f"dim_{index}", min=bounds[1], max=bounds[2])
                      for index, bounds in enumerate(sorted(set(ranged.values())))}
            dynamic = {name: ({ranged[name][0]: shared[ranged[name]]} if name in ranged else None)
                       for name in inputs}
        exported = torch.export.export(model, example, dynamic_shapes=dynamic)
        source = exported.run_decompositions() if decompose else exported.run_decompositions({})
    compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    converted = ct.convert(source, inputs=types, convert_to="mlprogram", compute_precision=compute)
    path = Path(folder) / f"model_{next(_counter)}.mlpackage"
    converted.save(str(path))
    return path


def converted_program(case: ZooCase, folder: Path, precision: str):
    model = build_model(case)
    return model, load_program(convert(model, case.inputs, folder, precision, case.ranged,
                                       case.trace))


def reference_outputs(model: nn.Module, inputs: dict) -> list[np.ndarray]:
    with torch.no_grad():
        outputs = model(*inputs.values())
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return [output.numpy() for output in outputs]


def numpy_inputs(inputs: dict) -> dict:
    return {name: value.numpy() for name, value in inputs.items()}
