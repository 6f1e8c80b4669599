"""``vllm:<local dir>``: the same VLMs served by vLLM (optional extra, GPU), with prefix caching.

The prompt is rendered by the model's own processor chat template with the image before the question, so the
image tokens form a prefix that ``enable_prefix_caching`` reuses across the perspectives of an image. The writer
calls ``caption_chunk``: one ``LLM.generate`` over every image × pending perspective of a chunk (hundreds of
requests, a picture's perspectives next to each other), so continuous batching and the prefix cache do their
work; a process lock keeps two calls off one engine. Engine arguments (``tensor_parallel_size``,
``gpu_memory_utilization`` ...) pass through; data parallel = one worker process per GPU. vLLM is imported only
when this backend is used.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captions.backends import check_model_dir, clean_caption, model_captioner_name, model_dir_fingerprint
from captions.vlm_families import check_vlm_family
from differ_common.errors import ConfigError, DifferError

if TYPE_CHECKING:
    from PIL import Image

    from captions.prompts import PerspectiveSpec

_CACHE: dict[tuple, tuple[Any, Any]] = {}
_LOCK = threading.Lock()
_GENERATE_LOCK = threading.Lock()  # the offline engine is not safe for concurrent generate calls


def sampling_kwargs(spec: PerspectiveSpec) -> dict[str, Any]:
    """``SamplingParams`` arguments of a perspective: greedy unless its generation settings sample."""
    gen = spec.generation
    return dict(
        max_tokens=spec.max_new_tokens,
        temperature=float(gen.get("temperature", 1.0)) if gen.get("do_sample") else 0.0,
        top_p=float(gen.get("top_p", 1.0)) if gen.get("do_sample") else 1.0,
        repetition_penalty=float(gen.get("repetition_penalty", 1.0)),
    )


def render_prompt(processor: Any, prompt: str) -> str:
    """The text vLLM receives for one perspective: the model's own chat template with the image placeholder
    before the question. vLLM tokenizes it with the tokenizer's special tokens, so a BOS the template writes
    itself is dropped here (else the prompt would start with two)."""
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    tok = getattr(processor, "tokenizer", processor)
    bos = tok.bos_token
    if bos and text.startswith(bos) and tok("x").input_ids[:1] == [tok.bos_token_id]:
        text = text[len(bos) :]
    return text


def build_requests(
    processor: Any,
    images: list[Any],
    specs: dict[str, PerspectiveSpec],
    image_ids: list[str],
    wanted: dict[str, list[str]],
) -> list[tuple[str, int, dict[str, Any]]]:
    """``(perspective, image index, request)`` image-major: each image's pending perspectives are adjacent, and
    every prompt starts with the image, so they share the image prefix in the cache."""
    texts = {p: render_prompt(processor, spec.prompt) for p, spec in specs.items()}
    sets = {p: set(v) for p, v in wanted.items()}
    out = []
    for k, (img_id, im) in enumerate(zip(image_ids, images, strict=True)):
        for p in specs:
            if img_id in sets.get(p, ()):
                out.append((p, k, {"prompt": texts[p], "multi_modal_data": {"image": im}}))
    return out


class VLLMCaptioner:
    """Greedy captioning through ``vllm.LLM.generate`` with multi-modal prompts."""

    needs_images = True
    min_batch_size = 1

    def __init__(self, model_dir: str, trust_remote_code: bool = False, **engine_kwargs: Any) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise DifferError(
                f'captioner vllm:{model_dir} needs vLLM: pip install -e ".[vllm]" (GPU), or use hf:{model_dir}'
            )
        self.path: Path = check_model_dir(f"vllm:{model_dir}", model_dir, kind="vlm")
        self.family = check_vlm_family(self.path, f"vllm:{model_dir}", trust_remote_code)
        self.trust_remote_code = trust_remote_code
        self.engine_kwargs = engine_kwargs
        self.name = model_captioner_name("vllm", self.path)
        self.fingerprint = model_dir_fingerprint(self.path)

    def load(self) -> tuple[Any, Any]:
        key = (str(self.path.resolve()), self.trust_remote_code)
        with _LOCK:
            if key not in _CACHE:
                from transformers import AutoProcessor
                from vllm import LLM

                _CACHE.clear()
                try:
                    processor = AutoProcessor.from_pretrained(
                        self.path, local_files_only=True, trust_remote_code=self.trust_remote_code
                    )
                except (OSError, ValueError) as exc:
                    raise ConfigError(
                        f"{self.path}: cannot load the processor: {str(exc).splitlines()[0]}"
                    ) from exc
                llm = LLM(
                    model=str(self.path),
                    trust_remote_code=self.trust_remote_code,
                    enable_prefix_caching=True,
                    limit_mm_per_prompt={"image": 1},
                    **self.engine_kwargs,
                )
                _CACHE[key] = (processor, llm)
            return _CACHE[key]

    def caption(
        self, images: list[Image.Image] | None, spec: PerspectiveSpec, image_ids: list[str] | None = None
    ) -> list[str]:
        """One caption per image for one perspective (one ``generate`` call)."""
        if not images:
            return []
        ids = list(image_ids) if image_ids else [str(k) for k in range(len(images))]
        out = self.caption_chunk(images, {spec.name: spec}, ids, {spec.name: ids})
        return out[spec.name]

    def caption_chunk(
        self,
        images: list[Image.Image] | None,
        specs: dict[str, PerspectiveSpec],
        image_ids: list[str],
        wanted: dict[str, list[str]],
        batch_size: int | None = None,
        on_batch: Callable[[], Any] | None = None,
    ) -> dict[str, list[str]]:
        """Captions of ``wanted[p]`` (in that order) for every perspective, from one ``generate`` call
        (``batch_size`` and ``on_batch`` are unused: the engine batches continuously)."""
        from vllm import SamplingParams

        processor, llm = self.load()
        reqs = build_requests(processor, images or [], specs, image_ids, wanted)
        params = {p: SamplingParams(**sampling_kwargs(spec)) for p, spec in specs.items()}
        if not reqs:
            return {p: [] for p in specs}
        with _GENERATE_LOCK:
            outputs = llm.generate([r for _, _, r in reqs], [params[p] for p, _, _ in reqs], use_tqdm=False)
        got: dict[tuple[str, str], str] = {}
        for (p, k, _), o in zip(reqs, outputs, strict=True):
            got[(p, image_ids[k])] = clean_caption(o.outputs[0].text)
        return {p: [got[(p, i)] for i in wanted.get(p, [])] for p in specs}
