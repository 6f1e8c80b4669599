"""SynthCC: determinism, attribute consistency, split structure, reuse and atomic regeneration."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_manifests.registry import make_manifest, make_manifest_report
from data_manifests.schema import MANIFEST_COLUMNS, load_manifest
from data_manifests.synthcc import ATTRIBUTE_COLUMNS, generate, load_attributes, resolve_config
from data_manifests.synthcc.attributes import (
    CLOTHING_ATTRIBUTES,
    IDENTITY_ATTRIBUTES,
    LIGHTINGS,
    sample_images,
)
from differ_common.errors import ConfigError
from flows.cli import main

TINY = resolve_config("tiny")
MINI = resolve_config("tiny", num_train_ids=3, num_test_ids=2)  # 60 images
# 36 images for the pixel tests
PIX = dict(num_train_ids=4, num_test_ids=2, outfits_per_id=2, images_per_outfit=3, num_cameras=3,
           cameras_per_outfit=2, queries_per_outfit=1)  # fmt: skip


def _digest(folder) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny SynthCC through `make_manifest` (default root W/data)."""
    w = tmp_path_factory.mktemp("synth") / "work"
    report = make_manifest_report(w, "synthcc", None, size="tiny", seed=3)
    return w, report


def test_two_generations_are_byte_identical(tmp_path):
    a = generate(tmp_path / "a_c1", MINI, seed=5, workers=1)
    b = generate(tmp_path / "b", MINI, seed=5, workers=2)  # the pool does not change a byte
    assert a.generated and b.generated
    da, db = _digest(a.folder), _digest(b.folder)
    assert len(da) == MINI.num_images + 2 and da == db
    c = generate(tmp_path / "c", MINI, seed=6, workers=1)
    dc = _digest(c.folder)
    assert sum(dc.get(k) != v for k, v in da.items()) > MINI.num_images // 2


def test_manifest_and_attribute_table(tiny):
    w, report = tiny
    df = load_manifest(w, "synthcc")
    assert report.path == w / "manifests" / "synthcc.parquet" and report.generated is True
    assert list(df.columns) == list(MANIFEST_COLUMNS) and len(df) == TINY.num_images == 168
    assert (w / "data" / "SynthCC" / "synthcc.json").is_file()
    counts = df["split"].value_counts().to_dict()
    n_test_outfits = TINY.num_test_ids * TINY.outfits_per_id
    assert counts == {"train": 96, "query": n_test_outfits * TINY.queries_per_outfit, "gallery": 72 - 18}
    train = df[df["split"] == "train"]
    assert sorted(train["raw_pid"].unique()) == list(range(1, TINY.num_train_ids + 1))
    assert sorted(train["pid"].unique()) == list(range(TINY.num_train_ids))
    assert set(df.loc[df["split"] != "train", "raw_pid"]) == set(range(9, 15))
    assert df["camid"].between(0, TINY.num_cameras - 1).all()

    attrs = pd.read_parquet(report.attributes)
    assert report.attributes == w / "manifests" / "synthcc.attributes.parquet"
    assert list(attrs.columns) == list(ATTRIBUTE_COLUMNS)
    assert attrs["image_id"].tolist() == df["image_id"].tolist()
    for c in ("pid", "outfit", "camid"):
        assert pd.api.types.is_integer_dtype(attrs[c])
    others = [c for c in ATTRIBUTE_COLUMNS if c not in ("pid", "outfit", "camid")]
    assert all(isinstance(v, str) and v for c in others for v in attrs[c])
    assert (attrs["pid"].values == df["raw_pid"].values).all() and (
        attrs["camid"].values == df["camid"].values
    ).all()
    assert (df["clothes_key"] == attrs["pid"].astype(str) + "_" + attrs["outfit"].astype(str)).all()


def test_identity_traits_persist_and_clothing_changes(tiny):
    _, report = tiny
    attrs = pd.read_parquet(report.attributes)
    assert (attrs.groupby("pid")[list(IDENTITY_ATTRIBUTES)].nunique() == 1).all().all()
    assert (attrs.groupby(["pid", "outfit"])[[*CLOTHING_ATTRIBUTES, "hairstyle"]].nunique() == 1).all().all()
    outfits = attrs.drop_duplicates(["pid", "outfit"])
    assert (outfits.groupby("pid")["top_colour"].nunique() == TINY.outfits_per_id).all()
    bottoms = outfits["bottom_colour"] + "/" + outfits["bottom_type"]
    assert (bottoms.groupby(outfits["pid"]).nunique() == TINY.outfits_per_id).all()
    ids = attrs.drop_duplicates("pid")[list(IDENTITY_ATTRIBUTES)]
    assert not ids.duplicated().any()  # every identity has its own trait words
    assert (attrs.groupby("camid")[["background", "lighting", "blur", "scale"]].nunique() == 1).all().all()
    assert attrs["direction"].nunique() > 1 and attrs["top_colour"].nunique() > 5


