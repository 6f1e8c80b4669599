"""The authors' DIFFER model tree and checkpoint layout, re-stated (not copied) at tiny width for the converter tests.

Read from github.com/xliangp/DIFFER:

* ``model/eva_meta_bio.py`` @ 67acb5d: ``EvaAttention``, ``EvaBlock``, ``GradientReversalClassifier``
  (``head_fc = nn.Linear(in_num, class_num, bias=False)``), ``Eva.__init__`` / ``forward_features`` /
  ``forward_head`` / ``forward`` with ``last_layer='clipFc'`` (``depth - 1`` blocks, ``del self.norm``, last block
  as ``head_bio`` + ``norm_bio``), and the block flags of ``eva02_large_patch14_clip_224_bio`` (``qkv_fused=False``,
  ``swiglu_mlp=True``, ``scale_mlp=True``, ``scale_attn_inner=True``, ``use_rot_pos_emb=True``,
  ``ref_feat_shape=(16, 16)``, ``global_pool='token'``, ``mlp_ratio=4 * 2 / 3``).
* ``model/eva_meta_bio.py`` @ 508fc5a (first release): the same layout under ``last_layer='clipFc_clsFc'``.
* ``configs/{ltcc,prcc,Celeb_light}/eva02_l_bio.yml`` @ 67acb5d, ``configs/ccvid/eva02_l_bio.yml`` @ 508fc5a,
  ``config/defaults.py`` at both commits (``CAMERA_XISHU`` 3 at HEAD, 1 at 508fc5a; ``CLIP_LOSS_TYPE='constant'``,
  so no logit-scale parameters; ``NONBIO_HEAD=False``, so no ``head_nonbio`` / ``head_clip_nonbio``).
* ``train.py`` @ 67acb5d: ``LAST_LAYER`` becomes ``'transformer'`` (plain EVA: ``depth`` blocks + ``norm``, no
  text heads) unless both ``clipBio`` and ``clipBioReverse`` are losses (the README's training command passes both).
* ``processor/processor.py`` @ 67acb5d: ``torch.save(model.state_dict(), '<OUTPUT_DIR>/<MODEL.NAME>_best.pth')`` on
  rank 0 of the ``DistributedDataParallel``-wrapped model: a plain state dict, every key prefixed ``module.``, no
  EMA, optimizer or epoch entries. ``rope`` buffers and the attention's ``k_bias`` are non-persistent.
"""

from __future__ import annotations

import torch
from timm.layers import LayerNorm, PatchEmbed, RotaryEmbeddingCat, SwiGLU, apply_rot_embed_cat
from torch import nn

# Released configs: text dim (MODEL.CLIP_DIM), non-biometric perspectives (DATA.NOBIO_INDEX, 0..5 = biometrics,
# hairstyle, clothing, pose, interaction, environment), camera scale (MODEL.CAMERA_XISHU, the defaults.py value)
# and LAST_LAYER. num_classes / num_cameras are the train-split statistics their dataset classes compute.
OFFICIAL_RELEASES = {
    "ltcc": {"commit": "67acb5d", "config": "configs/ltcc/eva02_l_bio.yml", "clip_dim": 512,
             "non_bio": ["hairstyle", "clothing"], "camera_xishu": 3.0, "last_layer": "clipFc",
             "num_classes": 77, "num_cameras": 12},
    "prcc": {"commit": "67acb5d", "config": "configs/prcc/eva02_l_bio.yml", "clip_dim": 768,
             "non_bio": ["hairstyle"], "camera_xishu": 3.0, "last_layer": "clipFc",
             "num_classes": 150, "num_cameras": 3},
    "celeb_light": {"commit": "67acb5d", "config": "configs/Celeb_light/eva02_l_bio.yml", "clip_dim": 1024,
                    "non_bio": ["clothing"], "camera_xishu": 3.0, "last_layer": "clipFc",
                    "num_classes": 490, "num_cameras": 1},
    "ccvid": {"commit": "508fc5a", "config": "configs/ccvid/eva02_l_bio.yml", "clip_dim": 1024,
              "non_bio": ["clothing"], "camera_xishu": 1.0, "last_layer": "clipFc_clsFc",
              "num_classes": 75, "num_cameras": 3},
}  # fmt: skip

# EvaBlock(qkv_fused=False, swiglu_mlp=True, scale_mlp=True, scale_attn_inner=True, init_values=None): its
# state_dict() suffixes in registration order (k_proj has no bias; no gamma_1/gamma_2 without init_values).
BLOCK_KEYS = [
    "norm1.weight", "norm1.bias",
    "attn.q_proj.weight", "attn.q_proj.bias", "attn.k_proj.weight", "attn.v_proj.weight", "attn.v_proj.bias",
    "attn.norm.weight", "attn.norm.bias", "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias",
    "mlp.fc1_g.weight", "mlp.fc1_g.bias", "mlp.fc1_x.weight", "mlp.fc1_x.bias",
    "mlp.norm.weight", "mlp.norm.bias", "mlp.fc2.weight", "mlp.fc2.bias",
]  # fmt: skip


