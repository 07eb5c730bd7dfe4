"""kit: fast.ai's lesson 1 on Keras 3 (TensorFlow, JAX or PyTorch backend)."""

__version__ = "0.1.0"
