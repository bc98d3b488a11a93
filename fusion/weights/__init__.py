"""Pretrained weights shipped inside the package, loaded offline by name (``--pretrained
cxr``); each ``<name>.safetensors`` has a ``<name>.json`` beside it with its SHA-256,
normalisation, training data and the exact command that made it (see README.md here)."""
