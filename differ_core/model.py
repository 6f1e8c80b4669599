"""The DIFFER model (docs/design.md §7): a timm backbone + camera embedding, ID head, W_b and NBDetach branches.

* **Backbone**: any timm model by name, created with ``num_classes=0``. timm ``VisionTransformer`` and ``Eva``
  (EVA02, the paper's ``eva02_large_patch14_clip_224``) are run token by token here so that the camera
  side-information embedding is added to every token together with the position embedding, as in TransReID and
  the official code. Every other model (CNNs, hierarchical transformers) is run whole and the camera embedding is
  added to its pooled feature (a documented deviation: such models have no token sequence to add it to).
* **Identity feature** ``f``: the backbone's own pooling of the last block's normalised tokens (the CLS token for
  timm's ``global_pool='token'`` ViTs, as in the paper) or the CNN's pooled feature.
* **Biometric head** (``model.bio_head``, ViTs only): a copy of the last block and final norm. The biometric
  projection W_b reads the head's feature; identity, triplet and NBDetach use ``f``. In the official checkpoint
  the last block *is* ``head_bio`` (there is no separate identity branch); see :mod:`differ_core.convert_official`.
* **ID classifier** on ``f`` (through a BatchNorm neck when ``model.bnneck``), **W_b**: ``Linear(F, D_text)``,
  **NBDetach**: per non-biometric perspective, gradient reversal (alpha) then ``Linear(F, D_text, bias=False)``.

``model.eval(); model(images, camids)`` returns only ``f`` [B, F]: inference uses the image encoder alone.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from differ_common.errors import ConfigError, DataError
from differ_core.config import ModelConfig, TrainConfig
from differ_core.grl import GradientReversal

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class CameraIdError(DataError, ValueError):
    """Camera ids outside the cameras the model was built for (a DataError; still a ValueError for callers)."""


# --------------------------------------------------------------------------- backbone
def backbone_kind(backbone: nn.Module) -> str:
    """``"eva"`` (timm Eva), ``"vit"`` (timm VisionTransformer) or ``"generic"`` (run whole: CNNs, ...)."""
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(backbone, Eva):
        return "eva"
    if isinstance(backbone, VisionTransformer):
        return "vit"
    return "generic"


def feature_dim(backbone: nn.Module) -> int:
    """The size of the backbone's pooled output: timm's ``head_hidden_size`` where the model has one (CNNs with a
    conv head after the pooling, e.g. ``lcnet_050``: 1280, while ``num_features`` is 256), else ``num_features``."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


def unknown_timm_model(name: str) -> str | None:
    """``"unknown timm model 'x' (similar: ...)"`` when timm has no model ``name``, else None."""
    import timm

    if timm.is_model(name):
        return None
    close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
    return f"unknown timm model {name!r}" + (f" (similar: {', '.join(close)})" if close else "")


