"""Import / export of the text features in the official DIFFER release format, for A/B comparisons.

The release (github.com/xliangp/DIFFER) lays out, per dataset::

    <DIR>/<TextEncoderVersion>/train.npz                 data [N_images * P, D] (image-major, P rows per image,
                                                         perspective order 0..5 = differ_common.perspectives.PERSPECTIVES),
                                                         metadata [N_images] image keys without extension
    <DIR>/train_caption_summary_biometric.json            {pid: {"ft_<TextEncoderVersion>": [D floats]}}

Image keys are paths relative to the split folder without extension (LTCC: the file name stem; PRCC
``<pid folder>/<stem>``); they are matched to manifest ``image_id``s by their last path components. Summary keys
are what the authors' dataset readers look up: the relabelled train pid (the manifest's ``pid``) for LTCC, the
raw pid (``raw_pid``) for PRCC (``DatasetInfo.summary_id_column``). Imported features go to the encoder label
``official:<TextEncoderVersion>``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from differ_common.errors import DataError
from differ_common.perspectives import PERSPECTIVES, SUMMARY_PERSPECTIVE
from differ_common.workspace import Workspace, slug

NPZ_NAME = "train.npz"
SUMMARY_JSON = "train_caption_summary_biometric.json"
_NPZ_EXPECT = "arrays 'data' [N_images*P, D] float and 'metadata' [N_images] image keys"
_JSON_EXPECT = '{"<pid>": {"ft_<encoder>": [D floats]}}'


@dataclass
class ImportReport:
    encoder: str
    dir: Path
    dim: int
    rows: dict[str, int] = field(default_factory=dict)  # rows written per perspective
    unmatched_keys: int = 0  # npz keys with no manifest image
    images_without_feature: int = 0  # manifest images absent from the npz
    pids_without_summary: int = 0


def official_spec(name: str) -> str:
    """The encoder label under which imported release features are stored."""
    return f"official:{name}"


def summary_pid_column(dataset: str) -> str:
    """The manifest column whose values key ``dataset``'s release summary JSON (``DatasetInfo.summary_id_column``:
    ``pid``, PRCC ``raw_pid``)."""
    from data_manifests.registry import dataset_traits

    return dataset_traits(dataset).summary_id_column


def _summary_keys(m: Any, dataset: str) -> dict[int, int] | None:
    """{summary JSON key: our pid} over the manifest's rows (None without a ``pid`` column)."""
    if "pid" not in m.columns:
        return None
    col = summary_pid_column(dataset)
    if col not in m.columns:
        raise DataError(f"the {dataset} manifest lacks '{col}', which keys its release summary JSON")
    pairs = set(zip(m[col].astype(int), m["pid"].astype(int)))
    out = dict(pairs)
    if len(out) != len(pairs) or len(set(out.values())) != len(out):
        raise DataError(
            f"the {dataset} manifest's '{col}' and 'pid' are not one-to-one; cannot key summaries"
        )
    return out


def _stem_suffix(image_id: str, depth: int) -> str:
    parts = PurePosixPath(str(image_id)).with_suffix("").parts
    return "/".join(parts[-depth:])


def export_keys(image_ids: list[str]) -> list[str]:
    """Shortest unique trailing path (without extension) per image: the release's key style (LTCC: file stem)."""
    max_depth = max((len(PurePosixPath(i).parts) for i in image_ids), default=1)
    for depth in range(1, max_depth + 1):
        keys = [_stem_suffix(i, depth) for i in image_ids]
        if len(set(keys)) == len(keys):
            return keys
    raise DataError("the manifest has duplicate image_id values; cannot build unique release keys")


