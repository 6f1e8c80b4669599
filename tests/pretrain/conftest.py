"""A tiny CLIP-style pre-training config (seconds on one thread) for the tests of this folder."""

from __future__ import annotations

import pytest
import yaml

TINY = {
    "people": {"seed": 7, "num_train_ids": 8, "num_test_ids": 4, "outfits_per_id": 2, "images_per_outfit": 3,
               "img_height": 32, "img_width": 16},
    "model": {"name": "tiny-clip", "embed_dim": 32, "vision": {"timm_model_name": "regnetx_002"},
              "text": {"context_length": 48, "width": 32, "heads": 2, "layers": 1}},
    "train": {"epochs": 3, "batch_size": 16, "lr": 0.002, "caption_variants": 2, "threads": 1},
}  # fmt: skip


def write_config(path, **changes):
    data = yaml.safe_load(yaml.safe_dump(TINY))
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def tiny_config(tmp_path):
    """Path of the tiny pre-training YAML."""
    return write_config(tmp_path / "tiny_clip.yaml")
