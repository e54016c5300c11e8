"""A training command for the operator tests: `python -m tests.operator.trainer`.

It builds the test MLP, traces it to TorchScript and uploads it to MODELCONV_TRAIN_OUTPUT,
the location the operator gives a training Job, with the S3 credentials and endpoint of the
Job's environment.
"""

import os
import sys
import tempfile


def main() -> int:
    import boto3
    import torch

    from tests.operator.factories import mlp

    torch.manual_seed(1)
    traced = torch.jit.trace(mlp(width=12), torch.zeros(1, 4))
    output = os.environ["MODELCONV_TRAIN_OUTPUT"]
    bucket, _, key = output.removeprefix("s3://").partition("/")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.pt")
        traced.save(path)
        # boto3 reads the endpoint from AWS_ENDPOINT_URL_S3, which the operator sets.
        boto3.client("s3").upload_file(path, bucket, key)
    print(f"trained model written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
