"""The attributes captioner: SynthCC ground truth → captions, deterministic, with a calibrated noise rate."""

from __future__ import annotations

import random

import pandas as pd
import pytest
from caption_helpers import VALUES, make_workspace

from captions.attributes_captioner import PERSPECTIVE_COLUMNS, AttributesCaptioner, render
from captions.prompts import load_prompts
from captions.writer import caption_dataset
from differ_common.errors import ConfigError, DataError
from differ_common.perspectives import PERSPECTIVES
from differ_common.workspace import Workspace

SPECS = load_prompts()


def _random_row(rng: random.Random) -> dict:
    return {c: rng.choice(v) for c, v in VALUES.items()}


def test_noise_free_captions_name_every_attribute():
    rng = random.Random(0)
    for _ in range(200):
        row = _random_row(rng)
        for p in PERSPECTIVES:
            d = render(row, p, random.Random(rng.random()), noise=0.0)
            assert d.text and d.text[0].isupper() and d.text.endswith(".") and "\n" not in d.text
            assert not d.dropped and not d.replaced
            for col in PERSPECTIVE_COLUMNS[p]:
                value = row[col].replace("_", " ")
                if value == "none" and col in ("bag", "prop"):
                    assert f"{col} none" not in d.text
                    continue
                assert value in d.text.lower(), (p, col, value, d.text)


def test_biometric_captions_never_mention_clothing():
    rng = random.Random(1)
    clothing_values = {v for c in PERSPECTIVE_COLUMNS["clothing"] for v in VALUES[c]} - {
        "none",
        "short",
        "long",
    }
    for _ in range(100):
        row = _random_row(rng)
        row.update({c: "zz" + c for c in PERSPECTIVE_COLUMNS["clothing"]})
        text = render(row, "biometrics", random.Random(rng.random()), noise=0.0).text
        assert "zz" not in text and not any(f" {v} top" in text for v in clothing_values)


@pytest.mark.parametrize("noise", [0.1, 0.3, 0.6])
def test_noise_rate_is_the_fraction_of_corrupted_attributes(noise):
    vocab = {c: sorted({v.replace("_", " ") for v in vals}) for c, vals in VALUES.items()}
    rng = random.Random(42)
    corrupted = total = dropped = 0
    for _ in range(600):
        row = _random_row(rng)
        for p in PERSPECTIVES:
            d = render(row, p, random.Random(rng.random()), noise=noise, vocab=vocab)
            corrupted += len(d.dropped) + len(d.replaced)
            dropped += len(d.dropped)
            total += d.n_attributes
            for col in d.replaced:
                assert row[col].replace("_", " ") != "", col
    assert abs(corrupted / total - noise) < 0.03
    assert abs(dropped / total - noise / 2) < 0.03  # half dropped, half replaced by a wrong value


def test_wrong_colour_comes_from_the_colour_vocabulary():
    vocab = {"top_colour": ["blue", "red"], "hair_colour": ["blue", "red"]}
    row = {c: "x" for c in VALUES} | {"top_colour": "red"}
    seen = set()
    for k in range(300):
        d = render(row, "clothing", random.Random(k), noise=1.0, vocab=vocab)
        if "top_colour" in d.replaced:
            seen.add("blue top" in d.text)
    assert seen == {True}


def test_same_seed_same_table_in_two_workspaces_and_other_seed_differs(tmp_path):
    tables = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 5)):
        w = make_workspace(tmp_path / name, n_ids=3, per_id=4)
        caption_dataset(w, "synthcc", noise=0.25, seed=seed)
        df = pd.read_parquet(Workspace.at(w).captions_dir("synthcc"))
        tables[name] = (
            df[["image_id", "perspective", "caption"]].astype(str).sort_values(["perspective", "image_id"])
        )
    pd.testing.assert_frame_equal(tables["a"].reset_index(drop=True), tables["b"].reset_index(drop=True))
    assert (tables["a"]["caption"].to_numpy() != tables["c"]["caption"].to_numpy()).any()


