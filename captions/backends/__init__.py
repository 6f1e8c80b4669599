"""Captioner backends behind one small interface: a batch of images + one perspective's prompt → captions.

Specs: ``hf:<local dir>`` (transformers image-text-to-text), ``vllm:<local dir>`` (optional extra), and
``attributes`` (SynthCC ground truth through templates). Constructing a backend validates its spec (folder,
config, optional package) but loads no weights: a rerun with nothing missing never touches the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from differ_common.errors import ConfigError
from differ_common.fingerprint import package_versions, sha256_json
from differ_common.registry import Registry

if TYPE_CHECKING:
    from PIL import Image

    from captions.prompts import PerspectiveSpec

CAPTIONERS = Registry("captioner")


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
    entry, arg = CAPTIONERS.parse(spec)
    return entry.name, arg


def model_captioner_name(backend: str, model_dir: str | os.PathLike) -> str:
    """``backend:<model folder name>`` (symlinks and ``~`` resolved): the ``captioner`` column of hf/vllm."""
    return f"{backend}:{Path(model_dir).expanduser().resolve().name}"


def captioner_name(spec: str, noise: float = 0.0, seed: int = 0) -> str:
    """The ``captioner`` column that the backend named by ``spec`` writes; builds nothing and reads no file."""
    entry, loc = CAPTIONERS.parse(spec)
    return entry.meta["name_of"](loc, noise, seed)


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


# the distributions that run each backend (their versions are part of ``captioner_fingerprint``)
RUNTIME_PACKAGES = {"hf": ("transformers",), "vllm": ("vllm", "transformers")}


def captioner_fingerprint(spec: str) -> str:
    """Cheap fingerprint of a captioner (or ``hf:`` summarizer) spec: the spec, the installed versions of the
    packages that run its backend, and ``model_dir_fingerprint`` of its model folder; reads no weights."""

    backend, _, loc = spec.partition(":")
    parts: list[Any] = [spec, package_versions(*RUNTIME_PACKAGES.get(backend.strip().lower(), ()))]
    if loc.strip():
        folder = Path(loc.strip()).expanduser()
        parts.append(model_dir_fingerprint(folder) if folder.is_dir() else f"missing:{folder}")
    return sha256_json(parts, 16)


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
    engine_args: dict[str, Any] | None = None,
) -> Captioner:
    """Build the backend named by ``spec`` (validated now, weights loaded on first use); ``engine_args``
    are passed to the vLLM engine (``--vllm-arg k=v``) and refused by the other backends."""
    entry, loc = CAPTIONERS.parse(spec)
    if noise and not entry.meta.get("noise"):
        raise ConfigError(f"--noise applies to the attributes captioner only, not {spec!r}")
    if engine_args and entry.name != "vllm":
        raise ConfigError(f"--vllm-arg applies to the vllm captioner only, not {spec!r}")
    return entry.target(
        loc, workdir=workdir, dataset=dataset, noise=noise, seed=seed, trust_remote_code=trust_remote_code,
        device=device, engine_args=dict(engine_args or {}),
    )  # fmt: skip


def _model_name(backend: str) -> Callable[[str, float, int], str]:
    return lambda loc, noise, seed: model_captioner_name(backend, loc)


def _attributes_name(loc: str, noise: float, seed: int) -> str:
    from captions.attributes_captioner import attributes_captioner_name

    return attributes_captioner_name(noise, seed)


@CAPTIONERS.register("hf", arg="required", arg_help="<local VLM dir>", name_of=_model_name("hf"))
def _hf(loc: str, *, trust_remote_code: bool, device: str | None, **_: Any) -> Captioner:
    """transformers image-text-to-text (LLaVA-1.5/NeXT/OneVision, Qwen2-VL, ...), batched ``generate``."""
    from captions.backends.hf import HFCaptioner

    return HFCaptioner(loc, trust_remote_code=trust_remote_code, device=device)


@CAPTIONERS.register("vllm", arg="required", arg_help="<local VLM dir>", name_of=_model_name("vllm"))
def _vllm(loc: str, *, trust_remote_code: bool, engine_args: dict[str, Any], **_: Any) -> Captioner:
    """vLLM offline engine (optional extra, GPU)."""
    from captions.backends.vllm import VLLMCaptioner

    return VLLMCaptioner(loc, trust_remote_code=trust_remote_code, **engine_args)


def parse_engine_args(items: list[str] | None) -> dict[str, Any]:
    """``["tensor_parallel_size=2", "gpu_memory_utilization=0.85"]`` → a dict (values read as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--vllm-arg {item!r}: expected key=value, e.g. tensor_parallel_size=2")
        out[key.strip()] = yaml.safe_load(value)
    return out


@CAPTIONERS.register("attributes", name_of=_attributes_name, noise=True, summary="SynthCC ground truth")
def _attributes(
    loc: str, *, workdir: Any, dataset: str | None, noise: float, seed: int, **_: Any
) -> Captioner:
    """SynthCC: captions from the generator's ground truth through varied templates (optional noise)."""
    from captions.attributes_captioner import AttributesCaptioner

    return AttributesCaptioner(workdir, dataset, noise=noise, seed=seed)


def clean_caption(text: str) -> str:
    """One line: control characters dropped, whitespace collapsed, stripped."""
    text = "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in text)
    return " ".join(text.split())
