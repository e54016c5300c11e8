"""Tiny models for the operator tests, built by the stage Jobs through `spec.source.factory`.

The stage processes import this module as `tests.operator.factories`, with the repository
root on PYTHONPATH (the tests pass it to the Jobs with `--stage-env`).
"""


def mlp(width: int = 8):
    """Return a two-layer perceptron from 4 inputs to 2 outputs, with seeded weights."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(4, width), torch.nn.ReLU(), torch.nn.Linear(width, 2)
    ).eval()
