"""Small synthetic models for the pipeline tests, importable as factory entrypoints.

Each factory builds a tiny module with seeded weights; the tests refer to them as
`conversion_zoo:<name>` in the ModelConversion spec, as a user names their own factory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvNet(nn.Module):
    """Convolution, batch norm, pooling and a linear head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(),
        )
        self.head = nn.Linear(8, 4)

    def forward(self, image):
        return self.head(self.features(image).mean(dim=(2, 3)))


class Attention(nn.Module):
    """Multi-head self-attention with layer norm over a ranged sequence length."""

    def __init__(self, width: int = 16, heads: int = 2):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, tokens):
        normed = self.norm(tokens)
        attended, _ = self.attention(normed, normed, normed, need_weights=False)
        return tokens + attended


class Recurrent(nn.Module):
    """An LSTM returning its sequence output and final hidden state."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 8, batch_first=True)

    def forward(self, sequence):
        output, (hidden, _) = self.lstm(sequence)
        return output, hidden


class Interpolation(nn.Module):
    """Bilinear upsampling between two convolutions."""

    def __init__(self):
        super().__init__()
        self.before = nn.Conv2d(3, 4, 3, padding=1)
        self.after = nn.Conv2d(4, 2, 1)

    def forward(self, image):
        upsampled = F.interpolate(self.before(image), scale_factor=2, mode="bilinear")
        return self.after(upsampled)


class Bilinear(nn.Module):
    """A bilinear form written with einsum."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(5, 5) * 0.3)

    def forward(self, left, right):
        return torch.einsum("bi,ij,bj->b", left, self.weight, right)


class TokenClassifier(nn.Module):
    """Embedding, layer norm and a classifier over token ids of ranged length."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(50, 12)
        self.norm = nn.LayerNorm(12)
        self.classifier = nn.Linear(12, 3)

    def forward(self, ids, mask):
        hidden = self.norm(self.embedding(ids)) * mask.unsqueeze(-1)
        return self.classifier(hidden)


# --- the converter fault patterns ---------------------------------------------------------


class Diagonal(nn.Module):
    def forward(self, x):
        return torch.diagonal(x)


class UpperTriangle(nn.Module):
    def forward(self, x):
        return torch.triu(x, diagonal=1)


class OuterEinsum(nn.Module):
    def forward(self, t, f):
        return torch.einsum("...,f->...f", t, f)


class MaskOr(nn.Module):
    def forward(self, x, y):
        mask = x > 0
        mask |= y > 0
        return mask.float()


class Bicubic(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bicubic")


class MaskedSoftmax(nn.Module):
    """Softmax of scores plus a constant mask whose row 2 holds the float32 minimum."""

    def __init__(self, size: int = 4):
        super().__init__()
        mask = torch.zeros(size, size)
        mask[2, :] = torch.finfo(torch.float32).min
        self.register_buffer("mask", mask)

    def forward(self, scores):
        return torch.softmax(scores + self.mask, dim=-1)


class Linear(nn.Module):
    def __init__(self, features: int = 8, classes: int = 4):
        super().__init__()
        self.layer = nn.Linear(features, classes)

    def forward(self, x):
        return torch.relu(self.layer(x))


def convnet():
    return ConvNet()


def attention():
    return Attention()


def recurrent():
    return Recurrent()


def interpolation():
    return Interpolation()


def bilinear():
    return Bilinear()


def token_classifier():
    return TokenClassifier()


def diagonal():
    return Diagonal()


def upper_triangle():
    return UpperTriangle()


def outer_einsum():
    return OuterEinsum()


def mask_or():
    return MaskOr()


def bicubic():
    return Bicubic()


def masked_softmax():
    return MaskedSoftmax()


def linear(features: int = 8, classes: int = 4):
    return Linear(features, classes)


class Logarithm(nn.Module):
    def forward(self, x):
        return torch.log(x)


class SignBranch(nn.Module):
    """Data-dependent control flow: torch.export cannot capture it, tracing bakes one branch."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1


class Inverse(nn.Module):
    def forward(self, x):
        return torch.linalg.inv(x)


class Bucketize(nn.Module):
    def forward(self, x):
        return torch.bucketize(x, torch.tensor([-1.0, 0.0, 1.0])).float()


class Cancellation(nn.Module):
    """Adds and removes a large offset: exact in float32, off by up to 0.25 in float16."""

    def forward(self, x):
        return (x + 1000.0) - 1000.0


def logarithm():
    return Logarithm()


def sign_branch():
    return SignBranch()


def inverse():
    return Inverse()


def bucketize():
    return Bucketize()


def cancellation():
    return Cancellation()


def not_a_module():
    return {"weights": [1, 2, 3]}
