"""Train an open_clip model on the pre-training corpus with open_clip's contrastive loss; write its two halves.

The output folder ``W/pretrain/<model name>-<fingerprint>/`` holds the open_clip config JSON and weights (the text
tower is loaded from them through ``open_clip:<json>@<weights>``, as an EVA02-CLIP checkpoint is), the image
tower's timm trunk (``model.pretrained`` of a DIFFER backbone of the same name), the zero-shot check and a log.
It is written to a temporary folder and renamed into place, so a killed run leaves nothing half-written; the same
config, code and package versions on the same number of threads give bit-identical weights.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from differ_common.io import _umask, stage_lock, write_json_atomic
from differ_common.workspace import Workspace
from differ_core.clip_pretrain.config import PretrainConfig
from differ_core.clip_pretrain.corpus import Corpus, build_corpus

WEIGHTS = "open_clip_model.safetensors"
TRUNK = "visual_trunk.safetensors"
RECORD = "pretrain.json"
ZERO_SHOT = "zero_shot.json"
LOG = "train_log.csv"
MEAN = STD = 0.5  # the DIFFER configs starting from it normalise the same way
ID_SCALE = 16.0  # the cosine classifier's logit scale (train.id_weight)


@dataclass(frozen=True)
class PretrainOutput:
    """The files of a finished pre-training."""

    folder: Path
    name: str

    @property
    def config_json(self) -> Path:
        return self.folder / f"{self.name}.json"

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS

    @property
    def trunk(self) -> Path:
        return self.folder / TRUNK

    @property
    def text_encoder(self) -> str:
        """The encoder spec of the text tower (the path a real EVA02-CLIP checkpoint takes)."""
        return f"open_clip:{self.config_json}@{self.weights}"

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.config_json, self.weights, self.trunk, self.folder / RECORD))

    def zero_shot(self) -> dict[str, Any]:
        return json.loads((self.folder / ZERO_SHOT).read_text())


def output_for(cfg: PretrainConfig, workdir: str | Path | None) -> PretrainOutput:
    """Where ``cfg``'s result lies in the workspace (finished or not)."""
    root = Workspace.at(workdir).root / "pretrain"
    return PretrainOutput(root / f"{cfg.model.name}-{cfg.fingerprint()}", cfg.model.name)


def open_clip_config(cfg: PretrainConfig) -> dict[str, Any]:
    """The open_clip model config (``add_model_config`` JSON): a timm trunk and a small text transformer with the
    bundled BPE tokenizer."""
    p, m = cfg.people, cfg.model
    return {
        "embed_dim": m.embed_dim,
        "vision_cfg": {
            "timm_model_name": m.vision.timm_model_name,
            "timm_model_pretrained": False,
            "timm_pool": m.vision.timm_pool,
            "timm_proj": m.vision.timm_proj,
            "image_size": [p.img_height, p.img_width],
        },
        "text_cfg": {
            "context_length": m.text.context_length,
            "vocab_size": 49408,
            "width": m.text.width,
            "heads": m.text.heads,
            "layers": m.text.layers,
        },
    }


def build_model(cfg: PretrainConfig, config_json: Path) -> tuple[Any, Any]:
    """The open_clip model registered from ``config_json`` (random weights from the current torch seed) and its
    tokenizer."""
    import open_clip

    open_clip.add_model_config(config_json)
    model = open_clip.create_model(cfg.model.name, device="cpu")
    return model, open_clip.get_tokenizer(cfg.model.name)