def create_backbone(mcfg: ModelConfig, img_size: tuple[int, int]) -> nn.Module:
    """``timm.create_model(name, num_classes=0, img_size=(H, W), drop_path_rate=...)`` without downloads.

    ``img_size`` and ``drop_path_rate`` are dropped for models that do not accept them (most CNNs take no
    ``img_size``). An unknown name is a ConfigError naming close matches.
    """
    import timm

    unknown = unknown_timm_model(mcfg.backbone)
    if unknown:
        raise ConfigError(f"model.backbone: {unknown}")
    kwargs: dict[str, Any] = {"num_classes": 0, "pretrained": False}
    optional: dict[str, Any] = {"img_size": tuple(img_size), "drop_path_rate": mcfg.drop_path}
    kwargs.update(mcfg.backbone_kwargs)
    for attempt in (optional, {k: v for k, v in optional.items() if k != "img_size"}, {}):
        try:
            return timm.create_model(mcfg.backbone, **{**attempt, **kwargs})
        except TypeError as exc:
            if "unexpected keyword" not in str(exc) and "got an unexpected" not in str(exc):
                raise ConfigError(f"model.backbone {mcfg.backbone!r} with {kwargs}: {exc}") from exc
            last = exc
        except (AssertionError, ValueError, RuntimeError) as exc:  # timm checks its kwargs with asserts
            raise ConfigError(
                f"model.backbone {mcfg.backbone!r} cannot be built with model.backbone_kwargs "
                f"{mcfg.backbone_kwargs} ({type(exc).__name__}: {exc}); check those keys for this architecture"
            ) from exc
    raise ConfigError(f"model.backbone {mcfg.backbone!r}: cannot be created with {kwargs} ({last})")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: ``.safetensors`` via safetensors, anything else ``torch.load(weights_only=True)``.

    Common wrappers are unwrapped (``state_dict`` / ``model`` / ``module`` / ``state_dict_ema`` entries and a
    ``module.`` key prefix). Never unpickles arbitrary objects.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found (model.pretrained must be a local file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path), device="cpu")
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - report any unpickling refusal as a user error
            from differ_core.checkpoint import load_problem

            raise ConfigError(
                f"{path}: cannot be read as weights ({load_problem(exc)}); save a plain state dict "
                "(torch.save(model.state_dict(), f)) or a .safetensors file"
            ) from None
    for key in ("state_dict", "model", "module", "state_dict_ema", "model_state"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"{path}: not a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


DIFFER_BACKBONE_PREFIX = "backbone."
OPEN_CLIP_TRUNK_PREFIX = "visual.trunk."


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a local weights file into a timm backbone; returns ``{"missing": [...], "unexpected": [...]}``.

    timm's own ``checkpoint_filter_fn`` of the model's module runs first (it resamples position embeddings to
    the training grid and converts EVA-CLIP / open_clip visual checkpoints). A differ checkpoint
    (``checkpoints/last.pt`` of another run) gives its backbone, an open_clip model with a timm tower its
    ``visual.trunk``. Classifier weights and tensors whose
    shape differs are skipped and reported. A file that matches almost nothing is refused.
    """
    sd = read_state_dict(path)
    own = backbone.state_dict()
    if not any(k in own for k in sd) and any(k.startswith(DIFFER_BACKBONE_PREFIX) for k in sd):
        # a differ checkpoint (e.g. `differ train` on another dataset): its backbone is the pre-training
        sd = {
            k[len(DIFFER_BACKBONE_PREFIX) :]: v for k, v in sd.items() if k.startswith(DIFFER_BACKBONE_PREFIX)
        }
    elif not any(k in own for k in sd) and any(k.startswith(OPEN_CLIP_TRUNK_PREFIX) for k in sd):
        # an open_clip model with a timm image tower (a shipped SynthCC start): its trunk is the backbone
        sd = {
            k[len(OPEN_CLIP_TRUNK_PREFIX) :]: v for k, v in sd.items() if k.startswith(OPEN_CLIP_TRUNK_PREFIX)
        }
    module = sys.modules.get(type(backbone).__module__)
    filt = getattr(module, "checkpoint_filter_fn", None)
    if filt is not None:
        try:
            sd = filt(sd, backbone)
        except Exception as exc:  # noqa: BLE001 - fall back to the raw keys, reported below
            log.warning("timm checkpoint_filter_fn failed on %s (%s); loading raw keys", path, exc)
    usable: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            skipped.append(f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}")
        elif k in own:
            usable[k] = v
    result = backbone.load_state_dict(usable, strict=False)
    unexpected = sorted(set(sd) - set(own)) + skipped
    missing = sorted(result.missing_keys)
    if len(usable) < max(1, len(own) // 2):
        raise ConfigError(
            f"{path}: only {len(usable)} of {len(own)} backbone tensors match {type(backbone).__name__}; is it "
            f"the weights of a different architecture? (e.g. missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    log.info(
        "loaded %s: %d tensors, %d missing %s, %d unexpected %s",
        path, len(usable), len(missing), missing[:8], len(unexpected), unexpected[:8],
    )  # fmt: skip
    return {"missing": missing, "unexpected": unexpected}


def backbone_mean_std(backbone: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation the backbone was pre-trained with (ImageNet's when timm does not say)."""
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    mean = tuple(float(x) for x in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(x) for x in cfg.get("std", (0.229, 0.224, 0.225)))
    return mean, std


# --------------------------------------------------------------------------- heads
class NBDetachHead(nn.Module):
    """Gradient reversal then a bias-free projection to the text space (one per non-biometric perspective)."""

    def __init__(self, in_dim: int, text_dim: int, alpha: float = 1.0) -> None:
        super().__init__()
        self.grl = GradientReversal(alpha)
        self.proj = nn.Linear(in_dim, text_dim, bias=False)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.proj(self.grl(f))


OFFICIAL_HEAD_STD = 0.02  # timm Eva head: trunc_normal_(std=.02) ...
OFFICIAL_HEAD_INIT_SCALE = 0.001  # ... times head_init_scale (eva_meta_bio.py, Eva.__init__)


def init_classifier(classifier: nn.Linear, head_init: str) -> None:
    """``normal``: N(0, 1e-3); ``official``: trunc_normal(std 0.02) x 0.001 as the official Eva head. Bias 0."""
    with torch.no_grad():
        if head_init == "official":
            nn.init.trunc_normal_(classifier.weight, std=OFFICIAL_HEAD_STD)
            classifier.weight.mul_(OFFICIAL_HEAD_INIT_SCALE)
        else:
            nn.init.normal_(classifier.weight, std=0.001)
        if classifier.bias is not None:
            nn.init.zeros_(classifier.bias)


def fresh_final_norm(cfg: TrainConfig) -> bool:
    """Whether ``model.final_norm`` resets the backbone's final norm after ``model.pretrained`` is loaded.

    ``official``: their ``clipFc`` layout (both text losses, ``train.py``) deletes ``norm`` and builds a new
    ``norm_bio``, so the pretrained ``norm.*`` is dropped; their baseline (``transformer``) keeps it."""
    mode = cfg.model.final_norm
    if mode == "official":
        return {"bio", "nbdetach"} <= set(cfg.losses.use)
    return mode == "fresh"


def reset_final_norm(backbone: nn.Module) -> bool:
    """Reset the ViT/Eva final ``norm`` to weight 1, bias 0; False when the backbone has no such norm."""
    norm = getattr(backbone, "norm", None)
    if norm is None or not hasattr(norm, "reset_parameters") or isinstance(norm, nn.Identity):
        return False
    norm.reset_parameters()
    return True


class DifferModel(nn.Module):
    """Backbone + camera embedding + heads. Train mode returns a dict, eval mode the identity feature."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        num_cameras: int,
        text_dim: int | None,
        num_nonbio: int,
        lambda_cam: float = 3.0,
        bio_head: bool = False,
        bnneck: bool = False,
        use_bio: bool = True,
        use_nbdetach: bool = True,
        grl_alpha: float = 1.0,
        grad_checkpointing: bool = False,
        learnable_scale: float | None = None,
        head_init: str = "normal",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.kind = backbone_kind(backbone)
        self.feat_dim = feature_dim(backbone)
        self.num_classes = int(num_classes)
        self.num_cameras = int(num_cameras)
        self.text_dim = text_dim
        self.lambda_cam = float(lambda_cam)
        self.grad_checkpointing = grad_checkpointing
        if self.lambda_cam > 0 and self.num_cameras > 0:
            self.camera_embed = nn.Parameter(torch.zeros(self.num_cameras, self.feat_dim))
            nn.init.trunc_normal_(self.camera_embed, std=0.02)
        else:
            self.register_parameter("camera_embed", None)
        if bio_head and self.kind == "generic":
            raise ConfigError(
                f"model.bio_head needs a ViT backbone (timm VisionTransformer or Eva); {type(backbone).__name__} "
                "has no last transformer block to duplicate; set model.bio_head=false"
            )
        if bio_head:
            self.head_bio = copy.deepcopy(backbone.blocks[-1])
            self.norm_bio = copy.deepcopy(backbone.norm)
        else:
            self.head_bio = None
            self.norm_bio = None
        if bnneck:
            self.bottleneck: nn.Module = nn.BatchNorm1d(self.feat_dim)
            self.bottleneck.bias.requires_grad_(False)
        else:
            self.bottleneck = nn.Identity()
        self.classifier = (
            nn.Linear(self.feat_dim, self.num_classes, bias=not bnneck) if num_classes > 0 else None
        )
        if self.classifier is not None:
            init_classifier(self.classifier, head_init)
        need_text = use_bio or (use_nbdetach and num_nonbio > 0)
        if need_text and not text_dim:
            raise ConfigError("the bio/nbdetach losses need text features: text_dim must be given")
        self.bio_proj = nn.Linear(self.feat_dim, int(text_dim)) if use_bio and text_dim else None
        if self.bio_proj is not None:
            nn.init.trunc_normal_(self.bio_proj.weight, std=0.02)
            nn.init.zeros_(self.bio_proj.bias)
        self.nb_heads = (
            nn.ModuleList(NBDetachHead(self.feat_dim, int(text_dim), grl_alpha) for _ in range(num_nonbio))
            if use_nbdetach and num_nonbio > 0 and text_dim
            else None
        )

        # a learnable contrastive logit scale (stored as its log, like CLIP); None = the loss config's constant
        if learnable_scale is not None and need_text:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(learnable_scale)))
        else:
            self.register_parameter("logit_scale", None)

    # ---- alpha schedule
    def set_grl_alpha(self, alpha: float) -> None:
        """Set the gradient-reversal coefficient of every NBDetach branch."""
        for head in self.nb_heads or []:
            head.grl.alpha = float(alpha)

    # ---- forward
    def _camera(self, camids: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        if self.camera_embed is None or camids is None:
            return None
        camids = camids.to(self.camera_embed.device).long()
        if camids.numel() and (int(camids.min()) < 0 or int(camids.max()) >= self.num_cameras):
            raise CameraIdError(
                f"camera ids {camids.unique().tolist()} outside 0..{self.num_cameras - 1}: the checkpoint was "
                f"trained with {self.num_cameras} camera(s); pass 0-based camids of the training cameras"
            )
        return (self.lambda_cam * self.camera_embed[camids]).to(dtype)

    def _run_block(self, blk: nn.Module, x: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "eva":
            fn = (lambda t: blk(t, rope=rope)) if rope is not None else blk
        else:
            fn = blk
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(fn, x, use_reentrant=False)
        return fn(x)

    def _tokens(self, images: torch.Tensor, camids: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        """Patch embedding + position (+ camera) embedding, through every block but the last."""
        bb = self.backbone
        x = bb.patch_embed(images)
        out = bb._pos_embed(x)
        x, rope = out if isinstance(out, tuple) else (out, None)
        cam = self._camera(camids, x.dtype)
        if cam is not None:
            x = x + cam.unsqueeze(1)  # every token, CLS included, like the position embedding
        if self.kind == "vit":
            x = bb.patch_drop(x)
        x = bb.norm_pre(x)
        for blk in bb.blocks[:-1]:
            x = self._run_block(blk, x, rope)
        return x, rope

    def features(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        """``(f, f_bio)``: the identity feature and the biometric head's feature (``None`` without a head)."""
        bb = self.backbone
        if self.kind == "generic":
            f = bb(images)
            if f.ndim > 2:
                f = f.flatten(1)
            cam = self._camera(camids, f.dtype)
            return (f + cam if cam is not None else f), None
        x, rope = self._tokens(images, camids)
        main = bb.norm(self._run_block(bb.blocks[-1], x, rope))
        f = bb.forward_head(main, pre_logits=True)
        f_bio = None
        if self.head_bio is not None and self.training:
            f_bio = bb.forward_head(self.norm_bio(self._run_block(self.head_bio, x, rope)), pre_logits=True)
        return f, f_bio

    def forward(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> Any:
        """Eval: the identity feature [B, F]. Train: a dict with ``feat``, ``logits``, ``bio_proj`` [B, D],
        ``nb_proj`` [B, K, D] (the keys of absent heads are missing)."""
        f, f_bio = self.features(images, camids)
        if not self.training:
            return f
        out: dict[str, torch.Tensor] = {"feat": f}
        if self.classifier is not None:
            out["logits"] = self.classifier(self.bottleneck(f))
        if self.bio_proj is not None:
            out["bio_proj"] = self.bio_proj(f_bio if f_bio is not None else f)
        if self.nb_heads is not None:
            out["nb_proj"] = torch.stack([head(f) for head in self.nb_heads], dim=1)
        if self.logit_scale is not None:
            out["logit_scale"] = self.logit_scale.exp()
        return out


# --------------------------------------------------------------------------- factories
def build_model(
    cfg: TrainConfig, num_classes: int, num_cameras: int, text_dim: int | None, load_pretrained: bool = True
) -> DifferModel:
    """The model a config describes. ``load_pretrained=False`` skips ``model.pretrained`` (a checkpoint follows)."""
    mcfg = cfg.model
    backbone = create_backbone(mcfg, cfg.data.img_size)
    if mcfg.weights_file and load_pretrained:
        load_backbone_weights(backbone, mcfg.weights_file)
    if fresh_final_norm(cfg) and backbone_kind(backbone) != "generic":
        reset_final_norm(backbone)
    use = set(cfg.losses.use)
    model = DifferModel(
        backbone,
        num_classes=num_classes if "id" in use else 0,
        num_cameras=num_cameras,
        text_dim=text_dim if cfg.needs_text else None,
        num_nonbio=len(cfg.text.non_bio),
        lambda_cam=mcfg.lambda_cam,
        bio_head=mcfg.bio_head,
        bnneck=mcfg.bnneck,
        use_bio="bio" in use,
        use_nbdetach="nbdetach" in use,
        grl_alpha=cfg.losses.grl_alpha,
        grad_checkpointing=mcfg.grad_checkpointing,
        learnable_scale=cfg.losses.logit_scale if cfg.losses.learnable_scale else None,
        head_init=mcfg.head_init,
    )
    return model


def model_mean_std(cfg: TrainConfig, model: DifferModel) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The config's mean/std when given, else the backbone's."""
    mean, std = backbone_mean_std(model.backbone)
    return tuple(cfg.data.mean or mean), tuple(cfg.data.std or std)


def load_model_for_inference(
    checkpoint: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[DifferModel, TrainConfig, dict[str, Any]]:
    """``(model in eval mode, its TrainConfig, info)`` from a training checkpoint (``last.pt`` / ``best.pt``).

    ``info``: ``num_cameras``, ``num_classes``, ``text_dim``, ``img_size`` (H, W), ``mean``, ``std``, ``epoch``.
    """
    from differ_core.checkpoint import read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    cfg = TrainConfig.model_validate(ckpt["config"])
    model = build_model(cfg, int(ckpt["num_classes"]), int(ckpt["num_cameras"]), ckpt.get("text_dim"), False)
    from differ_core.checkpoint import load_model_state

    load_model_state(model, ckpt["model"], source=str(checkpoint))
    model.to(map_location).eval()
    info = {
        "num_cameras": int(ckpt["num_cameras"]),
        "num_classes": int(ckpt["num_classes"]),
        "text_dim": ckpt.get("text_dim"),
        "img_size": tuple(int(v) for v in ckpt.get("img_size", cfg.data.img_size)),
        "mean": tuple(float(v) for v in ckpt["mean"]),
        "std": tuple(float(v) for v in ckpt["std"]),
        "epoch": ckpt.get("epoch"),
    }
    return model, cfg, info
