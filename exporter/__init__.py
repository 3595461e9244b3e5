"""tei-export: Hugging Face embedding models -> verified TorchScript + config.pbtxt for Triton's LibTorch backend."""

__version__ = "0.1.0"