def to_input(images: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` → normalised float ``[B, 3, H, W]``; ``flip`` marks rows to mirror."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0).sub_(MEAN).div_(STD)
    if flip is not None and bool(flip.any()):
        x[flip] = x[flip].flip(-1)
    return x


def matched_order(groups: np.ndarray, train_idx: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """``train_idx`` shuffled, then grouped so that images of one group (``groups[i]``, e.g. the same top and
    bottom colours) lie next to each other, the groups in random order: consecutive chunks are batches in which
    the clothing words barely tell the pairs apart, so the rest of the description has to."""
    order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
    g = groups[order]
    rank = torch.randperm(int(groups.max()) + 1, generator=gen).numpy()[g]
    return order[np.argsort(rank, kind="stable")]


def epoch_batches(
    train_idx: np.ndarray, groups: np.ndarray | None, t: Any, steps: int, gen: torch.Generator
) -> list[np.ndarray]:
    """One epoch's ``steps`` batches of ``t.batch_size`` images: slices of a shuffled order, or with probability
    ``t.matched_batches`` each, of the ``matched_order`` of ``groups`` (people in the same clothing colours)."""
    order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
    sources = [order] * steps
    if t.matched_batches > 0:
        hard = matched_order(groups, train_idx, gen)
        use_hard = (torch.rand(steps, generator=gen) < t.matched_batches).numpy()
        sources = [hard if h else order for h in use_hard]
    return [src[b * t.batch_size : (b + 1) * t.batch_size] for b, src in enumerate(sources)]


def train_clip(
    cfg: PretrainConfig,
    corpus: Corpus,
    folder: Path,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> tuple[Any, Any, list[dict[str, float]]]:
    """The contrastive training loop (``open_clip.loss.ClipLoss``, AdamW, one-cycle schedule); ``progress``
    draws a tqdm bar."""
    from open_clip.loss import ClipLoss

    t = cfg.train
    torch.manual_seed(cfg.people.seed)
    model, tokenizer = build_model(cfg, folder / f"{cfg.model.name}.json")
    train_idx = np.flatnonzero(~corpus.held_out)
    texts = [[*full, *part] for full, part in zip(corpus.captions, corpus.partial, strict=True)]
    tokens = torch.stack(
        [tokenizer([c[v] for c in texts]) for v in range(len(texts[0]))], 1
    )  # [N, V + 6, ctx]
    images = torch.from_numpy(corpus.images)
    steps_per_epoch = len(train_idx) // t.batch_size
    if steps_per_epoch < 1:
        from differ_common.errors import ConfigError

        raise ConfigError(f"train.batch_size {t.batch_size} exceeds the {len(train_idx)} training images")
    history: list[dict[str, float]] = []
    if cfg.identity.epochs:  # the trunk learns the people first (clip_pretrain.identity)
        from differ_core.clip_pretrain.identity import train_identity

        history += train_identity(cfg, corpus, model.visual.trunk, log, progress)
    if t.lock_image:
        model.visual.trunk.requires_grad_(False)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if p.ndim >= 2 and "logit_scale" not in n]
    rest = [p for n, p in named if p.ndim < 2 or "logit_scale" in n]
    id_head, labels = None, None
    if t.id_weight > 0:  # a cosine classifier over the training people (not part of the written model)
        pids = corpus.attributes["pid"].to_numpy()
        _, labels_np = np.unique(pids[train_idx], return_inverse=True)
        labels = torch.full((len(pids),), -1, dtype=torch.long)
        labels[torch.from_numpy(train_idx)] = torch.from_numpy(labels_np)
        id_head = torch.nn.Parameter(torch.randn(int(labels_np.max()) + 1, cfg.model.embed_dim) * 0.01)
        decay.append(id_head)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=t.lr
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, t.lr, total_steps=t.epochs * steps_per_epoch, pct_start=max(t.warmup, 1e-3)
    )
    loss_fn = ClipLoss()
    gen = torch.Generator().manual_seed(cfg.people.seed)
    groups = None
    if t.matched_batches > 0:
        groups = corpus.attributes.groupby(list(t.matched_by), sort=True).ngroup().to_numpy()
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=t.epochs * steps_per_epoch, desc="pretrain", unit="step", disable=not progress)
    for epoch in range(t.epochs):
        model.train()
        if t.lock_image:  # its BatchNorm statistics stay too
            model.visual.trunk.eval()
        total = 0.0
        for batch in epoch_batches(train_idx, groups, t, steps_per_epoch, gen):
            ix = torch.from_numpy(batch)
            variant = torch.randint(0, t.caption_variants, (len(ix),), generator=gen)
            if t.partial_share > 0:  # a partial description (identity traits only) instead of the full one
                partial = torch.rand(len(ix), generator=gen) < t.partial_share
                variant = torch.where(partial, variant + t.caption_variants, variant)
            flip = torch.rand(len(ix), generator=gen) < t.flip
            img_f, txt_f, scale = model(to_input(images[ix], flip), tokens[ix, variant])
            loss = loss_fn(img_f, txt_f, scale)
            if id_head is not None:
                logits = ID_SCALE * img_f @ torch.nn.functional.normalize(id_head, dim=1).t()
                loss = loss + t.id_weight * torch.nn.functional.cross_entropy(logits, labels[ix])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():  # as CLIP: the temperature stays below 100
                model.logit_scale.clamp_(0, float(np.log(100)))
            total += float(loss.detach())
            bar.update(1)
        elapsed = time.perf_counter() - t0
        row = {"stage": "contrastive", "epoch": epoch + 1, "loss": total / steps_per_epoch, "logit_scale": float(model.logit_scale.detach().exp()),
               "seconds": elapsed, "images_per_s": (epoch + 1) * steps_per_epoch * t.batch_size / elapsed}  # fmt: skip
        history.append(row)
        bar.set_postfix(epoch=epoch + 1, loss=f"{row['loss']:.3f}")
        log(
            f"pretrain epoch {epoch + 1}/{t.epochs}: loss {row['loss']:.3f}, {row['images_per_s']:.0f} images/s"
        )
    bar.close()
    return model.eval(), tokenizer, history


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def trunk_state(model: Any) -> dict[str, torch.Tensor]:
    """The image tower's timm trunk in timm's own key names (``visual.trunk.`` dropped)."""
    prefix = "visual.trunk."
    return {k[len(prefix) :]: v for k, v in model.state_dict().items() if k.startswith(prefix)}


def run_pretrain(
    cfg: PretrainConfig,
    workdir: str | Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> PretrainOutput:
    """The pre-training of ``cfg`` in the workspace: reused when finished, else trained and written atomically
    (one process at a time; another waits for it and reuses its result)."""
    from differ_core.clip_pretrain.zero_shot import zero_shot_retrieval

    out = output_for(cfg, workdir)
    if out.complete():
        return out
    ws = Workspace.at(workdir)
    with stage_lock(ws.locks() / "pretrain" / f"{out.folder.name}.lock", what="this pre-training"):
        if out.complete():
            return out
        out.folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.folder.name}-", dir=out.folder.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
        threads, t = torch.get_num_threads(), cfg.train
        try:
            torch.set_num_threads(cfg.train.threads)
            t0 = time.perf_counter()
            write_json_atomic(tmp / f"{cfg.model.name}.json", open_clip_config(cfg))
            corpus = build_corpus(
                ws.root / "pretrain" / "people", cfg.people, t.caption_variants, tuple(t.partial_perspectives)
            )
            log(f"pretrain corpus: {int((~corpus.held_out).sum())} training images, "
                f"{int(corpus.held_out.sum())} held out ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
            model, tokenizer, history = train_clip(cfg, corpus, tmp, log, progress)
            _save_safetensors(model.state_dict(), tmp / WEIGHTS)
            _save_safetensors(trunk_state(model), tmp / TRUNK)
            scores = zero_shot_retrieval(model, tokenizer, corpus)
            write_json_atomic(tmp / ZERO_SHOT, scores)
            import pandas as pd

            pd.DataFrame(history).to_csv(tmp / LOG, index=False)
            write_json_atomic(
                tmp / RECORD,
                {"fingerprint": cfg.fingerprint(), "config": cfg.model_dump(mode="json"),
                 "seconds": round(time.perf_counter() - t0, 1), "threads": cfg.train.threads},
            )  # fmt: skip
            if out.folder.exists():  # an incomplete folder of an older layout
                shutil.rmtree(out.folder)
            tmp.rename(out.folder)
        finally:
            torch.set_num_threads(threads)
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out