def test_every_query_has_same_clothes_and_clothes_changing_matches(tiny):
    _, report = tiny
    df = report.manifest
    q, g = df[df["split"] == "query"], df[df["split"] == "gallery"]
    assert (q.groupby("clothes_key")["camid"].nunique() == q.groupby("clothes_key").size()).all()
    for r in q.itertuples():
        same_pid = g[g["raw_pid"] == r.raw_pid]
        other_cam = same_pid[same_pid["camid"] != r.camid]
        assert (other_cam["clothes_key"] == r.clothes_key).any()
        assert (other_cam["clothes_key"] != r.clothes_key).any()


def test_hairstyle_changes_follow_the_knob(tmp_path):
    never, _ = sample_images(resolve_config("small", hairstyle_change_prob=0.0), 0)
    always, _ = sample_images(resolve_config("small", hairstyle_change_prob=1.0), 0)

    def changes(specs) -> pd.Series:  # per pid: how many outfits have another hairstyle than the one before
        o = (
            pd.DataFrame([s.row for s in specs])
            .drop_duplicates(["pid", "outfit"])
            .sort_values(["pid", "outfit"])
        )
        return (o["hairstyle"] != o.groupby("pid")["hairstyle"].shift()).groupby(o["pid"]).sum() - 1

    assert (changes(never) == 0).all() and (changes(always) == 2).all()


def _chroma(x: np.ndarray) -> np.ndarray:
    return x.max(-1) - x.min(-1)


def test_clothing_saliency_zero_draws_grey_clothes(tmp_path):
    # the same seed: only the clothing colours depend on the knob, so the pixels that change are the clothes
    folders = {}
    for c in (1.0, 0.0):
        cfg = resolve_config("tiny", **PIX, clothing_saliency=c)
        folders[c] = generate(tmp_path / str(c), cfg, seed=2, workers=1).folder
    h, w = cfg.img_height, cfg.img_width
    # draw.py lays the torso from the shoulders (~0.2 h) to the hips (~0.5 h), centred: its middle part
    torso = (slice(int(0.3 * h), int(0.45 * h)), slice(int(0.42 * w), int(0.58 * w)))
    clothes_chroma, torso_chroma = {1.0: [], 0.0: []}, {1.0: [], 0.0: []}
    for r in load_attributes(folders[1.0]).itertuples():
        raw = {c: np.asarray(Image.open(f / r.image_id), np.float64) for c, f in folders.items()}
        clothes = np.abs(raw[1.0] - raw[0.0]).sum(-1) > 30
        assert clothes.mean() > 0.03, r.image_id  # tops, bottoms and shoes are a large part of every image
        for c in (1.0, 0.0):
            x = raw[c] / np.array(LIGHTINGS[r.lighting])  # the camera's lighting divided out: grey stays grey
            clothes_chroma[c].append(np.median(_chroma(x)[clothes]))
            torso_chroma[c].append(np.median(_chroma(x[torso])))
    assert max(clothes_chroma[0.0]) < 30 and max(torso_chroma[0.0]) < 30  # grey (noise, jitter, tint)
    assert np.median(clothes_chroma[1.0]) > 60 and np.median(torso_chroma[1.0]) > 60  # coloured


