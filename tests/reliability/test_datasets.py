"""A generated dataset is never replaced by one made with other settings without saying so (issue 28, item 2)."""

from __future__ import annotations

import hashlib

import pytest

from data_manifests.registry import make_manifest
from differ_common.errors import DataError
from flows.cli import main


def _digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def user_made(tmp_path_factory):
    """`differ manifest synthcc --size tiny --set identity_cue_strength=2`: the user's own dataset."""
    w = tmp_path_factory.mktemp("w")
    assert main(["--workdir", str(w), "manifest", "synthcc", "--size", "tiny", "--set",
                 "identity_cue_strength=2", "--set", "num_train_ids=4", "--set", "num_test_ids=2"]) == 0  # fmt: skip
    return w


def test_the_pipeline_s_default_settings_do_not_replace_the_user_s_dataset(user_made):
    folder = user_made / "data" / "SynthCC"
    before, manifest = _digest(folder), (user_made / "manifests" / "synthcc.parquet").read_bytes()
    with pytest.raises(DataError) as err:  # what `differ run --config synthcc_tiny`'s manifest task calls
        make_manifest(user_made, "synthcc", None)
    msg = str(err.value)
    assert "\n" not in msg and "identity_cue_strength 2.0 there, 1.0 asked" in msg, msg
    assert "num_train_ids 4 there, 100 asked" in msg and "--refresh manifest" in msg
    assert (
        _digest(folder) == before and (user_made / "manifests" / "synthcc.parquet").read_bytes() == manifest
    )


def test_the_same_settings_reuse_it_and_regenerate_replaces_it_on_request(user_made, capsys):
    same = ["--workdir", str(user_made), "manifest", "synthcc", "--size", "tiny", "--set", "identity_cue_strength=2",
            "--set", "num_train_ids=4", "--set", "num_test_ids=2"]  # fmt: skip
    assert main(same) == 0 and "reused" in capsys.readouterr().out
    tiny = ["--workdir", str(user_made), "manifest", "synthcc", "--size", "tiny"]
    assert main(tiny) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "other settings" in err and "--regenerate" in err, err
    assert main([*tiny, "--regenerate"]) == 0 and "generated" in capsys.readouterr().out