def locate_release(src: str | Path, name: str | None = None) -> tuple[Path, Path | None, str]:
    """(train.npz, summary json or None, TextEncoderVersion name) found in ``src`` (a folder or the npz itself)."""
    src = Path(src).expanduser()
    if src.is_file():
        npz = src
    elif (src / NPZ_NAME).is_file():
        npz = src / NPZ_NAME
    elif src.is_dir():
        found = sorted(src.glob(f"*/{NPZ_NAME}"))
        if name:
            found = [f for f in found if f.parent.name == name]
        if len(found) != 1:
            raise DataError(
                f"{src}: expected exactly one <TextEncoderVersion>/{NPZ_NAME} (found {[str(f) for f in found]}); "
                "pass the version folder or --official-name"
            )
        npz = found[0]
    else:
        raise DataError(f"{src}: not found; give the folder holding <TextEncoderVersion>/{NPZ_NAME}")
    summary = next(
        (p for p in (npz.parent / SUMMARY_JSON, npz.parent.parent / SUMMARY_JSON) if p.is_file()), None
    )
    return npz, summary, name or npz.parent.name


def read_npz(path: Path, n_perspectives: int) -> tuple[np.ndarray, list[str]]:
    """Validated (data [N, P, D] float32, keys) from a release npz; DataError names the file and the layout."""
    from differ_common.plain_npz import load_plain_npz

    try:  # plain arrays only: the keys' object array is read without running any code from the file
        z = load_plain_npz(path)
    except DataError as exc:
        raise DataError(f"{exc}; expected {_NPZ_EXPECT}") from None
    if "data" not in z or "metadata" not in z:
        raise DataError(f"{path}: expected {_NPZ_EXPECT}; found keys {sorted(z)}")
    data, meta = z["data"], z["metadata"]
    if data.ndim != 2 or not np.issubdtype(data.dtype, np.number):
        raise DataError(f"{path}: 'data' has shape {data.shape} dtype {data.dtype}; expected {_NPZ_EXPECT}")
    if meta.ndim != 1 or len(meta) == 0:
        raise DataError(f"{path}: 'metadata' has shape {meta.shape}; expected {_NPZ_EXPECT}")
    n = len(meta)
    if data.shape[0] != n * n_perspectives:
        raise DataError(
            f"{path}: 'data' has {data.shape[0]} rows for {n} metadata keys; expected {n} x {n_perspectives} "
            f"perspectives = {n * n_perspectives} rows ({_NPZ_EXPECT})"
        )
    keys = [str(k) for k in meta.tolist()]
    if len(set(keys)) != n:
        raise DataError(f"{path}: 'metadata' holds duplicate image keys; expected one key per image")
    return data.astype(np.float32, copy=False).reshape(n, n_perspectives, data.shape[1]), keys


