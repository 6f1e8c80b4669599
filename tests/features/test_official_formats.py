"""Our release reader on text features written the way the authors' code reads them (xliangp/DIFFER @ 67acb5d).

Their writer is not published; the format is the one their readers take, ``data/datasets/{ltcc,prcc,
Celeb_light}.py::_process_dir_train``:

* ``<CAPTION_DIR>/<TEXT_MODEL_VERSION>/train.npz`` (``TEXT_MODEL_VERSION`` = ``EVA02-CLIP-<B-16|L-14|bigE-14>``
  from ``train.py``'s ``textModelVersionInfo``), read with ``np.load(path, allow_pickle=True)``: ``data``
  [N_images * P, D] and ``metadata`` [N_images] (an object array of str: hence ``allow_pickle``); P is
  ``data.shape[0] // metadata.shape[0]``; image ``i``'s rows are ``data[i*P:(i+1)*P]``, perspective order 0..5.
* metadata keys: LTCC ``basename(path)[:-4]``; PRCC ``path[len(rgb/train)+1:][:-4]`` = ``<pid folder>/<stem>``;
  Celeb-reID-light ``path[len(train)+1:][:-4]`` = the stem.
* ``<CAPTION_DIR>/train_caption_summary_biometric.json`` (``os.path.dirname(caption_dir)``):
  ``{str(pid): {"ft_" + TEXT_MODEL_VERSION: vector}}``; LTCC looks up the relabelled train pid, PRCC the raw pid
  (``int`` of the identity folder name); the vector is [1, D] (their commented ``np.asarray(...).shape[1]``, used
  in ``data/datasets/ccvid.py`` @ 508fc5a). Written with their ``write_json`` (``indent=4, separators=(',', ': ')``).
"""

from __future__ import annotations

import json

import numpy as np
from feature_helpers import manifest, write_manifest

from captions.features.interop import export_official, import_official
from captions.features.reader import load_text_features
from differ_common.perspectives import PERSPECTIVES

P, D = len(PERSPECTIVES), 8


def _write_their_release(
    caption_dir, version, keys, data, summary=None, ft_extra=None
) -> tuple[np.ndarray, dict | None]:
    """Their layout: ``version/train.npz`` (object-array metadata) and the dataset folder's summary JSON."""
    (caption_dir / version).mkdir(parents=True)
    np.savez(caption_dir / version / "train.npz", data=data, metadata=np.array(keys, dtype=object))
    if summary is None:
        return data, None
    obj = {}
    for key, vec in summary.items():
        entry = {"summary": f"person {key}: a tall adult", f"ft_{version}": [vec.tolist()]}  # [1, D]
        if ft_extra:
            entry[ft_extra] = np.ones((1, 2 * D)).tolist()  # another encoder's vectors in the same file
        obj[str(key)] = entry
    with open(caption_dir / "train_caption_summary_biometric.json", "w") as f:
        json.dump(obj, f, indent=4, separators=(",", ": "))
    return data, obj


def _their_rows(keys: list[str], data: np.ndarray, key: str) -> np.ndarray:
    """Their lookup: ``idx = list(metadata).index(key)``; ``data[idx*P:(idx+1)*P]``."""
    idx = keys.index(key)
    return data[idx * P : (idx + 1) * P].astype(np.float32)


def _release(n_keys: int, dtype, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_keys * P, D)).astype(dtype)


def _check_features(ws, ds, encoder, m, keys, data, their_key):
    t = load_text_features(ws, ds, encoder, m, list(PERSPECTIVES)).numpy()
    assert t.shape == (len(m), P, D)
    for i, img in enumerate(m["image_id"]):
        np.testing.assert_array_equal(t[i], _their_rows(keys, data, their_key(img)), err_msg=img)


