"""modelconv: PyTorch and ONNX models to validated Core ML packages."""

__version__ = "0.1.0"
