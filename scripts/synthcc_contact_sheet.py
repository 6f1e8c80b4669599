"""Render a SynthCC contact sheet: a few test identities, each row one identity, its outfits side by side and
each outfit seen by its cameras. Writes docs/synthcc_contact_sheet.png (refresh it after changing the drawing).

    python scripts/synthcc_contact_sheet.py [--out docs/synthcc_contact_sheet.png] [--ids 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def contact_sheet(folder: Path, n_ids: int, zoom: int = 2):  # -> PIL.Image.Image
    """One row per test identity: for each outfit, one image per camera (query and gallery)."""
    from PIL import Image, ImageDraw

    from data_manifests.synthcc.generator import load_attributes

    attrs = load_attributes(folder)
    test = attrs[~attrs["image_id"].str.startswith("train/")]
    pids = sorted(test["pid"].unique().tolist())[:n_ids]
    rows = []
    for pid in pids:
        cells = []
        for outfit, g in test[test["pid"] == pid].groupby("outfit", sort=True):
            one_per_cam = g.sort_values("image_id").drop_duplicates("camid").sort_values("camid")
            cells.append((outfit, one_per_cam.to_dict("records")))
        rows.append((pid, cells))
    sample = Image.open(folder / test["image_id"].iloc[0])
    w, h = sample.width * zoom, sample.height * zoom
    pad, gap, label_h, left = 4, 14, 14, 46
    n_cols = max(sum(len(c[1]) for c in cells) for _, cells in rows)
    n_outfits = max(len(cells) for _, cells in rows)
    width = left + n_cols * (w + pad) + (n_outfits - 1) * gap + pad
    height = len(rows) * (h + label_h + pad) + label_h + pad
    sheet = Image.new("RGB", (width, height), (250, 250, 250))
    d = ImageDraw.Draw(sheet)
    d.text(
        (pad, 2),
        "SynthCC: rows = identities; groups = outfits; cells = cameras (c = camera id)",
        fill=(0, 0, 0),
    )
    y = label_h + pad
    for pid, cells in rows:
        r0 = cells[0][1][0]
        d.text((pad, y + h // 2 - 12), f"id {pid}", fill=(0, 0, 0))
        d.text((pad, y + h // 2), r0["gender"][0] + " " + r0["skin_tone"].split()[-1][:5], fill=(90, 90, 90))
        x = left
        for outfit, recs in cells:
            for rec in recs:
                im = Image.open(folder / rec["image_id"]).convert("RGB").resize((w, h), Image.NEAREST)
                sheet.paste(im, (x, y + label_h))
                d.text((x + 1, y + 1), f"o{outfit} c{rec['camid']}", fill=(40, 40, 40))
                x += w + pad
            x += gap
        y += h + label_h + pad
    return sheet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "docs" / "synthcc_contact_sheet.png"))
    p.add_argument("--ids", type=int, default=4, help="identities (rows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="small", choices=["tiny", "small", "default"])
    p.add_argument("--root", default=None, help="where to generate (default: a temporary folder)")
    args = p.parse_args(argv)

    from PIL import Image

    from data_manifests.synthcc.config import resolve_config
    from data_manifests.synthcc.generator import generate

    with tempfile.TemporaryDirectory(prefix="synthcc-sheet-") as tmp:
        result = generate(args.root or tmp, resolve_config(args.size), args.seed)
        sheet = contact_sheet(result.folder, args.ids)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        # a 256-colour palette keeps the file small enough for the repository
        sheet.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
            out, optimize=True
        )
    print(f"wrote {out} ({sheet.width}x{sheet.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
