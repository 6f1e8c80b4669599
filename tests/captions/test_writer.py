"""The caption writer: incremental, resumable (exceptions and SIGKILL), with the §4 table layout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from caption_helpers import make_workspace

from captions import caption_dataset, caption_status, read_current_captions
from captions.attributes_captioner import AttributesCaptioner
from captions.prompts import DEFAULT_PROMPTS
from captions.table import part_files
from differ_common.errors import ConfigError, DataError
from differ_common.perspectives import PERSPECTIVES
from differ_common.workspace import Workspace

DESIGN_COLUMNS = [
    "image_id",
    "perspective",
    "prompt_id",
    "prompt",
    "caption",
    "captioner",
    "model_fingerprint",
    "created_at",
    "seconds",
]
N_TRAIN = 12  # synth_ws: 4 identities x 3 train images


class Flaky(AttributesCaptioner):
    """The attributes captioner with small batches that raises after ``fail_after`` calls (a crash mid-run)."""

    min_batch_size = 1

    def __init__(self, *a, fail_after: int | None = None, needs_images: bool = False, **kw):
        super().__init__(*a, **kw)
        self.calls = 0
        self.fail_after = fail_after
        self.needs_images = needs_images
        self.images_seen = 0

    def caption(self, images, spec, image_ids):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash")
        if self.needs_images:
            assert len(images) == len(image_ids) and all(im.mode == "RGB" for im in images)
            self.images_seen += len(images)
        return super().caption(images, spec, image_ids)


def _table(w: Path) -> pd.DataFrame:
    return pd.read_parquet(Workspace.at(w).captions_dir("synthcc"))


def _current(w: Path) -> dict:
    return json.loads(Workspace.at(w).captions_current("synthcc").read_text())


def test_first_run_writes_the_design_table_and_second_run_generates_nothing(synth_ws):
    fractions = []
    r1 = caption_dataset(synth_ws, "synthcc", noise=0.1, progress=fractions.append)
    assert r1.generated == dict.fromkeys(PERSPECTIVES, N_TRAIN) and r1.total == r1.generated
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    df = _table(synth_ws)
    assert set(DESIGN_COLUMNS) <= set(df.columns)
    assert df.groupby("perspective", observed=True).size().to_dict() == dict.fromkeys(PERSPECTIVES, N_TRAIN)
    assert not df.duplicated(["image_id", "perspective"]).any()
    assert df["caption"].str.len().gt(0).all() and df["flag"].eq("").all()
    assert set(df["captioner"]) == {"attributes:noise=0.1"}
    assert df["prompt_id"].str.fullmatch(r"[0-9a-f]{12}").all()
    assert str(df["created_at"].dtype).startswith("datetime64") and (df["seconds"] >= 0).all()
    manifest = pd.read_parquet(Workspace.at(synth_ws).manifest("synthcc"))
    assert set(df["image_id"]) == set(manifest.loc[manifest["split"] == "train", "image_id"])
    cur1 = _current(synth_ws)
    assert set(cur1) == set(PERSPECTIVES) and all(cur1[p]["n_rows"] == N_TRAIN for p in PERSPECTIVES)

    r2 = caption_dataset(synth_ws, "synthcc", noise=0.1)
    assert r2.generated == dict.fromkeys(PERSPECTIVES, 0) and r2.reused == dict.fromkeys(
        PERSPECTIVES, N_TRAIN
    )
    assert _current(synth_ws) == cur1 and r2.fingerprints == {p: cur1[p]["fingerprint"] for p in PERSPECTIVES}
    assert len(_table(synth_ws)) == 6 * N_TRAIN

    # another noise rate is another captioner: all rows regenerated, the old ones kept but not current
    r3 = caption_dataset(synth_ws, "synthcc", perspectives="pose", noise=0.0)
    assert r3.generated == {"pose": N_TRAIN}
    assert _current(synth_ws)["pose"]["captioner"] == "attributes:noise=0"
    assert len(read_current_captions(synth_ws, "synthcc", ["pose"])) == N_TRAIN


def test_editing_one_prompt_regenerates_only_that_perspective(synth_ws, tmp_path):
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(DEFAULT_PROMPTS.read_text())
    caption_dataset(synth_ws, "synthcc", prompts=prompts)
    before = _current(synth_ws)
    spec = yaml.safe_load(prompts.read_text())
    next(p for p in spec["perspectives"] if p["name"] == "clothing")["prompt"] += (
        " Name every colour you see."
    )
    prompts.write_text(yaml.safe_dump(spec, sort_keys=False))
    status = caption_status(synth_ws, "synthcc", prompts=prompts).set_index("perspective")
    assert status["prompt_changed"].to_dict() == {p: p == "clothing" for p in PERSPECTIVES}
    r = caption_dataset(synth_ws, "synthcc", prompts=prompts)
    assert r.generated == {p: (N_TRAIN if p == "clothing" else 0) for p in PERSPECTIVES}
    after = _current(synth_ws)
    for p in PERSPECTIVES:
        assert (after[p] == before[p]) == (p != "clothing")
    assert after["clothing"]["fingerprint"] != before["clothing"]["fingerprint"]
    cur = read_current_captions(synth_ws, "synthcc", ["clothing"])
    assert len(cur) == N_TRAIN and set(cur["prompt_id"]) == {after["clothing"]["prompt_id"]}
    status = caption_status(synth_ws, "synthcc", prompts=prompts).set_index("perspective")
    assert status.loc["clothing", ["current", "missing", "stale"]].tolist() == [N_TRAIN, 0, 0]
    assert not status["prompt_changed"].any()


def test_crash_after_some_batches_leaves_whole_parts_and_the_rerun_completes(synth_ws, tmp_path):
    crashing = Flaky(synth_ws, "synthcc", fail_after=10)
    with pytest.raises(RuntimeError, match="simulated crash"):
        caption_dataset(synth_ws, "synthcc", batch_size=2, chunk_size=2, backend=crashing)
    ws = Workspace.at(synth_ws)
    parts = [f for p in PERSPECTIVES for f in part_files(ws.perspective_dir("synthcc", p))]
    assert len(parts) == 10 and all(len(pd.read_parquet(f)) <= 2 for f in parts)
    assert not list(ws.captions_dir("synthcc").rglob(".tmp-*"))
    done = len(_table(synth_ws))
    # a writer killed inside a part write leaves only a temp file: ignored by readers, removed by the rerun
    stray = ws.perspective_dir("synthcc", "pose") / ".tmp-part-x.parquet.abc"
    stray.write_bytes(b"PAR1 half written")

    r = caption_dataset(synth_ws, "synthcc", batch_size=2, backend=Flaky(synth_ws, "synthcc"))
    assert sum(r.generated.values()) == 6 * N_TRAIN - done and not stray.exists()
    df = _table(synth_ws)
    assert len(df) == 6 * N_TRAIN and not df.duplicated(["image_id", "perspective"]).any()

    clean = make_workspace(tmp_path / "clean", n_ids=4, per_id=3)
    caption_dataset(clean, "synthcc")
    cols = ["image_id", "perspective", "caption"]
    a = (
        read_current_captions(synth_ws, "synthcc")[cols]
        .astype(str)
        .sort_values(cols[:2])
        .reset_index(drop=True)
    )
    b = read_current_captions(clean, "synthcc")[cols].astype(str).sort_values(cols[:2]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from captions.attributes_captioner import AttributesCaptioner
    from captions.writer import caption_dataset

    class Slow(AttributesCaptioner):
        min_batch_size = 1

        def caption(self, images, spec, ids):
            if len(sys.argv) > 4 and not os.path.exists(sys.argv[4]):  # a gate: say so, wait for the file
                print("CAPTIONING", flush=True)
                while not os.path.exists(sys.argv[4]):
                    time.sleep(0.02)
            time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0.05)
            return super().caption(images, spec, ids)

    persp = sys.argv[2] if len(sys.argv) > 2 else None
    r = caption_dataset(
        sys.argv[1], "synthcc", persp, batch_size=1, chunk_size=1, backend=Slow(sys.argv[1], "synthcc"),
        show_progress=False,
    )
    print("GENERATED", sum(r.generated.values()))
    """
)


