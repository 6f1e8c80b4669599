"""Builders of small dataset trees in each published layout."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def img(path: Path, colour: tuple[int, int, int] = (120, 60, 30), fmt: str | None = None) -> Path:
    """A tiny valid image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 8), colour).save(path, format=fmt)
    return path


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    return path


# ------------------------------------------------------------------------------------------------ LTCC
LTCC_FILES = {
    "train": ["005_1_c3_015857.png", "005_1_c11_015858.png", "005_2_c7_000010.png", "012_1_c1_000001.png",
              "012_3_c2_000002.png", "099_1_c4_000003.png"],
    "query": ["020_1_c2_000100.png", "031_2_c5_000101.png"],
    "test": ["020_1_c4_000200.png", "020_2_c6_000201.png", "031_1_c5_000202.png", "031_2_c9_000203.png",
             "044_1_c1_000204.png"],
}  # fmt: skip


def make_ltcc(root: Path, files: dict[str, list[str]] | None = None) -> Path:
    base = root / "LTCC_ReID"
    for split, names in (files or LTCC_FILES).items():
        (base / split).mkdir(parents=True, exist_ok=True)
        for n in names:
            img(base / split / n)
    return base


# ------------------------------------------------------------------------------------------------ PRCC
def make_prcc(root: Path) -> Path:
    rgb = root / "prcc" / "rgb"
    for pid, cams in {"001": "AAB", "003": "ABC", "010": "CC"}.items():
        for i, cam in enumerate(cams):
            img(rgb / "train" / pid / f"{cam}_cropped_rgb{i:03d}.jpg")
    for pid, cams in {"001": "AC", "003": "B"}.items():
        for i, cam in enumerate(cams):
            img(rgb / "val" / pid / f"{cam}_cropped_rgb{i:03d}.jpg")
    test = {"A": {"100": 2, "101": 1, "102": 1}, "B": {"100": 1, "101": 2}, "C": {"100": 1, "102": 3}}
    for cam, pids in test.items():
        for pid, n in pids.items():
            for i in range(n):
                img(rgb / "test" / cam / pid / f"cropped_rgb{i:03d}.jpg")
    return root / "prcc"


# ----------------------------------------------------------------------------------------- Celeb-light
CELEB_FILES = {
    "train": ["1_1_0.jpg", "1_2_0.jpg", "7_1_1.jpg", "7_3_0.jpg", "30_1_0.jpg"],
    "query": ["100_1_0.jpg", "101_1_0.jpg"],
    "gallery": ["100_2_0.jpg", "100_3_1.jpg", "101_2_0.jpg", "102_1_0.jpg"],
}


def make_celeb(root: Path) -> Path:
    base = root / "Celeb-reID-light"
    for split, names in CELEB_FILES.items():
        for n in names:
            img(base / split / n)
    return base


# ---------------------------------------------------------------------------------------------- CCVID
CCVID_LISTS = {
    "train": [("session1/001_01", "001", "u1_l1_s1_c1_b1", 3), ("session3/001_02", "001", "u2_l1_s1_c1_b1", 2),
              ("session2/004_12", "004", "u1_l2_s1_c1_b1", 2)],
    "query": [("session1/010_03", "010", "u1_l1_s1_c1_b1", 2), ("session3/011_01", "011", "u3_l3_s1_c1_b1", 1)],
    "gallery": [("session2/010_05", "010", "u1_l1_s1_c1_b1", 2), ("session3/010_04", "010", "u2_l2_s1_c1_b1", 2),
                ("session1/011_07", "011", "u1_l1_s1_c1_b1", 3)],
}  # fmt: skip


def make_ccvid(root: Path, lists: dict | None = None) -> Path:
    base = root / "CCVID"
    base.mkdir(parents=True, exist_ok=True)
    for split, lines in (lists or CCVID_LISTS).items():
        text = []
        for tracklet, pid, label, n_frames in lines:
            text.append(f"{tracklet}\t{pid}\t{label}")
            for i in range(n_frames):
                img(base / tracklet / f"{i + 1:05d}.jpg")
        (base / f"{split}.txt").write_text("\n".join(text) + "\n")
    return base


def ccvid_video_lists(train_ids: int = 4, test_ids: int = 3, tracklets: int = 3, seed: int = 0) -> dict:
    """CCVID list lines (as ``CCVID_LISTS``) for video tests: ``train_ids`` identities with ``tracklets`` tracklets
    each, and ``test_ids`` identities with one query tracklet and two gallery tracklets (one in the query's
    clothes, one in other clothes, other cameras); every tracklet holds 5 to 12 frames (seeded)."""
    import random

    rng = random.Random(seed)
    sessions = ("session1", "session2", "session3")
    lists: dict[str, list] = {"train": [], "query": [], "gallery": []}
    for i in range(train_ids):
        pid = f"{i + 1:03d}"
        for t in range(tracklets):
            lists["train"].append(
                (f"{sessions[t % 3]}/{pid}_{t + 1:02d}", pid, f"u{t % 2 + 1}_l1_s1_c1_b1", rng.randint(5, 12))
            )
    for i in range(test_ids):
        pid = f"{100 + i:03d}"
        lists["query"].append((f"session1/{pid}_01", pid, "u1_l1_s1_c1_b1", rng.randint(5, 12)))
        lists["gallery"].append((f"session2/{pid}_02", pid, "u1_l1_s1_c1_b1", rng.randint(5, 12)))
        lists["gallery"].append((f"session3/{pid}_03", pid, "u2_l2_s1_c1_b1", rng.randint(5, 12)))
    return lists


# --------------------------------------------------------------------------------------------- custom
def make_custom(root: Path) -> Path:
    """A CSV beside an images/ folder, plus one image outside the CSV's folder given by absolute path."""
    folder = root / "my_set_c3"
    rows = [("images/a_c1.png", "train", 40, 0, 7), ("images/b.png", "train", 12, 1, 3),
            ("images/c.png", "train", 40, 2, 8), ("images/q1.png", "query", 500, 0, 20),
            ("images/g1.png", "gallery", 500, 1, 21), ("images/g2.png", "gallery", 501, 2, 22)]  # fmt: skip
    lines = ["path,split,pid,camid,clothes_id,note"]
    for p, split, pid, cam, cl in rows:
        img(folder / p)
        lines.append(f"{p},{split},{pid},{cam},{cl},x")
    outside = img(root / "elsewhere" / "q2.png")
    lines.append(f"{outside},query,501,1,23,abs")
    csv = folder / "dataset.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv
