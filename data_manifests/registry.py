"""The dataset registry: ``DATASETS``, ``build_manifest`` (a validated table) and ``make_manifest`` (writes it).

Everything the other packages know about a dataset is a field of its :class:`DatasetInfo` (protocols, tracklet
level, published, summary id column, generated), set where its adapter registers; they ask
:func:`dataset_traits` and never test a dataset's name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from differ_common.errors import ConfigError, DataError
from differ_common.registry import Registry

_REAL_OPTIONS = ("on_bad_image",)
SYNTH_OPTIONS = ("on_bad_image", "seed", "size", "num_ids", "workers", "regenerate")


@dataclass(frozen=True)
class ProtocolSpec:
    """One evaluation protocol of a dataset: ``query_split`` ranked against the gallery in ``mode``.

    ``required``: a protocol with no valid query is an error (else it is skipped); ``single_shot``: its
    single-shot variant (one random gallery image per identity) is ``"required"``, ``"optional"`` or ``"none"``
    (not evaluated); ``ignore_camera``: every same-identity gallery image is a match.
    """

    name: str
    query_split: str = "query"
    mode: str = "general"
    ignore_camera: bool = False
    required: bool = True
    single_shot: Literal["required", "optional", "none"] = "optional"


# general, clothes-changing and same-clothes on one query split; which of them are required differs
CC_PROTOCOLS: tuple[ProtocolSpec, ...] = (
    ProtocolSpec("general"),
    ProtocolSpec("clothes_changing", mode="clothes_changing"),
    ProtocolSpec("same_clothes", mode="same_clothes", required=False),
)
GENERIC_PROTOCOLS: tuple[ProtocolSpec, ...] = (
    ProtocolSpec("general"),
    ProtocolSpec("clothes_changing", mode="clothes_changing", required=False),
    ProtocolSpec("same_clothes", mode="same_clothes", required=False),
)


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: its adapter's ``build(root, **options)``, the layout it expects, its options and traits.

    Traits: ``protocols`` it is evaluated under; ``tracklet`` (a video dataset: tracklet-level evaluation and
    captions by default); ``published`` (a benchmark with paper numbers: training it from random weights is a
    mistake unless asked for); ``summary_id_column`` (the manifest column keying its release summary JSON);
    ``generated`` (drawn by the SynthCC generator into the workspace, with a ground-truth attribute table).
    """

    name: str
    builder: Callable[..., pd.DataFrame]
    layout: str
    options: tuple[str, ...] = _REAL_OPTIONS
    generated: bool = False
    protocols: tuple[ProtocolSpec, ...] = GENERIC_PROTOCOLS
    tracklet: bool = False
    published: bool = False
    summary_id_column: str = "pid"

    def build(self, root: str | os.PathLike | None, **options: Any) -> pd.DataFrame:
        return self.builder(root, **options)


DATASETS = Registry("dataset")


