"""Caption tables, summaries and manifests written per the contracts (§2 captions, §4 manifest) for these tests."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pandas as pd

from differ_common.workspace import Workspace

PROMPT_ID = "p0"
CAPTIONER = "attributes"


def write_captions(
    workdir: Path,
    dataset: str,
    captions: dict[str, dict[str, str]],
    prompt_ids: dict[str, str] | None = None,
    captioner: str = CAPTIONER,
) -> None:
    """Append one caption part per perspective and point ``_current.json`` at its prompt_id/captioner."""
    ws = Workspace.at(workdir)
    cur_path = ws.captions_current(dataset)
    current = json.loads(cur_path.read_text()) if cur_path.exists() else {}
    for p, rows in captions.items():
        pid = (prompt_ids or {}).get(p, PROMPT_ID)
        df = pd.DataFrame(
            {
                "image_id": list(rows),
                "perspective": p,
                "prompt_id": pid,
                "prompt": f"describe {p}",
                "caption": list(rows.values()),
                "captioner": captioner,
                "model_fingerprint": "m",
                "created_at": pd.Timestamp.now(tz="UTC"),
                "seconds": 0.0,
                "flag": "",
                "error": "",
            }
        )
        folder = ws.perspective_dir(dataset, p)
        folder.mkdir(parents=True, exist_ok=True)
        df.to_parquet(folder / f"part-{time.time_ns()}-{uuid.uuid4().hex[:6]}.parquet", index=False)
        current[p] = {
            "prompt_id": pid,
            "captioner": captioner,
            "model_fingerprint": "m",
            "fingerprint": uuid.uuid4().hex[:16],
            "n_rows": len(df),
        }
    cur_path.parent.mkdir(parents=True, exist_ok=True)
    cur_path.write_text(json.dumps(current))


def write_summaries(workdir: Path, dataset: str, summaries: dict[int, str]) -> None:
    ws = Workspace.at(workdir)
    df = pd.DataFrame(
        {
            "pid": list(summaries),
            "raw_pid": [p + 100 for p in summaries],
            "summary": list(summaries.values()),
            "n_captions": 1,
            "summarizer": "extractive",
            "source_fingerprint": "s",
        }
    )
    ws.summaries(dataset).parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(ws.summaries(dataset), index=False)


def manifest(
    image_ids: list[str], pids: list[int], clothes: list[int] | None = None, split: str = "train"
) -> pd.DataFrame:
    n = len(image_ids)
    return pd.DataFrame(
        {
            "image_id": image_ids,
            "path": [f"/data/{i}" for i in image_ids],
            "dataset": "toy",
            "split": split,
            "pid": pids,
            "raw_pid": [p + 100 for p in pids],
            "camid": [i % 2 for i in range(n)],
            "clothes_id": clothes if clothes is not None else pids,
            "clothes_key": [str(c) for c in (clothes if clothes is not None else pids)],
            "track_id": None,
            "frame": None,
        }
    )


def write_manifest(workdir: Path, dataset: str, df: pd.DataFrame) -> Path:
    path = Workspace.at(workdir).manifest(dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path


class CountingEncoder:
    """Wraps a real TextEncoder: records every string it is asked to encode; can fail after N calls (a kill)."""

    def __init__(self, inner, spec: str | None = None, fail_after: int | None = None) -> None:
        self.inner = inner
        self.spec = spec or inner.spec
        self.dim = inner.dim
        self.fingerprint = inner.fingerprint
        self.batch_size = inner.batch_size
        self.fail_after = fail_after
        self.calls = 0
        self.seen: list[str] = []

    def encode(self, texts, batch_size=None, progress=False):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.seen.extend(texts)
        return self.inner.encode(texts, batch_size=batch_size)
