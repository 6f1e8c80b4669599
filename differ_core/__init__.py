"""DIFFER core: model, losses, sampler, training and evaluation (plus the shared workspace helpers).

Importing this package is cheap: heavy modules (torch, timm) load only when a submodule needs them.
"""

__version__ = "0.1.0"
