"""On real SynthCC captions (tiny): minilm features exist, a changed clothing prompt re-encodes only the clothing
strings that changed, clothing features cluster by outfit, and the reader gives the training tensor."""

from __future__ import annotations

import numpy as np
import pytest
import yaml


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from captions.summaries import summarize_dataset
    from captions.writer import caption_dataset
    from data_manifests.registry import make_manifest

    w = tmp_path_factory.mktemp("synthcc") / "work"
    make_manifest(w, "synthcc", None, size="tiny")
    caption_dataset(w, "synthcc")
    summarize_dataset(w, "synthcc")
    return w


def test_synthcc_features_prompt_change_and_clusters(synth, counting, tmp_path):
    import pandas as pd
    from sklearn.metrics import silhouette_score

    from captions.features.reader import load_text_features
    from captions.features.tables import encode_dataset
    from captions.prompts import DEFAULT_PROMPTS
    from captions.table import read_current_captions
    from captions.writer import caption_dataset
    from differ_common.perspectives import PERSPECTIVES, SUMMARY_PERSPECTIVE
    from differ_common.workspace import Workspace

    enc = counting()
    rep = encode_dataset(synth, "synthcc", encoder=enc, progress=False)
    before = read_current_captions(synth, "synthcc")
    n_train = int((pd.read_parquet(Workspace.at(synth).manifest("synthcc"))["split"] == "train").sum())
    assert all(rep.total[p] == n_train for p in PERSPECTIVES) and rep.total[SUMMARY_PERSPECTIVE] > 0
    distinct = before.groupby("perspective")["caption"].nunique().to_dict()
    assert {p: rep.encoded[p] for p in PERSPECTIVES} == {p: distinct[p] for p in PERSPECTIVES}

    spec = yaml.safe_load(DEFAULT_PROMPTS.read_text())
    for item in spec["perspectives"]:
        if item["name"] == "clothing":
            item["prompt"] += " Name every colour you see."
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(yaml.safe_dump(spec, sort_keys=False))
    caption_dataset(synth, "synthcc", prompts=prompts)
    after = read_current_captions(synth, "synthcc")
    old = set(before.loc[before["perspective"] == "clothing", "caption"])
    new = set(after.loc[after["perspective"] == "clothing", "caption"])
    assert new != old
    enc2 = counting()
    rep2 = encode_dataset(synth, "synthcc", encoder=enc2, progress=False)
    assert rep2.encoded == {**{p: 0 for p in rep.encoded}, "clothing": len(new - old)}
    assert sorted(enc2.seen) == sorted(new - old)

    m = pd.read_parquet(Workspace.at(synth).manifest("synthcc"))
    train = m[m["split"] == "train"].reset_index(drop=True)
    t = load_text_features(synth, "synthcc", "minilm", train, ["biometrics", "clothing", "pose"], "summary")
    assert tuple(t.shape) == (n_train, 3, 384)
    clothing = t[:, 1].numpy()
    by_outfit = silhouette_score(clothing, train["clothes_id"], metric="cosine")
    by_identity = silhouette_score(clothing, train["pid"], metric="cosine")
    assert by_outfit > 0.2 and by_outfit > by_identity + 0.15, (by_outfit, by_identity)
    np.testing.assert_allclose(np.linalg.norm(clothing, axis=1), 1.0, atol=1e-5)