def read_summary_json(path: Path, ft_key: str | None, dim: int | None) -> tuple[dict[int, np.ndarray], str]:
    """Validated {pid: vector} from a release summary JSON, and the ft key used."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc}); expected {_JSON_EXPECT}") from exc
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, dict) for v in obj.values()):
        raise DataError(f"{path}: expected {_JSON_EXPECT}")
    if ft_key is None or not all(ft_key in v for v in obj.values()):
        common = set.intersection(*(set(k for k in v if str(k).startswith("ft_")) for v in obj.values()))
        if len(common) != 1:
            raise DataError(
                f"{path}: cannot choose the feature key ({ft_key!r} absent; ft_* keys in every entry: "
                f"{sorted(common)}); expected {_JSON_EXPECT}"
            )
        ft_key = next(iter(common))
    out: dict[int, np.ndarray] = {}
    for pid, entry in obj.items():
        try:
            vec = np.asarray(entry[ft_key], dtype=np.float32)
            pid_int = int(pid)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{path}: entry {pid!r} is not a number-keyed float list; expected {_JSON_EXPECT}"
            ) from exc
        vec = vec.reshape(-1) if vec.ndim == 2 and vec.shape[0] == 1 else vec
        if vec.ndim != 1 or (dim is not None and vec.shape[0] != dim):
            raise DataError(
                f"{path}: entry {pid!r} {ft_key} has shape {vec.shape}; expected [{dim if dim else 'D'}] "
                f"(the npz's D) in {_JSON_EXPECT}"
            )
        out[pid_int] = vec
    if len({v.shape[0] for v in out.values()}) != 1:
        raise DataError(f"{path}: vectors of different lengths; expected {_JSON_EXPECT}")
    return out, ft_key


def _train_manifest(ws: Workspace, dataset: str, manifest: Any, split: str | None) -> Any:
    if manifest is None:
        from data_manifests.schema import load_manifest

        manifest = load_manifest(ws.root, dataset)
    if split is not None and "split" in manifest.columns:
        manifest = manifest[manifest["split"] == split]
    if not len(manifest):
        raise DataError(f"{ws.manifest(dataset)}: no '{split}' rows to match release features to")
    return manifest.reset_index(drop=True)


def _replace_perspective(folder: Path, perspective: str, table: Any) -> None:
    """Write ``table`` as the only committed shard of ``perspective`` (meta switches, then old files go)."""
    from captions.features.tables import SHARD_PREFIX, _new_name, _write_meta, _write_shard, read_meta

    pdir = folder / f"perspective={perspective}"
    pdir.mkdir(parents=True, exist_ok=True)
    old = [p for p in pdir.glob("*.parquet")]
    name = _new_name(SHARD_PREFIX)
    _write_shard(pdir / name, table)
    meta = read_meta(folder)
    meta.setdefault("perspectives", {})[perspective] = {"shards": [name], "n_rows": int(table.num_rows)}
    _write_meta(folder, meta)
    for p in old:
        p.unlink(missing_ok=True)


def _vec_shas(vecs: np.ndarray) -> list[str]:
    import hashlib

    return ["vec:" + hashlib.sha256(v.tobytes()).hexdigest()[:40] for v in np.ascontiguousarray(vecs)]


def import_official(
    workdir: str | Path | None,
    dataset: str,
    src: str | Path,
    manifest: Any = None,
    name: str | None = None,
    perspectives: list[str] | None = None,
    ft_key: str | None = None,
    split: str | None = "train",
) -> ImportReport:
    """Import a release ``train.npz`` (+ summary JSON when present) for ``manifest`` (default: the workspace's
    ``split`` rows) into ``W/features/<ds>/<slug(official:<name>)>/``; ``load_text_features`` then reads it with
    encoder ``official:<name>``."""
    from captions.features.tables import _check_dim, _write_meta, read_meta, shard_table
    from differ_common.io import stage_lock

    ws = Workspace.at(workdir)
    npz, summary_path, name = locate_release(src, name)
    persp = list(perspectives or PERSPECTIVES)
    data, keys = read_npz(npz, len(persp))
    dim = int(data.shape[2])
    summaries: dict[int, np.ndarray] = {}
    if summary_path is not None:
        summaries, ft_key = read_summary_json(summary_path, ft_key or f"ft_{name}", dim)
    spec = official_spec(name)
    folder = ws.features_dir(dataset, spec)
    _check_dim(folder, dim, f"{npz}")
    m = _train_manifest(ws, dataset, manifest, split)
    depths = sorted({k.count("/") + 1 for k in keys})
    lookup: dict[str, str] = {}
    for d in depths:
        cand = [_stem_suffix(i, d) for i in m["image_id"]]
        counts: dict[str, int] = {}
        for c in cand:
            counts[c] = counts.get(c, 0) + 1
        for c, img in zip(cand, m["image_id"]):
            if counts[c] == 1:
                lookup.setdefault(c, img)
    matched = [(i, lookup[k]) for i, k in enumerate(keys) if k in lookup]
    if not matched:
        raise DataError(
            f"{npz}: none of its {len(keys)} image keys (e.g. {keys[:3]}) match the {dataset} manifest's image_ids "
            f"(e.g. {m['image_id'].head(3).tolist()}); is it the right dataset/split?"
        )
    rows_idx = np.array([i for i, _ in matched])
    image_ids = [img for _, img in matched]
    report = ImportReport(encoder=spec, dir=folder, dim=dim)
    report.unmatched_keys = len(keys) - len(matched)
    report.images_without_feature = len(m) - len(set(image_ids))
    normalized = True
    with stage_lock(ws.locks() / f"encode-{dataset}-{slug(spec)}.lock", what=f"import into {folder}"):
        for j, p in enumerate(persp):
            vecs = data[rows_idx, j]
            normalized &= bool(np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3))
            _replace_perspective(folder, p, shard_table(image_ids, p, _vec_shas(vecs), vecs))
            report.rows[p] = len(image_ids)
        if summaries:
            to_pid = _summary_keys(m, dataset)
            if to_pid is None:
                json_keys = pids = sorted(summaries)
            else:
                json_keys = sorted(set(to_pid) & set(summaries), key=to_pid.__getitem__)
                pids = [to_pid[k] for k in json_keys]
                report.pids_without_summary = len(set(to_pid) - set(summaries))
            if pids:
                vecs = np.stack([summaries[k] for k in json_keys])
                normalized &= bool(np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3))
                table = shard_table([str(p) for p in pids], SUMMARY_PERSPECTIVE, _vec_shas(vecs), vecs, pids)
                _replace_perspective(folder, SUMMARY_PERSPECTIVE, table)
                report.rows[SUMMARY_PERSPECTIVE] = len(pids)
        meta = read_meta(folder)
        meta.update(
            {
                "encoder": spec,
                "dataset": dataset,
                "dim": dim,
                "dtype": "float32",
                "normalized": normalized,
                "source": "official-import",
                "imported_from": {"npz": str(npz), "summary": str(summary_path) if summary_path else None},
                "ft_key": ft_key,
                "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        _write_meta(folder, meta)
    return report


def export_official(
    workdir: str | Path | None,
    dataset: str,
    encoder: str,
    out_dir: str | Path,
    manifest: Any = None,
    name: str | None = None,
    split: str | None = "train",
) -> dict[str, Path]:
    """Write our features of ``manifest`` (default: the workspace's ``split`` rows) in the release format:
    ``out_dir/<name>/train.npz`` and, when summaries exist, ``out_dir/train_caption_summary_biometric.json``
    (``name`` defaults to the encoder slug; the JSON key is ``ft_<name>``; pids as ``summary_pid_column``)."""
    from captions.features.reader import load_text_features, read_perspective
    from captions.features.tables import read_meta
    from differ_common.io import atomic_path, write_json_atomic

    ws = Workspace.at(workdir)
    m = _train_manifest(ws, dataset, manifest, split)
    name = name or slug(encoder)
    feats = load_text_features(ws.root, dataset, encoder, m, list(PERSPECTIVES)).numpy()
    n, p, d = feats.shape
    out = Path(out_dir).expanduser()
    npz_path = out / name / NPZ_NAME
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, data=feats.reshape(n * p, d), metadata=np.array(export_keys(m["image_id"].tolist())))
    written = {"npz": npz_path}
    meta = read_meta(ws.features_dir(dataset, encoder))
    if SUMMARY_PERSPECTIVE in meta.get("perspectives", {}):
        ids, vecs = read_perspective(ws.root, dataset, encoder, SUMMARY_PERSPECTIVE)
        to_pid = _summary_keys(m, dataset)
        key_of = {p: k for k, p in to_pid.items()} if to_pid is not None else None
        rows = [(int(i), v) for i, v in zip(ids.tolist(), vecs)]
        rows = [(key_of[i], v) for i, v in rows if i in key_of] if key_of is not None else rows
        obj = {str(k): {f"ft_{name}": [float(x) for x in v]} for k, v in sorted(rows, key=lambda t: t[0])}
        written["summary"] = write_json_atomic(out / SUMMARY_JSON, obj)
    return written