def register_dataset(
    name: str,
    layout: str,
    *,
    options: tuple[str, ...] = _REAL_OPTIONS,
    generated: bool = False,
    aliases: tuple[str, ...] = (),
    protocols: tuple[ProtocolSpec, ...] = GENERIC_PROTOCOLS,
    tracklet: bool = False,
    published: bool = False,
    summary_id_column: str = "pid",
) -> Callable[[Callable[..., pd.DataFrame]], Callable[..., pd.DataFrame]]:
    """Decorator for an adapter's ``build(root, **options)``: registers the dataset and its traits under ``name``."""

    def deco(build: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
        info = DatasetInfo(
            name,
            build,
            layout,
            options,
            generated,
            tuple(protocols),
            tracklet,
            published,
            summary_id_column,
        )
        DATASETS.add(name, info, summary=layout, aliases=aliases)
        return build

    return deco


def list_datasets() -> list[str]:
    """Registered dataset names (the built-in adapters and any registered since)."""
    return DATASETS.names()


def _key(dataset: str) -> str:
    return str(dataset).strip().lower().replace("_", "-")


def dataset_info(dataset: str) -> DatasetInfo:
    """The registered dataset ``dataset`` (case, ``_``/``-`` and aliases tolerated); a ConfigError listing the
    registered datasets for any other name."""
    return DATASETS.get(_key(dataset)).target


def dataset_traits(dataset: str | None) -> DatasetInfo:
    """What to assume about ``dataset``: its registered info, or for a name no adapter registered (a manifest a
    user wrote into a workspace) the ``custom`` dataset's traits under that name."""
    if dataset is not None and _key(dataset) in DATASETS:
        return dataset_info(dataset)
    return replace(dataset_info("custom"), name=str(dataset or ""))


def _check_options(info: DatasetInfo, options: dict[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in options.items() if v is not None}
    if info.generated:
        from data_manifests.synthcc.config import SynthConfig

        allowed = set(info.options) | set(SynthConfig.model_fields)
    else:
        allowed = set(info.options)
    unknown = sorted(set(options) - allowed)
    if unknown:
        hint = (
            "SynthCC knobs apply to synthcc only"
            if not info.generated
            else f"allowed: {', '.join(sorted(allowed))}"
        )
        raise ConfigError(f"{info.name}: unknown option(s) {', '.join(unknown)}; {hint}")
    return options


def build_manifest(dataset: str, root: str | os.PathLike | None, **options: Any) -> pd.DataFrame:
    """The validated manifest of ``dataset`` under ``root`` (SynthCC: generated there first, or reused).

    Options: ``on_bad_image`` ("error" | "skip"); SynthCC also ``size``, ``seed``, ``num_ids``, ``workers`` and
    any ``SynthConfig`` knob. ``df.attrs["skipped_images"]`` lists image_ids left out as unreadable. The
    ``image_sha`` column records what each image is (``data_manifests.content``).
    """
    from data_manifests.content import content_hashes

    info = dataset_info(dataset)
    df = info.build(root, **_check_options(info, options))
    if "path" in df.columns:  # captions go stale when the pixels change
        df["image_sha"] = content_hashes(df["path"].tolist())
    return df


@dataclass
class ManifestReport:
    """What ``make_manifest_report`` did."""

    dataset: str
    path: Path
    manifest: pd.DataFrame
    skipped: list[str] = field(default_factory=list)
    attributes: Path | None = None  # SynthCC's attribute table in the workspace
    generated: bool | None = None  # SynthCC: images generated now (False: reused)
    seconds: float = 0.0


def make_manifest_report(
    workdir: str | os.PathLike | None,
    dataset: str,
    root: str | os.PathLike | None,
    out: str | os.PathLike | None = None,
    **options: Any,
) -> ManifestReport:
    """Build, validate and atomically write a manifest (default ``W/manifests/<dataset>.parquet``).

    SynthCC: ``root`` defaults to ``W/data``; the attribute table goes to ``Workspace.attributes("synthcc")``
    (written before the manifest). Nothing is written when building or validation fails.
    """
    from data_manifests.schema import write_manifest
    from differ_common.io import stage_lock, write_parquet_atomic
    from differ_common.workspace import Workspace

    t0 = time.perf_counter()
    info = dataset_info(dataset)
    ws = Workspace.at(workdir)
    if info.generated and (root is None or str(root) == ""):
        root = ws.root / "data"
    target = Path(out).expanduser().absolute() if out else ws.manifest(info.name)
    with stage_lock(ws.locks() / f"manifest-{info.name}.lock", what=f"`differ manifest {info.name}`"):
        df = build_manifest(info.name, root, **options)
        attributes_path = None
        if info.generated:
            attributes_path = _write_attributes(df, ws.attributes(info.name), write_parquet_atomic)
        write_manifest(df, target)
    meta = df.attrs.get("synthcc", {})
    return ManifestReport(
        dataset=info.name,
        path=target,
        manifest=df,
        skipped=list(df.attrs.get("skipped_images", [])),
        attributes=attributes_path,
        generated=meta.get("generated") if info.generated else None,
        seconds=time.perf_counter() - t0,
    )


def _write_attributes(df: pd.DataFrame, target: Path, writer: Any) -> Path:
    """Copy the generated folder's attribute table (rows of the manifest's images, manifest order)."""
    from data_manifests.synthcc.generator import load_attributes

    attrs = load_attributes(Path(df.attrs["synthcc"]["folder"]))
    missing = sorted(set(df["image_id"]) - set(attrs["image_id"]))
    if missing:
        raise DataError(
            f"{df.attrs['synthcc']['attributes']}: no attributes for {len(missing)} image(s) (e.g. {missing[:3]}); "
            "delete the SynthCC folder and run `differ manifest synthcc` again"
        )
    table = attrs.set_index("image_id").loc[df["image_id"]].reset_index()
    return writer(table, target)


def make_manifest(
    workdir: str | os.PathLike | None, dataset: str, root: str | os.PathLike | None, **options: Any
) -> Path:
    """Write ``W/manifests/<dataset>.parquet`` atomically and return its path (see ``make_manifest_report``)."""
    return make_manifest_report(workdir, dataset, root, **options).path


# The built-in adapters register themselves on import (as timm's model files do).
from data_manifests import ccvid, celeb_light, custom, ltcc, prcc  # noqa: E402,F401
from data_manifests.synthcc import dataset as _synthcc  # noqa: E402,F401
