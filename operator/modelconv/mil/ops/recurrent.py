"""Recurrent layers: lstm, gru and rnn (coremltools `ops/defs/iOS15..18/recurrent.py`).

Gate layouts follow the op definitions. lstm weights stack the input, forget, output and cell
gates (i, f, o, z) and take one bias (input-hidden plus hidden-hidden). gru weights stack the
reset, new (output) and update gates (r, o, z). With `direction="reverse"` the output sequence
is in processing order (last input step first), as coremltools' reference tests expect; the
backward half of a bidirectional lstm is aligned with the input steps, as in PyTorch.

The hidden and cell states are carried in float32 even in float16 programs and only the
outputs are rounded to float16 (registered with `fp16="upcast"`).
"""

from __future__ import annotations

import torch

from ..registry import UPCAST, op


def _activation(ctx, name: str):
    functions = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "linear": lambda value: value,
        "hard_sigmoid": lambda value: torch.clamp(0.2 * value + 0.5, 0, 1),
        "sigmoid_hard": lambda value: torch.clamp(0.2 * value + 0.5, 0, 1),
    }
    if name not in functions:
        # scaled_tanh has no alpha and beta inputs on these ops, so its definition is open.
        raise ctx.unsupported(f"activation {name!r}")
    return functions[name]


def _lstm_direction(x, h, c, w_ih, w_hh, bias, peephole, activations, clip):
    """Run one direction over x [steps, batch, input]; return (hidden per step, h, c)."""
    recurrent, cell_activation, output_activation = activations
    projected = torch.matmul(x, w_ih.t())
    if bias is not None:
        projected = projected + bias
    p_i, p_f, p_o = (peephole.chunk(3) if peephole is not None else (None, None, None))
    outputs = []
    for step in range(x.shape[0]):
        g_i, g_f, g_o, g_z = (projected[step] + torch.matmul(h, w_hh.t())).chunk(4, dim=-1)
        if p_i is not None:
            g_i, g_f = g_i + p_i * c, g_f + p_f * c
        c = recurrent(g_f) * c + recurrent(g_i) * cell_activation(g_z)
        if clip is not None:
            c = torch.clamp(c, -clip, clip)
        if p_o is not None:
            g_o = g_o + p_o * c
        h = recurrent(g_o) * output_activation(c)
        outputs.append(h)
    return torch.stack(outputs), h, c


@op("lstm", params=("direction", "output_sequence", "recurrent_activation", "cell_activation",
                    "activation", "clip"), fp16=UPCAST)
def lstm(ctx, x, initial_h, initial_c, weight_ih, weight_hh, bias=None, peephole=None,
         weight_ih_back=None, weight_hh_back=None, bias_back=None, peephole_back=None,
         direction="forward", output_sequence=False, recurrent_activation="sigmoid",
         cell_activation="tanh", activation="tanh", clip=None):
    activations = (
        _activation(ctx, recurrent_activation),
        _activation(ctx, cell_activation),
        _activation(ctx, activation),
    )
    hidden = weight_hh.shape[1]
    if direction in ("forward", "reverse"):
        source = torch.flip(x, [0]) if direction == "reverse" else x
        sequence, h, c = _lstm_direction(
            source, initial_h, initial_c, weight_ih, weight_hh, bias, peephole, activations, clip
        )
        output = sequence if output_sequence else sequence[-1:]
        return output, h, c
    if direction != "bidirectional":
        raise ctx.unsupported(f"direction {direction!r}")
    forward, h_f, c_f = _lstm_direction(
        x, initial_h[:, :hidden], initial_c[:, :hidden], weight_ih, weight_hh, bias, peephole,
        activations, clip,
    )
    backward, h_b, c_b = _lstm_direction(
        torch.flip(x, [0]), initial_h[:, hidden:], initial_c[:, hidden:], weight_ih_back,
        weight_hh_back, bias_back, peephole_back, activations, clip,
    )
    backward = torch.flip(backward, [0])
    if output_sequence:
        output = torch.cat([forward, backward], dim=-1)
    else:
        output = torch.cat([forward[-1:], backward[:1]], dim=-1)
    return output, torch.cat([h_f, h_b], dim=-1), torch.cat([c_f, c_b], dim=-1)


@op("gru", params=("direction", "output_sequence", "recurrent_activation", "activation",
                   "reset_after"), fp16=UPCAST)
def gru(ctx, x, initial_h, weight_ih, weight_hh, bias=None, direction="forward",
        output_sequence=False, recurrent_activation="sigmoid", activation="tanh",
        reset_after=False, input_bias=None):
    if direction not in ("forward", "reverse"):
        raise ctx.unsupported(f"direction {direction!r}")
    gate = _activation(ctx, recurrent_activation)
    candidate = _activation(ctx, activation)
    source = torch.flip(x, [0]) if direction == "reverse" else x
    projected = torch.matmul(source, weight_ih.t())
    if input_bias is not None:
        projected = projected + input_bias
    b_r, b_o, b_z = bias.chunk(3) if bias is not None else (0, 0, 0)
    w_r, w_o, w_z = weight_hh.chunk(3)
    h = initial_h
    outputs = []
    for step in range(source.shape[0]):
        x_r, x_o, x_z = projected[step].chunk(3, dim=-1)
        r = gate(x_r + torch.matmul(h, w_r.t()) + b_r)
        z = gate(x_z + torch.matmul(h, w_z.t()) + b_z)
        if reset_after:
            o = candidate(x_o + r * (torch.matmul(h, w_o.t()) + b_o))
        else:
            o = candidate(x_o + torch.matmul(r * h, w_o.t()) + b_o)
        h = (1 - z) * o + z * h
        outputs.append(h)
    sequence = torch.stack(outputs)
    return (sequence if output_sequence else sequence[-1:]), h


@op("rnn", params=("direction", "output_sequence", "activation"), fp16=UPCAST)
def rnn(ctx, x, initial_h, weight_ih, weight_hh, bias=None, direction="forward",
        output_sequence=False, activation="tanh"):
    if direction not in ("forward", "reverse"):
        raise ctx.unsupported(f"direction {direction!r}")
    function = _activation(ctx, activation)
    source = torch.flip(x, [0]) if direction == "reverse" else x
    projected = torch.matmul(source, weight_ih.t())
    if bias is not None:
        projected = projected + bias
    h = initial_h
    outputs = []
    for step in range(source.shape[0]):
        h = function(projected[step] + torch.matmul(h, weight_hh.t()))
        outputs.append(h)
    sequence = torch.stack(outputs)
    return (sequence if output_sequence else sequence[-1:]), h
