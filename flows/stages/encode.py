"""The encode stage: text features for every current caption (and summary); only new or changed strings are
encoded."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from differ_common.fingerprint import sha256_json
from differ_common.workspace import Workspace
from flows.run_logging import ProgressLog
from flows.stages.base import file_fingerprint, result_of, stage_task

CODE = ("captions.features.tables",)


def encoder_spec_fingerprint(spec: str) -> str:
    """``captions.features.encoders.encoder_fingerprint``: spec, model package versions, local files' configs and sizes.

    A spec the encoder cannot parse gets a fingerprint of its text; the encode task then reports the error.
    """
    from captions.features.encoders import encoder_fingerprint
    from differ_common.errors import ConfigError

    try:
        return encoder_fingerprint(spec)
    except ConfigError:
        return sha256_json(["unparsed", spec], 16)


def features_fingerprint(
    encoder: str, encoder_fp: str, caption_fps: dict[str, str], summary_fp: str | None
) -> str:
    """Features are a function of the encoder and the captions they encode: hash those inputs."""
    return sha256_json([encoder, encoder_fp, dict(sorted(caption_fps.items())), summary_fp], 16)


@stage_task("encode", code=CODE)
def encode_task(
    workdir: str, dataset: str, encoder: str, encoder_fp: str, caption_fps: dict, summary_fp: str | None
) -> dict:
    """Text features for every current caption (and summary); only new or changed strings are encoded."""
    from captions.features.tables import encode_dataset

    logger = get_run_logger()
    report = encode_dataset(workdir, dataset, encoder=encoder, progress=ProgressLog("encode", logger.info))
    encoded = {k: int(v) for k, v in report.encoded.items()}
    logger.info("encode: %s", encoded)
    return {
        "dir": str(Workspace.at(workdir).features_dir(dataset, encoder)),
        "fingerprint": features_fingerprint(encoder, encoder_fp, caption_fps, summary_fp),
        "encoded": encoded,
    }


def encode_ok(p: dict[str, Any]) -> bool:
    return (Workspace.at(p["workdir"]).features_dir(p["dataset"], p["encoder"]) / "meta.json").exists()


def encode_step(ctx: Any) -> None:
    cfg = ctx.cfg
    st = ctx.call(
        encode_task,
        "encode",
        encode_ok,
        workdir=ctx.workdir,
        dataset=cfg.dataset,
        encoder=cfg.encoder,
        encoder_fp=encoder_spec_fingerprint(cfg.encoder),
        caption_fps=dict(sorted(ctx.caption_fps.items())),
        summary_fp=ctx.summary_fp,
    )
    out = result_of("encode", st)
    ctx.features_fp = out["fingerprint"]
    ctx.outputs["features"] = out["dir"]
    encoded = {} if st.name == "Cached" else {k: v for k, v in out["encoded"].items() if v}
    ctx.record("encode", st, f"encoded {encoded or 'nothing new'}", out["encoded"])


def on_disk(workdir: str, dataset: str, perspectives: list[str], encoder: str) -> dict[str, Any]:
    """Upstream fingerprints read back from the workspace (for running one stage alone)."""
    from captions.table import read_current_json

    ws = Workspace.at(workdir)
    current = read_current_json(ws.root, dataset)
    caption_fps = {p: current[p]["fingerprint"] for p in perspectives if p in current}
    summary = ws.summaries(dataset)
    summary_fp = file_fingerprint(summary) if summary.exists() else None
    enc_fp = encoder_spec_fingerprint(encoder)
    return {
        "manifest_fp": file_fingerprint(ws.manifest(dataset)),
        "caption_fps": caption_fps,
        "summary_fp": summary_fp,
        "encoder_fp": enc_fp,
        "features_fp": features_fingerprint(encoder, enc_fp, caption_fps, summary_fp),
    }
