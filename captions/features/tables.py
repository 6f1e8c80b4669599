"""Text-feature tables: incremental, deduplicated, resumable encoding of the current captions (docs/design.md §5).

Layout under ``W/features/<ds>/<slug(encoder)>/``:

- ``perspective=<p>/shard-<ns>.parquet``: image_id, perspective, caption_sha (sha256 of the caption string),
  embedding (fixed-size list<float32>[D]); the identity summaries live under ``perspective=biometrics_summary``
  with image_id = str(pid) and an extra ``pid`` column;
- ``perspective=<p>/_pending-<ns>.parquet``: rows encoded by a run that has not committed yet (one file per
  batch, so a kill loses at most the batch in flight; the next run reuses them);
- ``meta.json``: encoder, encoder_fingerprint, dim, dtype, normalized, captions_fingerprint and, per
  perspective, the committed shard list (what readers read), row count and source fingerprint.

A run encodes each distinct caption string at most once, copies vectors of strings already present in the
shards, and drops rows whose image is no longer current or whose caption changed (rewriting the shards).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from differ_common.errors import DataError
from differ_common.fingerprint import sha256_json
from differ_common.perspectives import PERSPECTIVES, SUMMARY_PERSPECTIVE
from differ_common.workspace import Workspace, slug

log = logging.getLogger(__name__)

META = "meta.json"
SHARD_PREFIX = "shard-"
PENDING_PREFIX = "_pending-"
MAX_SHARDS = 16  # more committed shards than this triggers a compaction
SHARD_BYTES = 128 << 20  # target embedding bytes per compacted shard


@dataclass
class EncodeReport:
    """What one ``encode_dataset`` call did, per perspective (``biometrics_summary`` for the summaries)."""

    dataset: str
    encoder: str
    dir: Path
    dim: int | None
    encoded: dict[str, int] = field(default_factory=dict)  # distinct strings sent to the encoder now
    reused: dict[str, int] = field(default_factory=dict)  # rows whose vector existed (kept or copied by sha)
    total: dict[str, int] = field(default_factory=dict)  # current rows
    dropped: dict[str, int] = field(default_factory=dict)  # stale rows removed from the shards
    seconds: float = 0.0


# ---------------------------------------------------------------- small helpers
def caption_sha(text: str) -> str:
    """sha256 hex of a caption string (the dedupe key)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _new_name(prefix: str) -> str:
    return f"{prefix}{time.time_ns():020d}-{uuid.uuid4().hex[:6]}.parquet"


def read_meta(folder: Path) -> dict[str, Any]:
    import json

    p = Path(folder) / META
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except ValueError as exc:
        raise DataError(
            f"{p}: not valid JSON ({exc}); delete the file and run `differ encode` again"
        ) from exc


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    from differ_common.io import write_json_atomic

    meta["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json_atomic(Path(folder) / META, meta)


def embeddings_of(table: Any, dim: int | None = None) -> np.ndarray:
    """The ``embedding`` column of a pyarrow table as a float32 ``[n, D]`` array."""
    import pyarrow as pa

    col = table.column("embedding")
    arr = pa.concat_arrays(col.chunks) if col.num_chunks != 1 else col.chunk(0)
    if len(arr) == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    size = arr.type.list_size if pa.types.is_fixed_size_list(arr.type) else len(arr[0])
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(len(arr), size), dtype=np.float32)