def test_captioner_name_fingerprint_and_any_string_values(tmp_path):
    w = make_workspace(tmp_path / "w", n_ids=2, per_id=2)
    ws = Workspace.at(w)
    attrs = pd.read_parquet(ws.attributes("synthcc"))
    attrs["top_colour"] = "céladon_vert"
    attrs["background"] = "a very_unusual, place!"
    attrs.to_parquet(ws.attributes("synthcc"), index=False)
    cap = AttributesCaptioner(w, "synthcc", noise=0.2)
    assert cap.name == "attributes:noise=0.2" and not cap.needs_images
    assert AttributesCaptioner(w, "synthcc", noise=0.0, seed=3).name == "attributes:noise=0,seed=3"
    ids = attrs.loc[attrs["image_id"].str.startswith("train"), "image_id"].tolist()
    texts = cap.caption(None, SPECS["clothing"], ids) + cap.caption(None, SPECS["environment"], ids)
    assert all(t.strip() for t in texts)
    assert any("céladon vert" in t for t in texts) and any("a very unusual, place!" in t for t in texts)
    # deterministic per (seed, prompt, image, perspective)
    assert cap.caption(None, SPECS["clothing"], ids) == cap.caption(None, SPECS["clothing"], ids[::-1])[::-1]
    # the fingerprint follows the attribute table (a regenerated SynthCC invalidates its captions)
    attrs["top_colour"] = "mauve"
    attrs.to_parquet(ws.attributes("synthcc"), index=False)
    assert AttributesCaptioner(w, "synthcc", noise=0.2).fingerprint != cap.fingerprint


def test_missing_table_other_dataset_and_bad_columns(tmp_path):
    w = make_workspace(tmp_path / "w", n_ids=2, per_id=2, attributes=False)
    with pytest.raises(DataError) as err:
        caption_dataset(w, "synthcc")
    assert "synthcc.attributes.parquet" in str(err.value) and "differ manifest synthcc" in str(err.value)
    w2 = make_workspace(tmp_path / "w2", n_ids=2, per_id=2, dataset="ltcc")
    with pytest.raises(ConfigError, match="needs SynthCC's ground-truth attributes.*hf:"):
        caption_dataset(w2, "ltcc")
    w3 = make_workspace(tmp_path / "w3", n_ids=2, per_id=2)
    path = Workspace.at(w3).attributes("synthcc")
    pd.read_parquet(path).drop(columns=["stride", "lighting"]).to_parquet(path, index=False)
    with pytest.raises(DataError, match=r"missing attribute column\(s\) \['lighting', 'stride'\]"):
        caption_dataset(w3, "synthcc")
    with pytest.raises(ConfigError, match="noise"):
        caption_dataset(w, "synthcc", captioner="hf:/nowhere", noise=0.1)


def test_attributes_captioner_on_the_generated_tiny_synthcc(tmp_path):
    registry = pytest.importorskip("data_manifests.registry")
    w = tmp_path / "w"
    registry.make_manifest(w, "synthcc", None, size="tiny")
    report = caption_dataset(w, "synthcc")
    ws = Workspace.at(w)
    manifest = pd.read_parquet(ws.manifest("synthcc"))
    n_train = int((manifest["split"] == "train").sum())
    assert report.generated == dict.fromkeys(PERSPECTIVES, n_train)
    df = pd.read_parquet(ws.captions_dir("synthcc"))
    assert df.groupby("perspective", observed=True)["image_id"].nunique().to_dict() == dict.fromkeys(
        PERSPECTIVES, n_train
    )
    attrs = pd.read_parquet(ws.attributes("synthcc")).set_index("image_id")
    for r in df.itertuples():
        row = attrs.loc[r.image_id]
        for col in PERSPECTIVE_COLUMNS[r.perspective]:
            value = str(row[col]).replace("_", " ").lower()
            if value not in ("none", "no"):
                assert value in r.caption.lower(), (r.perspective, col, value, r.caption)