def test_ltcc_release_as_their_reader_takes_it(tmp_path):
    raw = [1, 5, 12]  # relabelled 0, 1, 2
    ids = [f"train/{p:03d}_{o}_c{c}_{f:06d}.png" for p in raw for o, c, f in ((1, 3, 7), (2, 9, 101))]
    m = manifest(ids, [raw.index(int(i[6:9])) for i in ids])
    m["raw_pid"] = [int(i[6:9]) for i in ids]
    keys = [i[len("train/") : -4] for i in ids] + ["152_1_c2_000001"]  # + an image not in our manifest
    keys = [keys[j] for j in np.random.default_rng(0).permutation(len(keys))]
    summ = {pid: np.random.default_rng(10 + pid).normal(size=D) for pid in range(3)}  # relabelled pids
    data, _ = _write_their_release(
        tmp_path / "LTCC_ReID", "EVA02-CLIP-B-16", keys, _release(len(keys), np.float32, 1), summ,
        ft_extra="ft_EVA02-CLIP-L-14",
    )  # fmt: skip
    ws = tmp_path / "work"
    rep = import_official(ws, "ltcc", tmp_path / "LTCC_ReID", manifest=m)
    assert rep.encoder == "official:EVA02-CLIP-B-16" and rep.dim == D
    assert (rep.unmatched_keys, rep.images_without_feature, rep.pids_without_summary) == (1, 0, 0)
    _check_features(ws, "ltcc", rep.encoder, m, keys, data, lambda img: img.split("/")[-1][:-4])
    s = load_text_features(ws, "ltcc", rep.encoder, m, ["biometrics"], bio_source="summary").numpy()
    for i, pid in enumerate(m["pid"]):
        np.testing.assert_allclose(s[i, 0], summ[pid].astype(np.float32), err_msg=f"pid {pid}")


def test_prcc_release_summaries_are_keyed_by_raw_pid(tmp_path):
    raw = [1, 3, 7]  # relabelled 0, 1, 2: raw 1 must not land on relabelled pid 1
    ids = [f"rgb/train/{p:03d}/{c}_cropped_rgb{n:03d}.jpg" for p in raw for c, n in (("A", 1), ("C", 2))]
    m = manifest(ids, [raw.index(int(i.split("/")[2])) for i in ids])
    m["raw_pid"] = [int(i.split("/")[2]) for i in ids]
    keys = [i[len("rgb/train/") : -4] for i in ids][
        ::-1
    ]  # "<pid folder>/<stem>": stems repeat across folders
    summ = {p: np.random.default_rng(20 + p).normal(size=D) for p in raw}  # str(int(folder name))
    data, _ = _write_their_release(
        tmp_path / "prcc", "EVA02-CLIP-L-14", keys, _release(len(keys), np.float16, 2), summ
    )
    ws = tmp_path / "work"
    write_manifest(ws, "prcc", m)
    from flows.cli import main

    root = str(tmp_path / "prcc")
    assert main(["--workdir", str(ws), "encode", "--dataset", "prcc", "--import-official", root]) == 0
    enc = "official:EVA02-CLIP-L-14"
    _check_features(ws, "prcc", enc, m, keys, data, lambda img: img[len("rgb/train/") : -4])
    s = load_text_features(ws, "prcc", enc, m, ["biometrics"], bio_source="summary").numpy()
    for i, r in enumerate(m["raw_pid"]):
        np.testing.assert_allclose(s[i, 0], summ[r].astype(np.float32), err_msg=f"raw pid {r}")
    # our export writes the same convention back
    out = export_official(ws, "prcc", enc, tmp_path / "back", manifest=m, name="EVA02-CLIP-L-14")
    back = json.loads(out["summary"].read_text())
    assert sorted(back, key=int) == ["1", "3", "7"]
    np.testing.assert_allclose(back["3"]["ft_EVA02-CLIP-L-14"], summ[3], rtol=1e-6)


def test_celeb_light_release_without_summary(tmp_path):
    ids = [f"train/{p}_{n}_0.jpg" for p in (4, 9) for n in (1, 2, 3)]
    m = manifest(ids, [0, 0, 0, 1, 1, 1])
    keys = [i[len("train/") : -4] for i in ids]
    data, _ = _write_their_release(tmp_path / "Celeb", "EVA02-CLIP-bigE-14", keys, _release(6, np.float32, 3))
    ws = tmp_path / "work"
    rep = import_official(ws, "celeb_light", tmp_path / "Celeb", manifest=m)
    assert set(rep.rows) == set(PERSPECTIVES) and rep.pids_without_summary == 0
    _check_features(ws, "celeb_light", rep.encoder, m, keys, data, lambda img: img[len("train/") : -4])