def shard_table(
    image_ids: Iterable[str], perspective: str, shas: Iterable[str], vectors: np.ndarray, pids: Any = None
) -> Any:
    """A pyarrow table in the shard schema (``pid`` only for the summary perspective)."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    cols = {
        "image_id": pa.array(list(image_ids), pa.string()),
        "perspective": pa.array([perspective] * n, pa.string()),
        "caption_sha": pa.array(list(shas), pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
    }
    if pids is not None:
        cols["pid"] = pa.array(np.asarray(pids, dtype=np.int64), pa.int64())
    return pa.table(cols)


def _write_shard(path: Path, table: Any) -> None:
    import pyarrow.parquet as pq

    from differ_common.io import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=["image_id", "perspective"])


def _check_dim(folder: Path, dim: int, what: str) -> None:
    meta = read_meta(folder)
    if meta.get("dim") not in (None, dim):
        raise DataError(
            f"{folder / META}: the existing features are {meta['dim']}-d ({meta.get('encoder')}) but {what} gives "
            f"{dim}-d vectors; features are never mixed: delete {folder} or use another encoder spec"
        )


# ---------------------------------------------------------------- current captions
def current_caption_rows(
    workdir: str | Path, dataset: str, perspectives: list[str] | None = None
) -> dict[str, Any]:
    """``{perspective: DataFrame[image_id, caption]}`` of the current captions (+ the summaries, keyed by pid)."""
    import pandas as pd

    ws = Workspace.at(workdir)
    frames: dict[str, Any] = {}
    df = _read_current_captions(ws, dataset)
    if df is not None and len(df):
        for p, sub in df.groupby("perspective", sort=False):
            frames[str(p)] = sub[["image_id", "caption"]].reset_index(drop=True)
    summ = ws.summaries(dataset)
    if summ.is_file():
        s = pd.read_parquet(summ)
        missing = {"pid", "summary"} - set(s.columns)
        if missing:
            raise DataError(
                f"{summ}: missing columns {sorted(missing)}; run `differ summarize --dataset {dataset}`"
            )
        s = s.dropna(subset=["summary"]).drop_duplicates("pid", keep="last")
        frames[SUMMARY_PERSPECTIVE] = pd.DataFrame(
            {
                "image_id": s["pid"].astype("int64").astype(str).to_numpy(),
                "caption": s["summary"].astype(str).to_numpy(),
                "pid": s["pid"].astype("int64").to_numpy(),
            }
        )
    order = [*PERSPECTIVES, SUMMARY_PERSPECTIVE]
    keys = sorted(frames, key=lambda p: (order.index(p) if p in order else len(order), p))
    if perspectives is not None:
        keys = [p for p in keys if p in perspectives]
    return {p: frames[p] for p in keys}


def _read_current_captions(ws: Workspace, dataset: str) -> Any:
    """Current caption rows of every recorded perspective (``captions.table``), None when none are recorded."""
    from captions.table import read_current_captions

    if not ws.captions_current(dataset).is_file():
        return None
    df = read_current_captions(ws.root, dataset)
    if df is None or not len(df):
        return df
    df = df.dropna(subset=["caption"])
    df = df.assign(image_id=df["image_id"].astype(str), caption=df["caption"].astype(str))
    return df.drop_duplicates(["perspective", "image_id"], keep="last")


def _source_fingerprints(ws: Workspace, dataset: str) -> dict[str, str]:
    """Upstream fingerprints recorded in meta.json: _current.json's per perspective, the summaries file hash."""
    from captions.table import read_current_json
    from differ_common.fingerprint import sha256_file

    fps: dict[str, str] = {}
    for p, info in read_current_json(ws.root, dataset).items():
        if isinstance(info, dict) and "fingerprint" in info:
            fps[p] = str(info["fingerprint"])
    if ws.summaries(dataset).is_file():
        fps[SUMMARY_PERSPECTIVE] = sha256_file(ws.summaries(dataset), 16)
    return fps


