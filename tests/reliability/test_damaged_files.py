"""A truncated caption part or feature shard is quarantined with one line and only its rows are recomputed
(issue 28, item 6)."""

from __future__ import annotations

import re

import pytest

from captions.features.reader import read_perspective
from differ_common.errors import DataError
from flows.cli import main
from flows.status import gather_status

SMALL = ["--size", "tiny", "--set", "num_train_ids=4", "--set", "num_test_ids=2"]


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    w = tmp_path_factory.mktemp("w")
    assert main(["--workdir", str(w), "manifest", "synthcc", *SMALL]) == 0
    assert main(["--workdir", str(w), "caption", "--dataset", "synthcc", "--perspectives", "clothing"]) == 0
    return w


def test_a_truncated_caption_part_is_quarantined_and_its_rows_recaptioned(captioned, capsys):
    w = str(captioned)
    parts = sorted((captioned / "captions" / "synthcc" / "perspective=clothing").glob("part-*.parquet"))
    assert len(parts) > 1
    _truncate(parts[0])
    capsys.readouterr()
    assert main(["--workdir", w, "status", "--dataset", "synthcc"]) == 0  # no traceback
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is damaged" in err and "_quarantine" in err, err
    assert (
        captioned / "captions" / "synthcc" / "_quarantine" / "perspective=clothing" / parts[0].name
    ).is_file()
    assert main(["--workdir", w, "caption", "--dataset", "synthcc", "--perspectives", "clothing"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"clothing\s+generated\s+(\d+)\s+reused\s+(\d+)\s+total\s+(\d+)", out)
    assert m and 0 < int(m[1]) < int(m[3]) and int(m[1]) + int(m[2]) == int(m[3]), out  # only its rows
    rows = {r["perspective"]: r for r in gather_status(w, "synthcc")["datasets"]["synthcc"]["captions"]}
    assert rows["clothing"]["missing"] == 0 and rows["clothing"]["stale"] == 0


def test_a_truncated_feature_shard_is_quarantined_and_its_rows_encoded_again(captioned, capsys):
    w = str(captioned)
    enc = ["--workdir", w, "encode", "--dataset", "synthcc", "--perspectives", "clothing", "--no-progress"]
    assert main(enc) == 0
    folder = captioned / "features" / "synthcc" / "minilm" / "perspective=clothing"
    shards = sorted(folder.glob("shard-*.parquet"))
    assert shards
    _truncate(shards[0])
    capsys.readouterr()
    assert main(enc) == 0  # the damaged shard is moved aside and its rows encoded again, nothing else
    assert "is damaged" in capsys.readouterr().err and not shards[0].exists()
    feats = {r["perspective"]: r for r in gather_status(w, "synthcc")["datasets"]["synthcc"]["features"]}
    assert feats["clothing"]["missing"] == 0 and feats["clothing"]["encoded"] == feats["clothing"]["current"]
    ids, vecs = read_perspective(captioned, "synthcc", "minilm", "clothing")
    assert len(ids) == feats["clothing"]["current"] and vecs.shape[0] == len(ids)

    shard = sorted(folder.glob("shard-*.parquet"))[0]
    _truncate(shard)
    with pytest.raises(DataError, match="damaged feature shard") as err:  # what training reads
        read_perspective(captioned, "synthcc", "minilm", "clothing")
    assert "\n" not in str(err.value) and "differ encode --dataset synthcc --encoder minilm" in str(err.value)
    assert not shard.exists()
