"""cond and while_loop: nested blocks reading outer vars and carrying loop state."""

from __future__ import annotations

import numpy as np
import pytest
from mil_testing import mb, random, run_ops


@pytest.mark.parametrize("flag", [1.0, -1.0])
def test_cond_runs_the_chosen_branch(tmp_path, flag):
    x = random((3,), seed=200)

    def build(x, p):
        predicate = mb.squeeze(x=mb.greater(x=p, y=0.0))
        return mb.cond(pred=predicate, _true_fn=lambda: mb.add(x=x, y=1.0),
                       _false_fn=lambda: mb.mul(x=x, y=2.0))

    (result,) = run_ops(tmp_path, build, {"x": x, "p": np.array([flag], dtype=np.float32)})
    np.testing.assert_allclose(result, x + 1 if flag > 0 else x * 2, rtol=1e-6)


def test_while_loop_carries_state_until_the_condition_fails(tmp_path):
    x = random((2,), 1, 2, seed=201)

    def build(x):
        def condition(value, count):
            return mb.less(x=count, y=5)

        def body(value, count):
            return mb.add(x=value, y=value), mb.add(x=count, y=1)

        value, count = mb.while_loop(_cond=condition, _body=body, loop_vars=(x, 0))
        return [value, count]

    value, count = run_ops(tmp_path, build, {"x": x})
    np.testing.assert_allclose(value, x * 32, rtol=1e-6)
    assert int(count) == 5