# ---------------------------------------------------------------- one perspective
class _PerspectiveStore:
    """The shard files of one perspective folder, read lazily."""

    def __init__(self, folder: Path, perspective: str) -> None:
        import pandas as pd
        import pyarrow.parquet as pq

        from differ_common.io import clean_stale_temps

        self.folder = folder
        self.perspective = perspective
        clean_stale_temps(folder)
        files = sorted(folder.glob(f"{SHARD_PREFIX}*.parquet")) + sorted(
            folder.glob(f"{PENDING_PREFIX}*.parquet")
        )
        tables = []
        for f in files:
            try:
                tables.append((f, pq.read_table(f, columns=["image_id", "caption_sha"]), pq.read_schema(f)))
            except Exception as exc:  # noqa: BLE001 - damaged: moved aside, its rows are encoded again now
                from differ_common.quarantine import quarantine

                why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                encoder = read_meta(folder.parent).get("encoder", "<encoder>")
                quarantine(f, folder.parent, why, f"differ encode --dataset {folder.parent.parent.name} "
                           f"--encoder {encoder}")  # fmt: skip
        self.files = [f for f, _, _ in tables]
        frames = []
        self.dims: set[int] = set()
        for i, (_f, t, schema) in enumerate(tables):
            emb_type = schema.field("embedding").type
            self.dims.add(int(getattr(emb_type, "list_size", -1)))
            frames.append(
                pd.DataFrame({"image_id": t.column(0).to_pylist(), "caption_sha": t.column(1).to_pylist()})
            )
            frames[-1]["file"] = i
            frames[-1]["row"] = np.arange(t.num_rows)
        cols = ["image_id", "caption_sha", "file", "row"]
        self.rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)

    def vectors(self, picks: Any, dim: int) -> np.ndarray:
        """Vectors of the rows ``picks`` (a frame with file/row columns), in order."""
        import pyarrow.parquet as pq

        out = np.empty((len(picks), dim), dtype=np.float32)
        if not len(picks):
            return out
        pos = np.arange(len(picks))
        for fi, sub in picks.assign(_pos=pos).groupby("file"):
            emb = embeddings_of(pq.read_table(self.files[int(fi)], columns=["embedding"]), dim)
            out[sub["_pos"].to_numpy()] = emb[sub["row"].to_numpy()]
        return out


