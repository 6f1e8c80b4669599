"""Per-identity biometric summaries: extractive (default, deterministic) and hf:<dir> (a tiny local LM)."""

from __future__ import annotations

import pandas as pd
import pytest

from captions import caption_dataset, summarize_dataset
from captions.summaries import extractive_summary, rank_captions
from differ_common.errors import ConfigError, DataError
from differ_common.workspace import Workspace


def test_extractive_picks_the_most_representative_caption_deterministically():
    caps = [
        "A young male person with tall height and slim build.",
        "A young male person with tall height, slim build and light skin.",
        "A young male person with tall height and slim build.",
        "A senior female person with short height.",  # a noisy outlier
        "Red jacket and blue jeans.",
    ]
    best = extractive_summary(caps)
    assert best.startswith("A young male person with tall height")
    for k in range(5):  # order of the input never matters
        rotated = caps[k:] + caps[:k]
        assert extractive_summary(rotated) == best
        assert rank_captions(rotated) == rank_captions(caps)
    assert rank_captions(caps)[-1] == "Red jacket and blue jeans."
    assert extractive_summary([]) == "" and extractive_summary(["", ""]) == ""


def test_summaries_table_per_training_identity(synth_ws):
    with pytest.raises(DataError, match="--perspectives biometrics"):
        summarize_dataset(synth_ws, "synthcc")
    caption_dataset(synth_ws, "synthcc", perspectives="biometrics", noise=0.2)
    path = summarize_dataset(synth_ws, "synthcc")
    ws = Workspace.at(synth_ws)
    assert path == ws.summaries("synthcc")
    df = pd.read_parquet(path)
    for col in ("pid", "raw_pid", "summary", "n_captions", "summarizer", "source_fingerprint"):
        assert col in df.columns
    assert df["pid"].tolist() == [0, 1, 2, 3] and df["raw_pid"].tolist() == [1, 2, 3, 4]
    assert str(df["pid"].dtype) == "int64" and str(df["n_captions"].dtype) == "int64"
    assert df["n_captions"].tolist() == [3, 3, 3, 3] and set(df["summarizer"]) == {"extractive"}
    caps = pd.read_parquet(ws.perspective_dir("synthcc", "biometrics"))
    manifest = pd.read_parquet(ws.manifest("synthcc"))
    caps = caps.merge(manifest[["image_id", "pid"]], on="image_id")
    for r in df.itertuples():
        assert r.summary in set(caps.loc[caps["pid"] == r.pid, "caption"])
    # the captions table still reads as the hive-partitioned §4 table next to the summaries
    assert len(pd.read_parquet(ws.captions_dir("synthcc"))) == 12
    before = path.read_bytes()
    summarize_dataset(synth_ws, "synthcc")
    assert path.read_bytes() == before


def test_hf_summarizer_with_a_tiny_local_causal_lm(synth_ws, tiny_lm):
    caption_dataset(synth_ws, "synthcc", perspectives="biometrics")
    path = summarize_dataset(synth_ws, "synthcc", summarizer=f"hf:{tiny_lm}", max_new_tokens=8)
    df = pd.read_parquet(path)
    assert len(df) == 4 and set(df["summarizer"]) == {f"hf:{tiny_lm.name}"}
    assert (
        df["summary"]
        .map(lambda s: isinstance(s, str) and s == s.strip() and len(s) > 0 and "\n" not in s)
        .all()
    )
    assert set(df["flag"]) <= {"", "empty-fallback"}
    again = pd.read_parquet(
        summarize_dataset(synth_ws, "synthcc", summarizer=f"hf:{tiny_lm}", max_new_tokens=8)
    )
    pd.testing.assert_frame_equal(df, again)  # greedy + reuse of unchanged identities
    ext = pd.read_parquet(summarize_dataset(synth_ws, "synthcc"))
    assert set(ext["summarizer"]) == {"extractive"}
    assert ext["source_fingerprint"].iloc[0] != df["source_fingerprint"].iloc[0]


def test_bad_summarizer_specs(synth_ws, tmp_path):
    caption_dataset(synth_ws, "synthcc", perspectives="biometrics")
    with pytest.raises(ConfigError, match="unknown summarizer 'abstractive'"):
        summarize_dataset(synth_ws, "synthcc", summarizer="abstractive")
    with pytest.raises(ConfigError, match="model folder not found"):
        summarize_dataset(synth_ws, "synthcc", summarizer=f"hf:{tmp_path / 'none'}")
