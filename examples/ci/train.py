"""Stand-in for a team's training script, as the CI recipes in this folder call it.

It trains a small classifier (4 sensor features in, 2 class logits out) on synthetic data for
a few hundred steps, then saves it with `torch.export.save`, the format that spec.source.
exportedProgram of a ModelConversion reads. Replace it with your own training; keep the
`--output` file in the same format, or change spec.source to match what you save.

    python train.py --output model.pt2
"""

import argparse

import torch


def train(steps: int) -> torch.nn.Module:
    """Return the classifier after `steps` steps of SGD on a fixed synthetic dataset."""
    torch.manual_seed(0)
    features = torch.randn(256, 4)
    labels = (features[:, 0] + 0.5 * features[:, 1] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(features), labels)
        loss.backward()
        optimizer.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="model.pt2", help="file to save the model to")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    args = parser.parse_args()

    model = train(args.steps)
    program = torch.export.export(model, (torch.randn(1, 4),))
    torch.export.save(program, args.output)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