def _encode_perspective(
    ws: Workspace,
    dataset: str,
    spec: str,
    perspective: str,
    cur: Any,
    get_encoder: Callable[[], Any],
    batch_size: int | None,
    tick: Callable[[int, int], None] | None,
    dim_hint: int | None,
    bar_enabled: bool,
) -> tuple[dict[str, int], list[str], int | None]:
    """Bring one perspective up to date; returns (counts, committed shard names, dim)."""
    folder = ws.feature_perspective_dir(dataset, spec, perspective)
    folder.mkdir(parents=True, exist_ok=True)
    is_summary = perspective == SUMMARY_PERSPECTIVE
    cur = cur.copy()
    cur["caption_sha"] = [caption_sha(c) for c in cur["caption"]]
    store = _PerspectiveStore(folder, perspective)
    dims = store.dims - {-1}
    if len(dims) > 1 or (dim_hint is not None and dims and dims != {dim_hint}):
        raise DataError(
            f"{folder}: shards hold {sorted(dims)}-d vectors, expected {dim_hint}-d; features are never mixed: "
            f"delete {folder} and run `differ encode` again"
        )
    dim = dim_hint if dim_hint is not None else (next(iter(dims)) if dims else None)

    have = store.rows.drop_duplicates(["image_id", "caption_sha"], keep="last")
    merged = cur.merge(have, on=["image_id", "caption_sha"], how="left")
    need = merged.loc[merged["file"].isna(), list(cur.columns)].reset_index(drop=True)
    by_sha = store.rows.drop_duplicates("caption_sha", keep="last").set_index("caption_sha")
    from_cache = need.loc[need["caption_sha"].isin(by_sha.index)].reset_index(drop=True)
    to_encode = need.loc[~need["caption_sha"].isin(by_sha.index)].reset_index(drop=True)
    uniq = to_encode.drop_duplicates("caption_sha")[["caption_sha", "caption"]].reset_index(drop=True)

    def pids_of(df: Any) -> Any:
        return df["pid"].to_numpy() if is_summary else None

    # vectors copied from shards for new rows whose string is already encoded (another image, older run)
    if len(from_cache):
        if dim is None:
            raise DataError(f"{folder}: shards without an embedding column; delete the folder and rerun")
        picks = by_sha.loc[from_cache["caption_sha"], ["file", "row"]].reset_index(drop=True)
        vecs = store.vectors(picks, dim)
        _write_shard(
            folder / _new_name(PENDING_PREFIX),
            shard_table(
                from_cache["image_id"], perspective, from_cache["caption_sha"], vecs, pids_of(from_cache)
            ),
        )

    # new strings: encode longest-first in batches, one pending file per batch
    if len(uniq):
        encoder = get_encoder()
        if dim is not None and encoder.dim != dim:
            raise DataError(
                f"{folder}: the existing shards are {dim}-d but encoder {spec} gives {encoder.dim}-d vectors; "
                f"features are never mixed: delete {ws.features_dir(dataset, spec)} or use another encoder spec"
            )
        dim = encoder.dim
        bs = max(1, int(batch_size or encoder.batch_size))
        order = np.argsort(-uniq["caption"].str.len().to_numpy(), kind="stable")
        uniq = uniq.iloc[order].reset_index(drop=True)
        rows_by_sha = to_encode.groupby("caption_sha", sort=False).indices
        bar = None
        if bar_enabled:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(uniq), desc=f"encode {perspective}", unit="str", leave=False)
        try:
            finished = 0
            for start in range(0, len(uniq), bs):
                chunk = uniq.iloc[start : start + bs]
                vecs = encoder.encode(chunk["caption"].tolist(), batch_size=bs)
                idx = np.concatenate([rows_by_sha[s] for s in chunk["caption_sha"]])
                pos = np.concatenate(
                    [np.full(len(rows_by_sha[s]), j) for j, s in enumerate(chunk["caption_sha"])]
                ).astype(np.int64)
                rows = to_encode.iloc[idx]
                _write_shard(
                    folder / _new_name(PENDING_PREFIX),
                    shard_table(rows["image_id"], perspective, rows["caption_sha"], vecs[pos], pids_of(rows)),
                )
                if bar is not None:
                    bar.update(len(chunk))
                finished += len(chunk)
                if tick is not None:
                    tick(finished, len(uniq))
        finally:
            if bar is not None:
                bar.close()

    committed, dropped = _commit(folder, perspective, cur, dim, is_summary)
    counts = {
        "encoded": len(uniq),
        "reused": len(cur) - len(to_encode),
        "total": len(cur),
        "dropped": dropped,
    }
    return counts, committed, dim


