"""Linear probes: how much of each SynthCC attribute a trained encoder's features still carry.

For every checkpoint, a logistic-regression probe per attribute is fitted on the features of the train split and
scored on the test split (query + gallery: identities the encoder never saw). Identity traits (skin tone, hair
colour, build, ...) persist across outfits, clothing attributes do not: a clothes-changing model should keep the
first and lose the second. ``chance`` is the train split's majority class scored on the test split.

    python scripts/probe_attributes.py --workdir W baseline=W/runs/A/checkpoints/last.pt differ=W/runs/B/...
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

SYNTHCC = "synthcc"
IDENTITY_TRAITS = ("gender", "skin_tone", "hair_colour", "build", "height")
CLOTHING = ("top_colour", "top_pattern", "bottom_colour", "bottom_type")


def fit_probe(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray) -> float:
    """Accuracy on (x_eval, y_eval) of an L2-regularised multinomial logistic regression fitted on the rest."""
    classes = np.unique(y_fit)  # a test value never seen while fitting is never predicted: it counts as wrong
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-6
    xf = torch.as_tensor((x_fit - mu) / sd, dtype=torch.float32)
    xe = torch.as_tensor((x_eval - mu) / sd, dtype=torch.float32)
    yf = torch.as_tensor(np.searchsorted(classes, y_fit))
    torch.manual_seed(0)
    lin = torch.nn.Linear(xf.shape[1], len(classes))
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xf), yf) + 1e-2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = classes[lin(xe).argmax(1).numpy()]
    return float((pred == y_eval).mean())


def majority(y_fit: np.ndarray, y_eval: np.ndarray) -> float:
    values, counts = np.unique(y_fit, return_counts=True)
    return float((y_eval == values[counts.argmax()]).mean())


def probe(fit: tuple[np.ndarray, pd.DataFrame], test: tuple[np.ndarray, pd.DataFrame], columns) -> dict:
    """``{column: (probe accuracy on test, chance)}``; ``fit``/``test`` are (features, attribute rows)."""
    out = {}
    for col in columns:
        y_fit = fit[1][col].astype(str).to_numpy()
        y_test = test[1][col].astype(str).to_numpy()
        out[col] = (fit_probe(fit[0], y_fit, test[0], y_test), majority(y_fit, y_test))
    return out


def to_markdown(table: pd.DataFrame) -> str:
    head = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns)
    body = [
        "| " + " | ".join(v if isinstance(v, str) else f"{v:.1f}" for v in row) + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join([head, *body])


def record_lines(checkpoints: list[str]) -> list[str]:
    """Per ``name=path``: the reproducibility record of the run holding the checkpoint (its path and hash)."""
    from differ_common.workspace import RunLayout
    from differ_core.reproducibility import read_record, record_path, record_sha256

    out = []
    for spec in checkpoints:
        name, _, path = spec.partition("=")
        owner = RunLayout.of_checkpoint(path)
        if owner is not None and record_path(owner.root).is_file():
            sha = record_sha256(read_record(owner.root))
            out.append(f"- {name}: {record_path(owner.root)} (sha256 {sha})")
        else:
            out.append(f"- {name}: no reproduce.json in the run folder of {path}")
    return out


def main(argv: list[str] | None = None) -> None:
    from differ_common.io import write_text_atomic
    from differ_common.workspace import Workspace
    from differ_core.extract import extract_features

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--workdir", required=True, help="workspace holding the SynthCC manifest and attribute table"
    )
    ap.add_argument("checkpoints", nargs="+", help="name=path of a checkpoint")
    ap.add_argument("--out", default=None, help="also write the table as markdown here")
    args = ap.parse_args(argv)

    ws = Workspace.at(args.workdir)
    manifest = pd.read_parquet(ws.manifest(SYNTHCC))
    attrs = pd.read_parquet(ws.attributes(SYNTHCC))
    is_train = (manifest["split"] == "train").to_numpy()
    rows_attrs = manifest[["image_id"]].merge(attrs, on="image_id", how="left", validate="one_to_one")
    fit_attrs, test_attrs = rows_attrs[is_train], rows_attrs[~is_train]  # test = query + gallery
    columns = IDENTITY_TRAITS + CLOTHING
    rows = []
    for spec in args.checkpoints:
        name, _, path = spec.partition("=")
        feats, _ = extract_features(path, manifest, progress=False)  # one model load, both splits
        res = probe((feats[is_train], fit_attrs), (feats[~is_train], test_attrs), columns)
        rows.append({"model": name, **{c: 100 * res[c][0] for c in columns}})
    chance = {c: 100 * majority(fit_attrs[c].astype(str).to_numpy(), test_attrs[c].astype(str).to_numpy())
              for c in columns}  # fmt: skip
    table = pd.DataFrame([*rows, {"model": "chance (majority)", **chance}])
    table = table.assign(
        **{
            "identity mean": table[list(IDENTITY_TRAITS)].mean(1),
            "clothing mean": table[list(CLOTHING)].mean(1),
        }
    )
    md = to_markdown(table) + "\n\nReproducibility records:\n" + "\n".join(record_lines(args.checkpoints))
    print(md)
    if args.out:
        write_text_atomic(args.out, md + "\n")


if __name__ == "__main__":
    main()