def test_sigkill_mid_run_then_rerun_gives_exactly_one_current_row_per_image_and_perspective(
    synth_ws, tmp_path
):
    script = tmp_path / "slow_caption.py"
    script.write_text(_KILL_SCRIPT)
    ws = Workspace.at(synth_ws)
    proc = subprocess.Popen([sys.executable, str(script), str(synth_ws)], env={**os.environ})
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(ws.captions_dir("synthcc").rglob("part-*.parquet"))) >= 8:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the writer finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    written = len(_table(synth_ws))
    assert 8 <= written < 6 * N_TRAIN
    r = caption_dataset(synth_ws, "synthcc")
    assert sum(r.generated.values()) == 6 * N_TRAIN - written
    df = _table(synth_ws)
    assert len(df) == 6 * N_TRAIN and not df.duplicated(["image_id", "perspective"]).any()
    assert caption_status(synth_ws, "synthcc")["current"].tolist() == [N_TRAIN] * 6


def test_images_are_opened_once_per_batch_and_bad_images_become_error_rows(synth_ws):
    ws = Workspace.at(synth_ws)
    manifest = pd.read_parquet(ws.manifest("synthcc"))
    bad = manifest.loc[manifest["split"] == "train", "path"].iloc[4]
    Path(bad).write_bytes(b"not a png")
    backend = Flaky(synth_ws, "synthcc", needs_images=True)
    with pytest.raises(DataError) as err:
        caption_dataset(synth_ws, "synthcc", perspectives="hairstyle,pose", backend=backend, batch_size=4)
    msg = str(err.value)
    assert msg.startswith(bad) and "cannot open image" in msg and "\n" not in msg
    assert backend.images_seen == 2 * (N_TRAIN - 1)
    df = _table(synth_ws)
    errors = df[df["flag"] == "error"]
    assert len(errors) == 2 and set(errors["image_id"]) == {
        Path(bad).relative_to(synth_ws / "data").as_posix()
    }
    assert errors["error"].str.len().gt(0).all()
    assert caption_status(synth_ws, "synthcc").set_index("perspective").loc["pose", "errors"] == 1
    assert len(read_current_captions(synth_ws, "synthcc", ["pose"])) == N_TRAIN - 1
    # skip mode reports instead of failing; fixing the image and rerunning fills the hole
    r = caption_dataset(synth_ws, "synthcc", perspectives="pose", backend=backend, on_bad_image="skip")
    assert r.errors and r.errors[0][0] == bad and r.generated == {"pose": 0}
    from PIL import Image

    Image.new("RGB", (16, 32)).save(bad, format="PNG")
    r = caption_dataset(synth_ws, "synthcc", perspectives="hairstyle,pose", backend=backend)
    assert r.generated == {"hairstyle": 1, "pose": 1} and not r.errors
    assert len(read_current_captions(synth_ws, "synthcc", ["hairstyle", "pose"])) == 2 * N_TRAIN


