"""Control flow: cond and while_loop (coremltools `ops/defs/iOS15/control_flow.py`).

Nested blocks run in the caller's environment, so they read outer vars directly; MIL var names
are unique within a function, so nothing they write can shadow an outer var.
"""

from __future__ import annotations

from ..registry import op

# A while_loop that has not finished after this many iterations is reported as an error
# instead of hanging the process.
MAX_LOOP_ITERATIONS = 1_000_000


@op("cond", runs_blocks=True)
def cond(ctx, pred, env):
    then_block, else_block = ctx.blocks
    block = then_block if bool(pred) else else_block
    outputs = block.evaluate(env, [])
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


@op("while_loop", runs_blocks=True)
def while_loop(ctx, loop_vars, env):
    condition, body = ctx.blocks
    values = list(loop_vars)
    for _ in range(MAX_LOOP_ITERATIONS):
        if not bool(condition.evaluate(env, values)[0]):
            return values[0] if len(values) == 1 else tuple(values)
        values = body.evaluate(env, values)
    raise ctx.invalid(f"the loop did not end within {MAX_LOOP_ITERATIONS} iterations")
