"""A 2-D map of one perspective's caption features coloured by outfit or identity (cf. the paper's Fig. 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from differ_common.errors import ConfigError, DataError
from differ_common.workspace import Workspace

COLOR_BY = {"outfit": "clothes_id", "identity": "pid"}


def project_2d(x: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """PCA (default) or t-SNE projection of ``x`` to 2-D."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(max(2, min(30, (len(x) - 1) // 3)))
        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(x)
    raise ConfigError(f"projection method must be 'pca' or 'tsne', not {method!r}")


def plot_features(
    workdir: str | Path | None,
    dataset: str,
    encoder: str = "minilm",
    perspective: str = "clothing",
    color_by: str = "outfit",
    method: str = "pca",
    out: str | Path | None = None,
    manifest: Any = None,
    max_groups: int = 12,
    seed: int = 0,
) -> Path:
    """Write a PNG scatter of ``perspective``'s features for up to ``max_groups`` outfits/identities; returns it.

    Groups are taken from the first identities (sorted pid) so that several outfits of one person appear. The
    title reports the silhouette score of the groups in the full feature space (higher = tighter clusters).
    Default output: ``W/features/<ds>/<enc>/plots/<perspective>_<color_by>_<method>.png``.
    """
    import matplotlib
    import pandas as pd
    from matplotlib.figure import Figure

    from captions.features.reader import read_perspective

    if color_by not in COLOR_BY:
        raise ConfigError(f"color_by must be one of {sorted(COLOR_BY)}, not {color_by!r}")
    ws = Workspace.at(workdir)
    if manifest is None:
        from data_manifests.schema import load_manifest

        manifest = load_manifest(ws.root, dataset)
    ids, vecs = read_perspective(ws.root, dataset, encoder, perspective)
    feats = pd.DataFrame({"image_id": ids, "_row": np.arange(len(ids))})
    df = manifest[["image_id", "pid", "clothes_id"]].merge(feats, on="image_id", how="inner")
    if df.empty:
        raise DataError(f"no {perspective} features of {encoder} match the {dataset} manifest's images")
    col = COLOR_BY[color_by]
    chosen: list[Any] = []
    for _, sub in df.sort_values(["pid", "clothes_id"]).groupby("pid", sort=True):
        for g in sub[col].unique():
            if g not in chosen:
                chosen.append(g)
        if len(chosen) >= max_groups:
            break
    chosen = chosen[:max_groups]
    df = df[df[col].isin(chosen)].reset_index(drop=True)
    x = vecs[df["_row"].to_numpy()]
    labels = df[col].to_numpy()
    xy = project_2d(x, method, seed)
    score = float("nan")
    if 1 < len(set(labels.tolist())) < len(labels):
        from sklearn.metrics import silhouette_score

        score = float(silhouette_score(x, labels, metric="cosine"))
    fig = Figure(figsize=(9, 6), dpi=110)  # not pyplot: the caller's backend is left alone
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab20"]
    for k, g in enumerate(chosen):
        sel = labels == g
        pid = int(df.loc[sel, "pid"].iloc[0])
        name = f"id {pid} / outfit {g}" if color_by == "outfit" else f"id {g}"
        ax.scatter(
            xy[sel, 0], xy[sel, 1], s=22, color=cmap(k % 20), label=name, alpha=0.85, edgecolors="none"
        )
    ax.set_title(
        f"{dataset} · {perspective} features ({encoder}) · {method.upper()} · by {color_by}\n"
        f"{len(df)} captions, {len(chosen)} groups, silhouette (cosine, full dim) = {score:.2f}",
        fontsize=9,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    path = (
        Path(out)
        if out
        else ws.features_dir(dataset, encoder) / "plots" / f"{perspective}_{color_by}_{method}.png"
    )
    from differ_common.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
