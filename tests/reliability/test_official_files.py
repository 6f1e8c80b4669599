"""Official release files are parsed, never executed (issue 28, item 4)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from captions.features.interop import read_npz
from differ_common.errors import DataError
from differ_common.plain_npz import load_plain_npz
from flows.cli import main


class _Payload:
    """Pickles as a call of ``os.system``: what a crafted ``train.npz`` carries."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_release(tmp_path, marker):
    folder = tmp_path / "release" / "EVA02-CLIP-B-16"
    folder.mkdir(parents=True)
    meta = np.empty(2, dtype=object)
    meta[0], meta[1] = "001_1_c1_0000", _Payload(marker)
    np.savez(folder / "train.npz", data=np.zeros((12, 4), np.float32), metadata=meta)
    return folder


def test_a_crafted_npz_runs_nothing_and_is_refused_in_one_line(tmp_path, capsys):
    marker = tmp_path / "pwned"
    folder = _crafted_release(tmp_path, marker)
    with pytest.raises(DataError, match="refused to load"):
        read_npz(folder / "train.npz", 6)
    assert not marker.exists()
    rc = main(["--workdir", str(tmp_path / "w"), "encode", "--dataset", "synthcc", "--import-official",
               str(folder)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not marker.exists()
    assert err.count("\n") == 0 and "train.npz" in err and "download it again" in err, err


def test_the_release_s_string_keys_and_number_arrays_still_load(tmp_path):
    keys = np.array(["001_1_c1_0000", "002_1_c2_0001"], dtype=object)
    np.savez(tmp_path / "ok.npz", data=np.ones((12, 4), np.float16), metadata=keys)
    z = load_plain_npz(tmp_path / "ok.npz")
    assert z["metadata"].tolist() == keys.tolist() and z["data"].dtype == np.float16
    data, got = read_npz(tmp_path / "ok.npz", 6)
    assert got == keys.tolist() and data.shape == (2, 6, 4)


@pytest.mark.parametrize(
    "payload", [np.array([1, {"a": 1}], dtype=object), np.array([b"x", 2], dtype=object)]
)
def test_object_arrays_of_anything_but_str_are_refused(tmp_path, payload):
    np.savez(tmp_path / "x.npz", data=np.ones((12, 4)), metadata=payload)
    with pytest.raises(DataError, match="not an array of strings"):
        load_plain_npz(tmp_path / "x.npz")
