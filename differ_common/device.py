"""Device auto-detection shared by captioning, encoding, training-side extraction and evaluation."""

from __future__ import annotations


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else ``cuda`` when available, else ``mps`` when available, else ``cpu``."""
    if device:
        return str(device)
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
