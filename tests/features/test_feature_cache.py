"""Memory-mapped text features (docs/design.md §10): per perspective, written once, gathered per batch, equal to
the dense tensor of ``load_text_features``; float16 storage."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from feature_helpers import manifest, write_captions, write_manifest, write_summaries

from captions.features.encoders import TextEncoder
from captions.features.reader import load_text_features, open_text_features
from captions.features.tables import encode_dataset
from differ_common.errors import DataError
from differ_common.shared_array import read_header
from differ_common.workspace import Workspace
from differ_core.reproducibility import tensor_sha256

DS = "toy"
IDS = [f"train/{i:03d}_c{i % 3}.png" for i in range(30)]
PIDS = [i // 6 for i in range(30)]
PERSPECTIVES = ["biometrics", "hairstyle", "clothing"]


class HashEncoder(TextEncoder):
    """A deterministic offline encoder: unit vectors seeded by each string's sha256."""

    def __init__(self) -> None:
        self.spec, self.dim, self.device, self.fingerprint, self.batch_size = (
            "hash16",
            16,
            "cpu",
            "hash16-v1",
            64,
        )

    def _forward(self, texts):
        import torch

        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        return torch.from_numpy(np.stack([np.random.default_rng(s).normal(size=16) for s in seeds]))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    w = tmp_path_factory.mktemp("fcache") / "work"
    write_manifest(w, DS, manifest(IDS, PIDS))
    half = {p: {img: f"{p} of {img}" for img in IDS[:12]} for p in [*PERSPECTIVES, "pose"]}
    write_captions(w, DS, half)
    write_summaries(w, DS, {p: f"person {p}" for p in sorted(set(PIDS))})
    encode_dataset(w, DS, encoder=HashEncoder(), progress=False)
    write_captions(w, DS, {p: {img: f"{p} of {img}" for img in IDS} for p in [*PERSPECTIVES, "pose"]})
    encode_dataset(w, DS, encoder=HashEncoder(), progress=False)  # a second shard per perspective
    return w


def _rows():
    return manifest(IDS, PIDS).sample(frac=1.0, random_state=1).reset_index(drop=True)


@pytest.mark.parametrize("bio_source", ["image", "summary"])
def test_memory_mapped_features_equal_the_dense_tensor(ws, bio_source):
    m = _rows()
    dense = load_text_features(ws, DS, "hash16", m, PERSPECTIVES, bio_source)
    feats = open_text_features(ws, DS, "hash16", m, PERSPECTIVES, bio_source, log=lambda _m: None)
    assert feats.shape == tuple(dense.shape) and feats.storage_dtype == "float32"
    assert bool((feats.dense() == dense).all())  # float32: bit for bit
    idx = [7, 0, 7, 29, 3]
    assert bool((feats[idx] == dense[idx]).all()) and feats[idx].dtype == dense.dtype
    assert tensor_sha256(feats) == tensor_sha256(dense)  # the reproducibility record is unchanged
    for a in feats.arrays:
        assert isinstance(a, np.memmap) and not a.flags.writeable


def test_only_the_used_perspectives_are_cached_once(ws):
    m = _rows()
    folder = Workspace.at(ws).feature_cache_dir(DS, "hash16")
    open_text_features(ws, DS, "hash16", m, ["biometrics", "clothing"], log=lambda _m: None)
    names = sorted(p.name.split("-")[0] for p in folder.glob("*-float32-*.npy"))
    assert "pose" not in names and {"biometrics", "clothing"} <= set(names)
    heads = {p.name: read_header(p) for p in folder.glob("*.npy")}
    logs: list[str] = []
    open_text_features(ws, DS, "hash16", m, ["biometrics", "clothing"], log=logs.append)
    assert logs == [] and {p.name: read_header(p) for p in folder.glob("*.npy")} == heads  # read, not written


def test_float16_storage_is_within_1e_3_and_half_the_bytes(ws):
    m = _rows()
    dense = load_text_features(ws, DS, "hash16", m, PERSPECTIVES)
    half = open_text_features(ws, DS, "hash16", m, PERSPECTIVES, dtype="float16", log=lambda _m: None)
    assert half.storage_dtype == "float16" and half[[0, 1]].dtype == dense.dtype
    assert float((half.dense() - dense).abs().max()) <= 1e-3
    full = open_text_features(ws, DS, "hash16", m, PERSPECTIVES, log=lambda _m: None)
    assert half.arrays[1].nbytes * 2 == full.arrays[1].nbytes


def test_missing_features_name_the_images_and_the_fix(ws):
    m = manifest([*IDS, "train/999_c0.png"], [*PIDS, 4])
    with pytest.raises(DataError, match=r"1 of 31 images lack a 'biometrics'.*999_c0.*differ caption"):
        open_text_features(ws, DS, "hash16", m, PERSPECTIVES, log=lambda _m: None)
