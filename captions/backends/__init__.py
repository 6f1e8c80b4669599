"""Captioner backends behind one small interface: a batch of images + one perspective's prompt → captions.

Specs: ``hf:<local dir>`` (transformers image-text-to-text), ``vllm:<local dir>`` (optional extra), and
``attributes`` (SynthCC ground truth through templates). Constructing a backend validates its spec (folder,
config, optional package) but loads no weights: a rerun with nothing missing never touches the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from differ_common.errors import ConfigError
from differ_common.fingerprint import sha256_json

if TYPE_CHECKING:
    from PIL import Image

    from captions.prompts import PerspectiveSpec

BACKENDS = ("hf", "vllm", "attributes")


class Captioner(Protocol):
    """What the caption writer needs from a backend."""

    name: str  # the ``captioner`` column: ``backend:model``, e.g. ``hf:llava-1.5-7b-hf``
    fingerprint: str  # ``model_fingerprint`` column: identifies the weights / generator
    needs_images: bool  # False: ``caption`` ignores ``images`` (the writer does not open files)
    min_batch_size: int  # the writer uses at least this many images per batch

    def caption(
        self, images: list[Image.Image] | None, spec: PerspectiveSpec, image_ids: list[str]
    ) -> list[str]:  # pragma: no cover - protocol
        """One caption per image, in order."""
        ...


def parse_spec(spec: str) -> tuple[str, str]:
    """``"hf:/models/llava"`` → ``("hf", "/models/llava")``; ``"attributes"`` → ``("attributes", "")``."""
    backend, sep, rest = spec.partition(":")
    backend = backend.strip().lower()
    if backend not in BACKENDS:
        raise ConfigError(
            f"unknown captioner {spec!r}; use hf:<local model dir>, vllm:<local model dir> or attributes"
        )
    if backend in ("hf", "vllm") and not rest.strip():
        raise ConfigError(
            f"captioner {spec!r} needs a local model folder, e.g. {backend}:/models/llava-1.5-7b-hf"
        )
    return backend, rest.strip()


def model_captioner_name(backend: str, model_dir: str | os.PathLike) -> str:
    """``backend:<model folder name>`` (symlinks and ``~`` resolved): the ``captioner`` column of hf/vllm."""
    return f"{backend}:{Path(model_dir).expanduser().resolve().name}"


def captioner_name(spec: str, noise: float = 0.0, seed: int = 0) -> str:
    """The ``captioner`` column that the backend named by ``spec`` writes; builds nothing and reads no file."""
    backend, loc = parse_spec(spec)
    if backend == "attributes":
        from captions.attributes_captioner import attributes_captioner_name

        return attributes_captioner_name(noise, seed)
    return model_captioner_name(backend, loc)


def model_dir_fingerprint(path: str | os.PathLike) -> str:
    """Hash of a model folder's JSON configs (contents) and other files (names + sizes); nothing is loaded."""
    root = Path(path)
    items: list[Any] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        rel = p.relative_to(root).as_posix()
        if p.suffix in (".json", ".jinja", ".txt", ".model") and p.stat().st_size < (8 << 20):
            items.append([rel, sha256_json(p.read_text(encoding="utf-8", errors="replace"))])
        else:
            items.append([rel, p.stat().st_size])
    return sha256_json(items, 16)


def check_model_dir(spec: str, path: str, kind: str = "vlm") -> Path:
    """A local transformers model folder with a config.json, else one ConfigError line naming it."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"{root}: model folder not found (captioner {spec!r}); pass a local folder with the weights"
        )
    cfg_file = root / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(
            f"{root}: no config.json; {spec!r} needs a transformers model folder (save_pretrained)"
        )
    if kind == "vlm":
        import json

        try:
            cfg = json.loads(cfg_file.read_text())
        except ValueError as exc:
            raise ConfigError(f"{cfg_file}: not valid JSON ({exc})") from exc
        archs = " ".join(cfg.get("architectures") or [])
        is_vlm = "vision_config" in cfg or any(
            k in archs for k in ("ConditionalGeneration", "ImageTextToText", "VL", "Vision")
        )
        if not is_vlm:
            raise ConfigError(
                f"{root}: not an image-text-to-text model (model_type {cfg.get('model_type')!r}, no vision "
                "config); pass a VLM such as LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision or Qwen2-VL"
            )
    return root


def make_captioner(
    spec: str,
    *,
    workdir: str | os.PathLike | None = None,
    dataset: str | None = None,
    noise: float = 0.0,
    seed: int = 0,
    trust_remote_code: bool = False,
    device: str | None = None,
) -> Captioner:
    """Build the backend named by ``spec`` (validated now, weights loaded on first use)."""
    backend, loc = parse_spec(spec)
    if backend == "attributes":
        from captions.attributes_captioner import AttributesCaptioner

        if loc:
            raise ConfigError(
                f"captioner {spec!r}: 'attributes' takes no argument; use --noise for the noise rate"
            )
        return AttributesCaptioner(workdir, dataset, noise=noise, seed=seed)
    if noise:
        raise ConfigError(f"--noise applies to the attributes captioner only, not {spec!r}")
    if backend == "hf":
        from captions.backends.hf import HFCaptioner

        return HFCaptioner(loc, trust_remote_code=trust_remote_code, device=device)
    from captions.backends.vllm import VLLMCaptioner

    return VLLMCaptioner(loc, trust_remote_code=trust_remote_code)


def clean_caption(text: str) -> str:
    """One line: control characters dropped, whitespace collapsed, stripped."""
    text = "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in text)
    return " ".join(text.split())
