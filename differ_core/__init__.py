"""DIFFER core: training configs, data loading, model, losses, sampler, training, evaluation, the pre-trained
starts (``clip_pretrain``, ``starts/``) and run records (``reproducibility``).

The shared helpers (workspace layout, atomic I/O, fingerprints, errors) live in ``differ_common``. Importing this
package is cheap: heavy modules (torch, timm) load only when a submodule needs them.
"""

__version__ = "0.1.0"
