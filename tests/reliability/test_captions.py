"""Caption rows are keyed by what the image is, not only its name (issue 28, item 3)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from PIL import Image

from flows.cli import main
from flows.status import gather_status

SMALL = ["--size", "tiny", "--set", "num_train_ids=4", "--set", "num_test_ids=2"]


def _caption_counts(w) -> dict[str, dict]:
    rows = gather_status(w, "synthcc")["datasets"]["synthcc"]["captions"]
    return {r["perspective"]: r for r in rows}


def test_changed_pixels_under_the_same_name_make_their_captions_stale(tmp_path, capsys):
    w = str(tmp_path / "w")
    assert main(["--workdir", w, "manifest", "synthcc", *SMALL]) == 0
    assert (
        main(["--workdir", w, "caption", "--dataset", "synthcc", "--perspectives", "clothing,biometrics"])
        == 0
    )
    manifest = pd.read_parquet(tmp_path / "w" / "manifests" / "synthcc.parquet")
    train = manifest[manifest["split"] == "train"]
    assert train["image_sha"].str.len().eq(16).all() and train["image_sha"].nunique() == len(train)
    assert _caption_counts(w)["clothing"]["stale"] == 0

    changed = train["path"].tolist()[:3]  # the images are redrawn under the same names
    for path in changed:
        arr = np.asarray(Image.open(path)).copy()
        Image.fromarray(255 - arr).save(path)
    assert main(["--workdir", w, "manifest", "synthcc", *SMALL]) == 0  # same settings: the folder is kept
    counts = _caption_counts(w)
    assert counts["clothing"]["stale"] == 3 and counts["clothing"]["current"] == len(train) - 3, counts
    assert counts["biometrics"]["stale"] == 3

    capsys.readouterr()
    assert (
        main(["--workdir", w, "caption", "--dataset", "synthcc", "--perspectives", "clothing,biometrics"])
        == 0
    )
    out = capsys.readouterr().out
    assert re.search(rf"clothing\s+generated\s+3\s+reused\s+{len(train) - 3}\s", out), out
    counts = _caption_counts(w)
    assert counts["clothing"]["stale"] == 0 and counts["clothing"]["current"] == len(train)
