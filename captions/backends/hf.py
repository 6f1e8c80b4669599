"""``hf:<local dir>``: a transformers image-text-to-text model (LLaVA-1.5/NeXT/OneVision, Qwen2-VL, ...).

The processor's chat template puts the image before the question; a batch holds many images and one prompt,
left-padded, decoded greedily under ``torch.inference_mode``; only the new tokens are decoded. bf16 (fp16 where
bf16 is unsupported) on a GPU, fp32 on the CPU. A GPU out-of-memory halves the batch and retries; the smaller
size is kept for the loaded model (once per worker process and device). ``generate`` never runs twice at once on
one model: threads of one process on one device share its model and take turns (``captions.device_cache``); a
process keeps one model per device.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captions.backends import check_model_dir, clean_caption, model_captioner_name, model_dir_fingerprint
from captions.device_cache import device_lock
from captions.vlm_families import check_vlm_family
from differ_common.device import pick_device
from differ_common.errors import ConfigError, DifferError

if TYPE_CHECKING:
    from PIL import Image

    from captions.prompts import PerspectiveSpec

# (path, device, dtype, trust) -> (processor, model); one entry per device, shared by the threads using it
_CACHE: dict[tuple, tuple[Any, Any]] = {}
_CACHE_LOCK = threading.Lock()
_MAX_BATCH: dict[tuple, int] = {}  # model key -> batch size after an out-of-memory (0 = no limit)


def pick_dtype(device: str):
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError  # torch < 2.5: cuda only
    return isinstance(exc, oom) or "out of memory" in str(exc).lower()


class HFCaptioner:
    """Batched greedy captioning with a local transformers VLM."""

    needs_images = True
    min_batch_size = 1

    def __init__(
        self,
        model_dir: str,
        trust_remote_code: bool = False,
        device: str | None = None,
        dtype: str | None = None,
        reuse_prefix: bool = True,
        batch_size: int = 8,
    ) -> None:
        self.path: Path = check_model_dir(f"hf:{model_dir}", model_dir, kind="vlm")
        self.family = check_vlm_family(self.path, f"hf:{model_dir}", trust_remote_code)
        self.trust_remote_code = trust_remote_code
        self._device = device
        self._dtype = dtype  # "bfloat16" | "float16" | "float32"; None = bf16/fp16 on GPU, fp32 on CPU
        self.reuse_prefix = reuse_prefix  # caption_chunk: compute an image's shared prompt prefix once
        self.batch_size = batch_size  # caption_chunk's image batch when the writer gives none
        self.name = model_captioner_name("hf", self.path)
        self.fingerprint = model_dir_fingerprint(self.path)

    # ------------------------------------------------------------------ loading
    def _key(self) -> tuple:
        import torch

        device = pick_device(self._device)
        dtype = getattr(torch, self._dtype) if self._dtype else pick_dtype(device)
        return (str(self.path.resolve()), device, str(dtype), self.trust_remote_code)

    @property
    def max_batch(self) -> int:
        """The batch size limit learnt from an out-of-memory for this model in this process (0 = none)."""
        return _MAX_BATCH.get(self._key(), 0)

    @max_batch.setter
    def max_batch(self, value: int) -> None:
        _MAX_BATCH[self._key()] = int(value)

    def load(self) -> tuple[Any, Any]:
        """The (processor, model) pair, loaded once per process and device from local files only."""
        key = self._key()
        device = key[1]
        with device_lock(device):  # one load per device at a time; other devices keep captioning
            with _CACHE_LOCK:
                if key in _CACHE:
                    return _CACHE[key]
                for other in [k for k in _CACHE if k[1] == device]:  # free the device for the new model
                    del _CACHE[other]
            processor, model = self._load_files()
            model = model.to(device).eval()
            with _CACHE_LOCK:
                _CACHE[key] = (processor, model)
            return processor, model

    def _load_files(self) -> tuple[Any, Any]:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        kw = {"local_files_only": True, "trust_remote_code": self.trust_remote_code}
        try:
            processor = AutoProcessor.from_pretrained(self.path, **kw)
            import torch

            model = AutoModelForImageTextToText.from_pretrained(
                self.path, dtype=getattr(torch, self._key()[2].removeprefix("torch.")), **kw
            )
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = "" if self.trust_remote_code else " (custom model code needs --trust-remote-code)"
            raise ConfigError(
                f"{self.path}: cannot load as an image-text-to-text model: {first}{hint}"
            ) from exc
        tok = getattr(processor, "tokenizer", None)
        if tok is None or getattr(processor, "chat_template", None) is None:
            raise ConfigError(f"{self.path}: the processor has no tokenizer or chat template; not a chat VLM")
        tok.padding_side = "left"  # generation appends on the right: pad on the left
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return processor, model

    # ------------------------------------------------------------------ generation
    def caption(
        self, images: list[Image.Image] | None, spec: PerspectiveSpec, image_ids: list[str] | None = None
    ) -> list[str]:
        """One caption per image for ``spec``'s prompt.

        A GPU out-of-memory halves the batch, retries, and keeps the smaller size for the following calls.
        """
        if not images:
            return []
        if self.max_batch and len(images) > self.max_batch:
            step = self.max_batch
            out: list[str] = []
            for s in range(0, len(images), step):
                out += self.caption(images[s : s + step], spec)
            return out
        try:
            with device_lock(self._key()[1]):  # one generate at a time on this device's model
                return self._generate(images, spec)
        except Exception as exc:
            if not _is_oom(exc):
                raise
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(images) == 1:
                raise DifferError(
                    f"{self.path}: out of memory on a single image; lower max_new_tokens or use a smaller model"
                ) from exc
            self.max_batch = len(images) // 2
            return self.caption(images, spec)

    def _encode(self, processor: Any, images: list[Image.Image], prompt: str) -> Any:
        """The processor's left-padded batch: one conversation per image, the image before ``prompt``."""
        conversations = [
            [{"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": prompt}]}]
            for im in images
        ]
        return processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )

    def _generate(self, images: list[Image.Image], spec: PerspectiveSpec) -> list[str]:
        import torch

        processor, model = self.load()
        inputs = self._encode(processor, images, spec.prompt).to(model.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        tok = processor.tokenizer
        with torch.inference_mode():
            out = model.generate(**inputs, **spec.generate_kwargs(), pad_token_id=tok.pad_token_id)
        new = out[:, inputs["input_ids"].shape[1] :]
        return [clean_caption(t) for t in processor.batch_decode(new, skip_special_tokens=True)]

    # ------------------------------------------------------------------ one image prefix, many perspectives
    def caption_chunk(
        self,
        images: list[Image.Image] | None,
        specs: dict[str, PerspectiveSpec],
        image_ids: list[str],
        wanted: dict[str, list[str]],
        batch_size: int | None = None,
        on_batch: Callable[[], Any] | None = None,
    ) -> dict[str, list[str]]:
        """Captions of ``wanted[p]`` (in that order) for every perspective, image batch by image batch
        (``on_batch`` is called after each: the writer renews its claims there).

        Within a batch the shared image prefix is computed once (``captions.backends.prefix``) when the family
        allows it and ``reuse_prefix`` is on; otherwise each perspective runs ``caption`` (recomputed).
        """
        bs = max(1, batch_size or self.batch_size)
        if self.max_batch:
            bs = min(bs, self.max_batch)
        ims = list(images or [])
        sets = {p: set(v) for p, v in wanted.items()}
        got: dict[tuple[str, str], str] = {}
        for s in range(0, len(ims), bs):
            ids = image_ids[s : s + bs]
            rows = {p: [k for k, i in enumerate(ids) if i in sets.get(p, ())] for p in specs}
            rows = {p: r for p, r in rows.items() if r}
            texts = self._chunk_batch(ims[s : s + bs], {p: specs[p] for p in rows}, rows)
            for p, r in rows.items():
                for k, text in zip(r, texts[p], strict=True):
                    got[(p, ids[k])] = text
            if on_batch is not None:
                on_batch()
        return {p: [got[(p, i)] for i in wanted.get(p, [])] for p in specs}

    def _chunk_batch(
        self, images: list[Image.Image], specs: dict[str, PerspectiveSpec], rows: dict[str, list[int]]
    ) -> dict[str, list[str]]:
        """One image batch: the shared prefix once, or each perspective recomputed; an OOM halves the batch."""
        try:
            with device_lock(self._key()[1]):
                shared = self._prefix_batch(images, specs, rows) if self.reuse_prefix else None
        except Exception as exc:
            if not _is_oom(exc) or len(images) == 1:
                raise
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(images) // 2
            self.max_batch = half
            out: dict[str, list[str]] = {p: [] for p in specs}
            for lo, hi in ((0, half), (half, len(images))):
                sub = {p: [k - lo for k in r if lo <= k < hi] for p, r in rows.items()}
                sub = {p: r for p, r in sub.items() if r}
                part = self._chunk_batch(images[lo:hi], {p: specs[p] for p in sub}, sub)
                for p in sub:
                    out[p] += part[p]
            return out
        if shared is not None:
            return shared
        return {p: self.caption([images[k] for k in r], specs[p]) for p, r in rows.items()}

    def _prefix_batch(
        self, images: list[Image.Image], specs: dict[str, PerspectiveSpec], rows: dict[str, list[int]]
    ) -> dict[str, list[str]] | None:
        """Captions from one shared-prefix pass, or None when this family or these prompts do not share it."""
        from captions.backends.prefix import PREFIX_FAMILIES, caption_with_prefix, plan_prefix

        processor, model = self.load()
        if len(specs) < 2 or getattr(model.config, "model_type", "") not in PREFIX_FAMILIES:
            return None
        encodings = {p: self._encode(processor, images, spec.prompt) for p, spec in specs.items()}
        plan = plan_prefix(encodings, image_token_ids(model.config, processor))
        if plan is None:
            return None
        tok = processor.tokenizer
        kwargs = {p: spec.generate_kwargs() for p, spec in specs.items()}
        new = caption_with_prefix(model, plan, rows, kwargs, tok.pad_token_id)
        return {
            p: [clean_caption(t) for t in processor.batch_decode(ids, skip_special_tokens=True)]
            for p, ids in new.items()
        }


def image_token_ids(config: Any, processor: Any) -> set[int]:
    """The ids of the tokens a family's processor expands the image into (config and processor agree)."""
    out = set()
    for owner, names in (
        (config, ("image_token_id", "image_token_index")),
        (processor, ("image_token_id",)),
    ):
        for name in names:
            value = getattr(owner, name, None)
            if isinstance(value, int) and value >= 0:
                out.add(value)
    return out
