"""CLIP checkpoints of random weights written in the key layouts users download (built offline, tiny).

- ``tiny_eva_clip(release, folder)``: an open_clip EVA02-CLIP of the release's structure (timm EVA02 trunk of the
  release's variant, shrunk; open_clip's custom text tower) and its weights twice: open_clip's layout
  (``visual.trunk.*``) and BAAI's EVA-CLIP ``.pt`` layout (``visual.blocks.*`` with their names: ``q_bias``,
  ``mlp.w1/w2/w3``, ``mlp.ffn_ln``, ``attn.inner_attn_ln``, rope buffers), the inverse of timm's
  ``eva.checkpoint_filter_fn``;
- ``save_torchscript(sd, path)``: a state dict as a TorchScript archive, the way OpenAI ships CLIP ``.pt`` files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

# BAAI release -> (timm EVA02 variant of its vision tower, patch size)
RELEASES = {
    "EVA02-CLIP-B-16": ("eva02_base_patch16_clip_224", 16),
    "EVA02-CLIP-L-14": ("eva02_large_patch14_clip_224", 14),
    "EVA02-CLIP-bigE-14": ("eva02_enormous_patch14_clip_224", 14),
}
TINY_TRUNK = {"embed_dim": 32, "depth": 2, "num_heads": 2}


def register_tiny_trunk(variant: str) -> str:
    """Register (once) a timm model ``differ_tiny_<variant>``: the variant's EVA02 with ``TINY_TRUNK`` sizes."""
    import timm
    from timm.models import register_model

    name = f"differ_tiny_{variant}"
    if not timm.is_model(name):

        def build(pretrained: bool = False, **kwargs):
            return timm.create_model(variant, pretrained=False, **{**TINY_TRUNK, **kwargs})

        build.__name__ = name
        register_model(build)
    return name


def tiny_eva_clip(release: str, folder: Path, width: int = 32, seed: int = 0) -> tuple[Path, Path, Path]:
    """``(config json, open_clip-layout .pt, BAAI-layout .pt)`` of a tiny random-weight EVA02-CLIP ``release``."""
    import open_clip

    variant, patch = RELEASES[release]
    folder.mkdir(parents=True, exist_ok=True)
    arch = f"tiny-{release}-w{width}"
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 2 * patch, "timm_model_name": register_tiny_trunk(variant),
                       "timm_model_pretrained": False, "timm_pool": "token", "timm_proj": None},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": width, "heads": 2, "layers": 1},
        "custom_text": True,
    }  # fmt: skip
    cfg_path = folder / f"{arch}.json"
    cfg_path.write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None)
    sd = model.state_dict()
    ours = folder / f"{arch}-open_clip.pt"
    torch.save(sd, ours)
    baai = folder / f"{arch}-baai.pt"
    torch.save(to_baai_layout(sd), baai)
    return cfg_path, ours, baai


def to_baai_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's EVA02-CLIP keys -> BAAI EVA-CLIP release keys (text unchanged, the visual tower renamed)."""
    out: dict[str, torch.Tensor] = {}
    swiglu = any(".mlp.fc1_g." in k for k in sd)
    for k, v in sd.items():
        if not k.startswith("visual.trunk."):
            out[k] = v
            continue
        k = "visual." + k[len("visual.trunk.") :]
        k = k.replace("attn.q_proj.bias", "attn.q_bias").replace("attn.v_proj.bias", "attn.v_bias")
        k = k.replace("mlp.norm.", "mlp.ffn_ln.").replace("attn.norm.", "attn.inner_attn_ln.")
        if swiglu:
            k = (
                k.replace("mlp.fc1_g.", "mlp.w1.")
                .replace("mlp.fc1_x.", "mlp.w2.")
                .replace("mlp.fc2.", "mlp.w3.")
            )
        out[k] = v
    out["visual.rope.freqs_cos"] = torch.zeros(4, 8)  # their rotary tables are saved; loaders recompute them
    out["visual.rope.freqs_sin"] = torch.zeros(4, 8)
    return out


class _Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_torchscript(sd: dict[str, torch.Tensor], path: Path) -> Path:
    """Write ``sd`` as a TorchScript archive (``torch.jit.save``) whose ``state_dict()`` has exactly its keys."""
    root = _Holder()
    for key, value in sd.items():
        *parts, name = key.split(".")
        mod = root
        for part in parts:
            if not hasattr(mod, part):
                mod.add_module(part, _Holder())
            mod = getattr(mod, part)
        mod.register_parameter(name, nn.Parameter(value.clone(), requires_grad=False))
    torch.jit.save(torch.jit.script(root), str(path))
    return path