def test_identity_cue_strength_sets_how_different_two_identities_look(tmp_path):
    """One image (pose, outfit, camera, noise) drawn again with another identity's skin, hair or whole body:
    the same pixels at strength 0 (everyone alike), visibly other pixels at strength 1."""
    from data_manifests.synthcc.draw import render

    for strength in (0.0, 1.0):
        cfg = resolve_config("tiny", **PIX, identity_cue_strength=strength)
        folder = generate(tmp_path / str(strength), cfg, seed=4, workers=1).folder
        specs, _ = sample_images(cfg, 4)
        bodies = {s.row["pid"]: s.render["identity"] for s in specs}
        size = (cfg.img_height, cfg.img_width, cfg.noise_std, cfg.blur_scale)
        for spec in specs:
            mine = spec.render["identity"]
            image = render(spec, *size)
            on_disk = np.asarray(Image.open(folder / spec.image_id))
            assert np.array_equal(image, on_disk)  # the renderer of the generated dataset
            for cue, least in (("skin", 0.004), ("hair", 0.004), (None, 0.05)):
                key = cue or "skin"
                other = max(bodies.values(), key=lambda b: np.abs(np.subtract(b[key], mine[key])).sum())
                body = {**mine, cue: other[cue]} if cue else other
                again = render(dataclasses.replace(spec, render={**spec.render, "identity": body}), *size)
                if strength == 0:
                    assert np.array_equal(again, image), (cue, spec.image_id)
                else:
                    changed = (np.abs(image.astype(int) - again).sum(-1) > 60).mean()
                    assert changed > least, (cue, spec.image_id, changed)


def test_same_settings_reuse_the_folder_and_others_regenerate(tiny, capsys):
    w, report = tiny
    folder = w / "data" / "SynthCC"
    before = _digest(folder)
    mtime = (folder / "synthcc.json").stat().st_mtime_ns
    written = _digest(w / "manifests")
    again = make_manifest_report(w, "synthcc", None, size="tiny", seed=3)
    assert again.generated is False and (folder / "synthcc.json").stat().st_mtime_ns == mtime
    # byte-identical manifest and attributes, so downstream caches keyed on their hashes hold
    assert _digest(w / "manifests") == written
    pd.testing.assert_frame_equal(again.manifest, report.manifest)

    args = [
        "--workdir",
        str(w),
        "manifest",
        "synthcc",
        "--size",
        "tiny",
        "--seed",
        "3",
        "--set",
        "prop_prob=0.9",
    ]
    assert main(args) == 2  # other settings than the folder's: refused, naming both (tests/reliability)
    assert _digest(folder) == before
    capsys.readouterr()
    rc = main([*args, "--regenerate"])
    out = capsys.readouterr().out
    assert rc == 0 and "generated" in out and "total" in out
    stamp = json.loads((folder / "synthcc.json").read_text())
    assert stamp["config"]["prop_prob"] == 0.9 and stamp["seed"] == 3
    assert _digest(folder) != before
    assert [p.name for p in (w / "data").iterdir()] == ["SynthCC"]  # no temporary folder left
    attrs = pd.read_parquet(w / "manifests" / "synthcc.attributes.parquet")
    assert (attrs["prop"] != "none").mean() > 0.6

    make_manifest(w, "synthcc", None, size="tiny", seed=3, regenerate=True)  # back to the first settings
    assert _digest(folder) == before


def test_interrupted_generation_leaves_the_old_folder(tmp_path, monkeypatch):
    from data_manifests.synthcc import generator as gen_mod

    first = generate(tmp_path, MINI, seed=1, workers=1)
    before = _digest(first.folder)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen_mod, "attributes_table", boom)
    with pytest.raises(KeyboardInterrupt):
        gen_mod.generate(tmp_path, MINI, seed=2, workers=1)
    assert _digest(first.folder) == before
    assert [p.name for p in tmp_path.iterdir()] == ["SynthCC"]
    # a temporary folder of a killed process is cleaned up by the next generation
    (tmp_path / ".tmp-SynthCC-999999999-abc" / "train").mkdir(parents=True)
    monkeypatch.undo()
    assert gen_mod.generate(tmp_path, MINI, seed=2, workers=1).generated
    assert [p.name for p in tmp_path.iterdir()] == ["SynthCC"] and _digest(first.folder) != before


def test_bad_knobs_are_config_errors(tmp_path, capsys):
    with pytest.raises(ConfigError) as e:
        make_manifest(tmp_path / "w", "synthcc", None, size="huge")
    assert "huge" in str(e.value)
    rc = main(["--workdir", str(tmp_path / "w"), "manifest", "synthcc", "--set", "queries_per_outfit=5"])
    err = capsys.readouterr().err
    assert rc == 2 and "queries_per_outfit" in err and len(err.strip().splitlines()) == 1
    rc = main(["--workdir", str(tmp_path / "w"), "manifest", "synthcc", "--set", "novalue"])
    assert rc == 2 and "KNOB=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "w" / "manifests" / "synthcc.parquet").exists()
