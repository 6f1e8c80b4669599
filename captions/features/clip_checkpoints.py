"""CLIP checkpoints as users download them: read the file, name its key layout, load the text tower only.

Layouts (``checkpoint_layout``):

- ``eva-clip``: BAAI's EVA-CLIP releases (``EVA02_CLIP_B_psz16_s8B.pt``, ``EVA02_CLIP_L_psz14_s4B.pt``,
  ``EVA02_CLIP_E_psz14_s4B.pt``): ``text.*`` (open_clip's custom-text tower) beside ``visual.blocks.*`` /
  ``visual.patch_embed.*`` (their EVA ViT; timm's ``eva.checkpoint_filter_fn`` reads it for the backbone);
- ``open_clip``: open_clip's own files (hub folders' ``open_clip_model.safetensors``): ``text.*`` with a timm trunk
  ``visual.trunk.*``, or the top-level ``transformer.*``/``token_embedding.*`` of a classic CLIP;
- ``openai``: OpenAI's CLIP ``.pt`` (a TorchScript archive; its state dict is the classic CLIP layout);
- ``transformers``: ``text_model.*``/``vision_model.*`` of a transformers ``CLIPModel`` (use ``hf-clip:<dir>``);
- ``timm-vision``: a vision tower alone (``blocks.*``, ``patch_embed.*``), no text.

``load_text_tower`` puts the text tensors of any of the first three into an open_clip model of the named
architecture and refuses, in one line naming the expected and the found, a file whose layout or shapes do not fit.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from differ_common.errors import ConfigError

_CLASSIC_TEXT = ("positional_embedding", "token_embedding.", "transformer.", "ln_final.", "text_projection")


def read_checkpoint(path: Path) -> tuple[dict[str, Any], bool]:
    """``(state dict, is_torchscript)`` of a weights file: safetensors, a ``torch.save`` dict (never arbitrary
    pickles), or a TorchScript archive (OpenAI's CLIP ``.pt``); common wrappers unwrapped."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu"), False
    scripted = False
    try:
        sd: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a TorchScript archive, or a file we refuse to unpickle
        if not _is_torchscript(path):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"{path}: not a weights file torch.load(weights_only=True) can read ({first}); expected a CLIP "
                "state dict (.pt/.bin/.safetensors) or OpenAI's TorchScript .pt"
            ) from None
        sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        scripted = True
    for key in ("state_dict", "model", "module", "state_dict_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not sd:
        raise ConfigError(f"{path}: not a state dict of tensors")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    for k in ("input_resolution", "context_length", "vocab_size"):  # TorchScript CLIP's non-tensor entries
        sd.pop(k, None)
    return dict(sd), scripted


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip with a ``code/`` folder (``torch.jit.save``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in n or n.endswith("constants.pkl") for n in zf.namelist())


def checkpoint_layout(sd: dict[str, Any], scripted: bool = False) -> str:
    """The key layout of a CLIP-like state dict (module docstring)."""
    keys = list(sd)
    if any(k.startswith(("text_model.", "vision_model.")) for k in keys):
        return "transformers"
    has_text = any(k.startswith("text.") for k in keys) or any(k.startswith(_CLASSIC_TEXT) for k in keys)
    if not has_text:
        return (
            "timm-vision"
            if any(k.startswith(("blocks.", "patch_embed.", "visual.")) for k in keys)
            else "unknown"
        )
    if scripted:
        return "openai"
    if any(k.startswith("visual.trunk.") for k in keys):
        return "open_clip"
    if any(k.startswith(("visual.blocks.", "visual.patch_embed.")) for k in keys):
        return "eva-clip"
    return "open_clip"


def _text_state(model: Any, sd: dict[str, Any]) -> dict[str, Any]:
    """The file's text tensors under the model's own key names (classic <-> custom-text prefix)."""
    custom = hasattr(model, "text")
    out = {}
    for k, v in sd.items():
        if k.startswith("visual.") or k in ("logit_scale", "logit_bias"):
            continue
        if custom and k.startswith(_CLASSIC_TEXT):
            k = f"text.{k}"
        elif not custom and k.startswith("text.") and k[len("text.") :].startswith(_CLASSIC_TEXT):
            k = k[len("text.") :]
        out[k] = v
    return out


def load_text_tower(model: Any, path: Path, arch: str) -> str:
    """Load ``path``'s text tower into the open_clip ``model`` (architecture ``arch``); returns the file's layout.

    Every text tensor of the model must be in the file with its shape: else one ConfigError line naming the
    expected tensor and shape and what the file has instead.
    """
    sd, scripted = read_checkpoint(path)
    layout = checkpoint_layout(sd, scripted)
    if layout == "transformers":
        raise ConfigError(
            f"{path}: a transformers CLIPModel checkpoint (text_model.*), not open_clip {arch}'s layout; load its "
            f"folder with --encoder hf-clip:{path.parent}"
        )
    if layout in ("timm-vision", "unknown"):
        raise ConfigError(
            f"{path}: expected a CLIP checkpoint with a text tower for open_clip {arch}; found "
            f"{'a vision tower alone' if layout == 'timm-vision' else 'no CLIP keys'} (e.g. {list(sd)[:2]}): use "
            "the full EVA-CLIP/open_clip/OpenAI file, not the timm backbone weights"
        )
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("visual.")}
    own.pop("logit_scale", None)
    own.pop("logit_bias", None)
    found = _text_state(model, sd)
    for k, v in own.items():
        if k not in found:
            sample = [f for f in found if f.split(".")[0] == k.split(".")[0]][:1] or list(found)[:1]
            raise ConfigError(
                f"{path}: open_clip {arch} expects text tensor {k} {tuple(v.shape)}; the {layout} file has no such "
                f"key (it has e.g. {sample}): is it another architecture's checkpoint?"
            )
        if tuple(found[k].shape) != tuple(v.shape):
            raise ConfigError(
                f"{path}: open_clip {arch} expects text tensor {k} of shape {tuple(v.shape)}; the {layout} file "
                f"has {tuple(found[k].shape)}: pass the architecture it was trained as (open_clip:<arch>@{path})"
            )
    model.load_state_dict({k: found[k] for k in own}, strict=False)
    return layout
