"""Competition plugins, one module per Kaggle competition (installed as ``kit.plugins``)."""
