"""lstm, gru and rnn against numpy loops written from the op definitions."""

from __future__ import annotations

import numpy as np
import pytest
from mil_reference import lstm, sigmoid
from mil_testing import IOS17, IOS18, mb, random, run_fp16, run_ops

STEPS, BATCH, INPUT, HIDDEN = 4, 2, 3, 5


def _lstm_weights(seed, peephole=False):
    weights = {
        "weight_ih": random((4 * HIDDEN, INPUT), seed=seed),
        "weight_hh": random((4 * HIDDEN, HIDDEN), seed=seed + 1),
        "bias": random((4 * HIDDEN,), seed=seed + 2),
    }
    if peephole:
        weights["peephole"] = random((3 * HIDDEN,), seed=seed + 3)
    return weights


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("output_sequence", [True, False])
@pytest.mark.parametrize("peephole_and_clip", [False, True])
def test_lstm_runs_one_direction(tmp_path, direction, output_sequence, peephole_and_clip):
    x = random((STEPS, BATCH, INPUT), -2, 2, seed=140)
    h0, c0 = random((BATCH, HIDDEN), seed=141), random((BATCH, HIDDEN), seed=142)
    weights = _lstm_weights(143, peephole=peephole_and_clip)
    clip = np.float32(0.3) if peephole_and_clip else None
    extra = {"clip": clip} if clip is not None else {}
    sequence, h, c = run_ops(
        tmp_path,
        lambda x, h0, c0: list(mb.lstm(x=x, initial_h=h0, initial_c=c0, direction=direction,
                                       output_sequence=output_sequence, **weights, **extra)),
        {"x": x, "h0": h0, "c0": c0},
    )
    source = x[::-1] if direction == "reverse" else x
    expected_sequence, expected_h, expected_c = lstm(
        source, h0, c0, weights["weight_ih"], weights["weight_hh"], weights["bias"],
        weights.get("peephole"), clip,
    )
    # A reverse lstm emits its steps in processing order.
    if not output_sequence:
        expected_sequence = expected_sequence[-1:]
    np.testing.assert_allclose(sequence, expected_sequence, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, expected_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, expected_c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("output_sequence", [True, False])
def test_bidirectional_lstm_aligns_backward_half(tmp_path, output_sequence):
    x = random((STEPS, BATCH, INPUT), -2, 2, seed=144)
    h0, c0 = random((BATCH, 2 * HIDDEN), seed=145), random((BATCH, 2 * HIDDEN), seed=146)
    forward, backward = _lstm_weights(147), _lstm_weights(150)
    backward_weights = {name + "_back": value for name, value in backward.items()}
    sequence, h, c = run_ops(
        tmp_path,
        lambda x, h0, c0: list(mb.lstm(x=x, initial_h=h0, initial_c=c0, direction="bidirectional",
                                       output_sequence=output_sequence, **forward,
                                       **backward_weights)),
        {"x": x, "h0": h0, "c0": c0},
    )
    f_seq, f_h, f_c = lstm(x, h0[:, :HIDDEN], c0[:, :HIDDEN], **forward)
    b_seq, b_h, b_c = lstm(x[::-1], h0[:, HIDDEN:], c0[:, HIDDEN:], **backward)
    b_seq = b_seq[::-1]
    if output_sequence:
        expected = np.concatenate([f_seq, b_seq], axis=-1)
    else:
        expected = np.concatenate([f_seq[-1:], b_seq[:1]], axis=-1)
    np.testing.assert_allclose(sequence, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, np.concatenate([f_h, b_h], -1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, np.concatenate([f_c, b_c], -1), rtol=1e-5, atol=1e-6)


def _gru_reference(x, h, w_ih, w_hh, bias, input_bias, reset_after):
    w_r, w_o, w_z = np.split(w_ih, 3)
    r_r, r_o, r_z = np.split(w_hh, 3)
    b_r, b_o, b_z = np.split(bias, 3)
    i_r, i_o, i_z = np.split(input_bias, 3)
    outputs = []
    for step in range(x.shape[0]):
        x_t = x[step]
        r = sigmoid(x_t @ w_r.T + i_r + h @ r_r.T + b_r)
        z = sigmoid(x_t @ w_z.T + i_z + h @ r_z.T + b_z)
        if reset_after:
            o = np.tanh(x_t @ w_o.T + i_o + r * (h @ r_o.T + b_o))
        else:
            o = np.tanh(x_t @ w_o.T + i_o + (r * h) @ r_o.T + b_o)
        h = (1 - z) * o + z * h
        outputs.append(h)
    return np.stack(outputs), h


@pytest.mark.parametrize("reset_after", [False, True])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_gru_follows_reset_gate_placement(tmp_path, reset_after, direction):
    x = random((STEPS, BATCH, INPUT), -2, 2, seed=160)
    h0 = random((BATCH, HIDDEN), seed=161)
    w_ih, w_hh = random((3 * HIDDEN, INPUT), seed=162), random((3 * HIDDEN, HIDDEN), seed=163)
    bias, input_bias = random((3 * HIDDEN,), seed=164), random((3 * HIDDEN,), seed=165)
    sequence, h = run_ops(
        tmp_path,
        lambda x, h0: list(mb.gru(x=x, initial_h=h0, weight_ih=w_ih, weight_hh=w_hh, bias=bias,
                                  input_bias=input_bias, reset_after=reset_after,
                                  direction=direction, output_sequence=True)),
        {"x": x, "h0": h0}, opset=IOS18,
    )
    source = x[::-1] if direction == "reverse" else x
    expected_sequence, expected_h = _gru_reference(source, h0, w_ih, w_hh, bias, input_bias,
                                                   reset_after)
    np.testing.assert_allclose(sequence, expected_sequence, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, expected_h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_rnn_applies_its_activation(tmp_path, activation):
    x = random((STEPS, BATCH, INPUT), seed=170)
    h0 = random((BATCH, HIDDEN), seed=171)
    w_ih, w_hh = random((HIDDEN, INPUT), seed=172), random((HIDDEN, HIDDEN), seed=173)
    bias = random((HIDDEN,), seed=174)
    sequence, h = run_ops(
        tmp_path,
        lambda x, h0: list(mb.rnn(x=x, initial_h=h0, weight_ih=w_ih, weight_hh=w_hh, bias=bias,
                                  activation=activation, output_sequence=False)),
        {"x": x, "h0": h0},
    )
    function = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0), "sigmoid": sigmoid}[
        activation]
    state = h0.astype(np.float64)
    for step in range(STEPS):
        state = function(x[step] @ w_ih.T + state @ w_hh.T + bias)
    np.testing.assert_allclose(h, state, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sequence[0], state, rtol=1e-5, atol=1e-6)


def test_lstm_in_fp16_keeps_its_state_in_fp32(tmp_path):
    x = random((STEPS, BATCH, INPUT), -2, 2, seed=180)
    h0, c0 = random((BATCH, HIDDEN), seed=181), random((BATCH, HIDDEN), seed=182)
    weights = {name: value.astype(np.float16) for name, value in _lstm_weights(183).items()}
    sequence, h, c = run_fp16(
        tmp_path,
        lambda x, h0, c0: list(mb.lstm(x=x, initial_h=h0, initial_c=c0, output_sequence=True,
                                       **weights)),
        {"x": x, "h0": h0, "c0": c0}, opset=IOS17,
    )
    as64 = {name: value.astype(np.float64) for name, value in weights.items()}
    expected, _, _ = lstm(x.astype(np.float16).astype(np.float64),
                          h0.astype(np.float16).astype(np.float64),
                          c0.astype(np.float16).astype(np.float64), **as64)
    # Only the outputs are rounded, so each element is within half an fp16 unit.
    np.testing.assert_allclose(sequence, expected, rtol=1e-3, atol=1e-3)
    assert np.array_equal(sequence, sequence.astype(np.float16).astype(np.float32))