class Degenerate(Flaky):
    def caption(self, images, spec, image_ids):
        return ["" if i.endswith("0.png") else spec.prompt for i in image_ids]


def test_empty_and_echoed_outputs_are_flagged_not_dropped(synth_ws):
    r = caption_dataset(
        synth_ws, "synthcc", perspectives="hairstyle", backend=Degenerate(synth_ws, "synthcc")
    )
    df = read_current_captions(synth_ws, "synthcc", ["hairstyle"])
    assert len(df) == N_TRAIN and r.flagged == {"hairstyle": N_TRAIN}
    assert set(df["flag"]) == {"empty", "echo"}
    assert caption_status(synth_ws, "synthcc").set_index("perspective").loc["hairstyle", "flagged"] == N_TRAIN


def test_reading_api_splits_and_errors(synth_ws):
    with pytest.raises(DataError, match="run `differ caption --dataset synthcc` first"):
        read_current_captions(synth_ws, "synthcc")
    caption_dataset(synth_ws, "synthcc", split="all", perspectives=["biometrics", "pose"])
    assert len(read_current_captions(synth_ws, "synthcc", ["pose"])) == 4 * 5
    train = read_current_captions(synth_ws, "synthcc", split="train")
    assert train.groupby("perspective").size().to_dict() == {"biometrics": N_TRAIN, "pose": N_TRAIN}
    assert list(train["perspective"].unique()) == ["biometrics", "pose"]
    with pytest.raises(DataError, match=r"no current captions for \['clothing'\].*--perspectives clothing"):
        read_current_captions(synth_ws, "synthcc", ["clothing"])
    with pytest.raises(ConfigError, match="unknown perspective"):
        caption_dataset(synth_ws, "synthcc", perspectives="pose,gait")
    with pytest.raises(ConfigError, match=r"no split\(s\) \['val'\]"):
        caption_dataset(synth_ws, "synthcc", split="val")
    with pytest.raises(DataError, match="manifest not found"):
        caption_dataset(synth_ws, "ltcc")
    with pytest.raises(ConfigError, match="unknown captioner"):
        caption_dataset(synth_ws, "synthcc", captioner="blip:/x")


def test_many_small_parts_are_compacted_without_losing_rows(synth_ws):
    ws = Workspace.at(synth_ws)
    caption_dataset(
        synth_ws,
        "synthcc",
        perspectives="pose",
        batch_size=1,
        chunk_size=1,
        backend=Flaky(synth_ws, "synthcc"),
    )
    folder = ws.perspective_dir("synthcc", "pose")
    assert len(part_files(folder)) == N_TRAIN  # the default threshold leaves 12 parts alone
    before = read_current_captions(synth_ws, "synthcc", ["pose"])
    r = caption_dataset(
        synth_ws, "synthcc", perspectives="pose,clothing", batch_size=1, chunk_size=1, compact_threshold=4
    )
    assert r.generated == {"pose": 0, "clothing": N_TRAIN}
    assert len(part_files(folder)) == 1 and len(part_files(ws.perspective_dir("synthcc", "clothing"))) == 1
    pd.testing.assert_frame_equal(read_current_captions(synth_ws, "synthcc", ["pose"]), before)
    assert len(_table(synth_ws)) == 2 * N_TRAIN