def official_keys(depth: int, n_reverse: int, last_layer: str = "clipFc") -> list[str]:
    """The keys of their ``Eva.state_dict()`` in order, transcribed from ``Eva.__init__`` (own parameters first:
    cls_token, pos_embed, camera_embed; then patch_embed, blocks, [norm], head, head_bio, norm_bio, head_clip_bio,
    head_clip_bioReverse), before the ``module.`` prefix DDP adds."""
    bio = last_layer in ("clipFc", "clipFc_clsFc")
    keys = ["cls_token", "pos_embed", "camera_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    for i in range(depth - 1 if bio else depth):
        keys += [f"blocks.{i}.{k}" for k in BLOCK_KEYS]
    if not bio:
        return keys + ["norm.weight", "norm.bias", "head.weight", "head.bias"]
    keys += ["head.weight", "head.bias"]
    keys += [f"head_bio.{k}" for k in BLOCK_KEYS]
    keys += ["norm_bio.weight", "norm_bio.bias", "head_clip_bio.weight", "head_clip_bio.bias"]
    keys += [f"head_clip_bioReverse.{k}.head_fc.weight" for k in range(n_reverse)]
    return keys


class _Attention(nn.Module):
    """EvaAttention with separate q/k/v projections (k without bias), an inner LayerNorm and RoPE on patch tokens."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.norm = LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (
            p(x).reshape(b, n, self.num_heads, -1).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        q = torch.cat([q[:, :, :1], apply_rot_embed_cat(q[:, :, 1:], rope)], 2)
        k = torch.cat([k[:, :, :1], apply_rot_embed_cat(k[:, :, 1:], rope)], 2)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj(self.norm((attn @ v).transpose(1, 2).reshape(b, n, c)))


class _Block(nn.Module):
    """Pre-norm EvaBlock: x + attn(norm1(x)), then x + SwiGLU-with-norm(norm2(x))."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = LayerNorm(dim)
        self.mlp = SwiGLU(in_features=dim, hidden_features=int(dim * 4 * 2 / 3), norm_layer=LayerNorm)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class _ReverseHead(nn.Module):
    """GradientReversalClassifier: GRL (identity forward) then ``head_fc`` (bias-free in their code)."""

    def __init__(self, dim: int, out: int, bias: bool = False) -> None:
        super().__init__()
        self.head_fc = nn.Linear(dim, out, bias=bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head_fc(f)


class OfficialEvaBio(nn.Module):
    """Their ``Eva`` for ``last_layer`` in clipFc / clipFc_clsFc (bio head) or transformer (plain), at tiny width.

    Eval: the CLS token of ``norm_bio(head_bio(blocks(x)))`` (``norm(blocks(x))`` for transformer; their code takes
    sample 0 there, a known bug not re-stated). Train: ``cls_score``, ``clip_bio_score``, ``clip_bio_reverse_score``.
    ``reverse_bias=True`` gives ``head_fc`` a bias, which their published code never has.
    """

    def __init__(
        self,
        num_classes: int,
        camera_num: int,
        clip_dim: int,
        n_reverse: int,
        camera_xishu: float = 3.0,
        last_layer: str = "clipFc",
        img_size: tuple[int, int] = (28, 14),
        embed_dim: int = 32,
        depth: int = 3,
        num_heads: int = 2,
        reverse_bias: bool = False,
    ) -> None:
        super().__init__()
        self.bio = last_layer in ("clipFc", "clipFc_clsFc")
        self.camera_xishu = camera_xishu
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=14, in_chans=3, embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.camera_embed = nn.Parameter(torch.zeros(camera_num, 1, embed_dim))
        self.rope = RotaryEmbeddingCat(
            embed_dim // num_heads,
            in_pixels=False,
            feat_shape=self.patch_embed.grid_size,
            ref_feat_shape=(16, 16),
        )
        self.blocks = nn.ModuleList(
            _Block(embed_dim, num_heads) for _ in range(depth - 1 if self.bio else depth)
        )
        if not self.bio:
            self.norm = LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        if self.bio:
            self.head_bio = _Block(embed_dim, num_heads)
            self.norm_bio = LayerNorm(embed_dim)
            self.head_clip_bio = nn.Linear(embed_dim, clip_dim)
            self.head_clip_bioReverse = nn.ModuleList(
                _ReverseHead(embed_dim, clip_dim, reverse_bias) for _ in range(n_reverse)
            )
        with torch.no_grad():  # trained-looking weights: nothing left at its zero / identity init
            for p in self.parameters():
                p.normal_(0.0, 0.1)
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.add_(1.0)

    def forward(self, x: torch.Tensor, cam_label: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed + self.camera_xishu * self.camera_embed[cam_label]
        rope = self.rope.get_embed()
        for blk in self.blocks:
            x = blk(x, rope)
        x = self.norm_bio(self.head_bio(x, rope)) if self.bio else self.norm(x)
        feat = x[:, 0]
        if not self.training:
            return feat
        out = {"cls_score": self.head(feat)}
        if self.bio:
            out["clip_bio_score"] = self.head_clip_bio(feat)
            out["clip_bio_reverse_score"] = torch.stack([h(feat) for h in self.head_clip_bioReverse], dim=1)
        return out


def ddp_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``DistributedDataParallel(model).state_dict()`` as their processor saves it: every key ``module.``-prefixed."""
    return {f"module.{k}": v.detach().clone() for k, v in model.state_dict().items()}