def _commit(
    folder: Path, perspective: str, cur: Any, dim: int | None, is_summary: bool
) -> tuple[list[str], int]:
    """Make the committed shards hold exactly the current rows; returns (shard names, stale rows dropped).

    Append-only when nothing is stale (pending files merged into one new shard); otherwise every current row is
    rewritten into fresh shards. meta.json switches to the new list before the old files are deleted, so a kill
    at any point leaves either the old or the new committed set (plus files the next run folds in).
    """
    meta = read_meta(folder.parent)
    listed = list(meta.get("perspectives", {}).get(perspective, {}).get("shards", []))
    store = _PerspectiveStore(folder, perspective)
    rows = store.rows
    if not len(rows):
        return [], 0
    names = [f.name for f in store.files]
    key = rows["image_id"] + "\x00" + rows["caption_sha"]
    cur_keys = set((cur["image_id"] + "\x00" + cur["caption_sha"]).tolist())
    valid = key.isin(cur_keys)
    # latest file wins per image among valid rows
    keep = rows.loc[valid].drop_duplicates("image_id", keep="last")
    stale = len(rows) - len(keep)
    pending = [n for n in names if n.startswith(PENDING_PREFIX)]
    shards = [n for n in names if n.startswith(SHARD_PREFIX)]
    if stale == 0 and not pending and sorted(shards) == sorted(listed):
        return listed, 0
    stale_in_shards = int(
        (~rows.index.isin(keep.index) & rows["file"].map(lambda i: names[i] in shards)).sum()
    )
    rewrite = stale_in_shards > 0 or sorted(shards) != sorted(listed) or len(shards) + 1 > MAX_SHARDS
    src = keep if rewrite else keep.loc[keep["file"].map(lambda i: names[i] in pending)]
    new_names: list[str] = []
    if len(src):
        if dim is None:
            raise DataError(f"{folder}: cannot determine the embedding size; delete the folder and rerun")
        vecs = store.vectors(src[["file", "row"]].reset_index(drop=True), dim)
        cur_idx = cur.set_index("image_id")
        pids = cur_idx.loc[src["image_id"], "pid"].to_numpy() if is_summary else None
        per = max(1024, SHARD_BYTES // (4 * dim))
        for start in range(0, len(src), per):
            sl = slice(start, start + per)
            name = _new_name(SHARD_PREFIX)
            _write_shard(
                folder / name,
                shard_table(
                    src["image_id"].iloc[sl],
                    perspective,
                    src["caption_sha"].iloc[sl],
                    vecs[sl],
                    None if pids is None else pids[sl],
                ),
            )
            new_names.append(name)
    committed = new_names if rewrite else [*listed, *new_names]
    meta = read_meta(folder.parent)
    meta.setdefault("perspectives", {}).setdefault(perspective, {})
    meta["perspectives"][perspective].update({"shards": committed, "n_rows": int(len(keep))})
    _write_meta(folder.parent, meta)
    for n in names:
        if n not in committed:
            (folder / n).unlink(missing_ok=True)
    return committed, stale_in_shards if rewrite else 0


# ---------------------------------------------------------------- public API
def encode_dataset(
    workdir: str | Path | None,
    dataset: str,
    encoder: Any = "minilm",
    batch_size: int | None = None,
    progress: bool | Callable[[float], None] = True,
    perspectives: list[str] | None = None,
    device: str | None = None,
) -> EncodeReport:
    """Encode the current captions (every perspective + identity summaries) that lack a feature; see module doc.

    ``encoder`` is a spec string or an already loaded ``TextEncoder``; the model is loaded only when some string
    needs encoding. ``progress``: True shows tqdm bars, a callable gets the finished fraction (0..1).
    """
    from captions.features.encoders import encoder_fingerprint, load_encoder
    from differ_common.io import stage_lock

    t0 = time.perf_counter()
    ws = Workspace.at(workdir)
    spec = encoder if isinstance(encoder, str) else encoder.spec
    folder = ws.features_dir(dataset, spec)
    if read_meta(folder).get("source") == "official-import":
        raise DataError(
            f"{folder}: holds features imported from the official release ({spec}); they are read, not encoded: "
            "pass another --encoder to encode captions"
        )
    fp = encoder_fingerprint(spec) if isinstance(encoder, str) else encoder.fingerprint
    with stage_lock(
        ws.locks() / f"encode-{dataset}-{slug(spec)}.lock", what=f"differ encode {dataset} {spec}"
    ):
        frames = current_caption_rows(ws.root, dataset, perspectives)
        if not frames:
            raise DataError(
                f"{ws.captions_dir(dataset)}: no current captions for {dataset}; run "
                f"`differ caption --dataset {dataset}` (and `differ summarize`) first"
            )
        meta = read_meta(folder)
        dim = meta.get("dim")
        loaded: dict[str, Any] = {}

        def get_encoder() -> Any:
            if "enc" not in loaded:
                enc = load_encoder(spec, device=device) if isinstance(encoder, str) else encoder
                if dim is not None and enc.dim != dim:
                    raise DataError(
                        f"{folder / META}: the existing features are {dim}-d but encoder {spec} gives {enc.dim}-d "
                        f"vectors; features are never mixed: delete {folder} or use another encoder spec"
                    )
                loaded["enc"] = enc
            return loaded["enc"]

        if meta and meta.get("encoder_fingerprint") not in (None, fp):
            get_encoder()  # refuses a different dimension before anything is removed
            log.warning("%s: the encoder's files changed since the last run: re-encoding every row", folder)
            import shutil

            shutil.rmtree(folder)

        report = EncodeReport(dataset=dataset, encoder=spec, dir=folder, dim=dim)
        sources = _source_fingerprints(ws, dataset)
        for i, (p, cur) in enumerate(frames.items()):
            tick = None
            if callable(progress):
                progress(i / len(frames))

                def tick(done: int, total: int, i: int = i) -> None:
                    progress((i + done / max(total, 1)) / len(frames))

            counts, shards, pdim = _encode_perspective(
                ws, dataset, spec, p, cur, get_encoder, batch_size, tick, dim, progress is True
            )
            if pdim is not None:
                dim = pdim
            report.encoded[p] = counts["encoded"]
            report.reused[p] = counts["reused"]
            report.total[p] = counts["total"]
            report.dropped[p] = counts["dropped"]
            meta = read_meta(folder)
            pm = meta.setdefault("perspectives", {}).setdefault(p, {})
            pm.update(
                {
                    "shards": shards,
                    "n_rows": counts["total"],
                    "source_fingerprint": sources.get(p),
                    "rows_fingerprint": sha256_json(
                        sorted(zip(cur["image_id"], cur["caption"].map(caption_sha))), 16
                    ),
                }
            )
            meta.update(
                {
                    "encoder": spec,
                    "encoder_fingerprint": fp,
                    "dataset": dataset,
                    "dim": dim,
                    "dtype": "float32",
                    "normalized": True,
                    "layout": "shards listed per perspective; image_id = str(pid) for biometrics_summary",
                }
            )
            meta["captions_fingerprint"] = sha256_json(
                {k: v.get("rows_fingerprint") for k, v in sorted(meta["perspectives"].items())}, 16
            )
            if dim is not None:
                _write_meta(folder, meta)
        if callable(progress):
            progress(1.0)
        report.dim = dim
        report.seconds = time.perf_counter() - t0
        return report


def feature_status(workdir: str | Path | None, dataset: str, encoder: str = "minilm") -> Any:
    """Per perspective: current caption rows, rows with an up-to-date feature, missing and stale rows, dim."""
    import pandas as pd
    import pyarrow.parquet as pq

    ws = Workspace.at(workdir)
    folder = ws.features_dir(dataset, encoder)
    meta = read_meta(folder)
    frames = current_caption_rows(ws.root, dataset)
    rows = []
    for p in dict.fromkeys([*frames, *meta.get("perspectives", {})]):
        cur = frames.get(p)
        cur_keys = set()
        if cur is not None:
            cur_keys = set(zip(cur["image_id"], (caption_sha(c) for c in cur["caption"])))
        have: set[tuple[str, str]] = set()
        for name in meta.get("perspectives", {}).get(p, {}).get("shards", []):
            f = ws.feature_perspective_dir(dataset, encoder, p) / name
            if f.is_file():
                try:
                    t = pq.read_table(f, columns=["image_id", "caption_sha"])
                except Exception as exc:  # noqa: BLE001 - damaged: moved aside, its rows count as missing
                    from differ_common.quarantine import quarantine

                    quarantine(
                        f,
                        folder,
                        f"{type(exc).__name__}",
                        f"differ encode --dataset {dataset} --encoder {encoder}",
                    )
                    continue
                have.update(zip(t.column(0).to_pylist(), t.column(1).to_pylist()))
        ok = len(cur_keys & have)
        rows.append(
            {
                "perspective": p,
                "current": len(cur_keys),
                "encoded": ok,
                "missing": len(cur_keys) - ok,
                "stale": len(have - cur_keys),
                "dim": meta.get("dim"),
            }
        )
    cols = ["perspective", "current", "encoded", "missing", "stale", "dim"]
    return pd.DataFrame(rows, columns=cols)
