"""``vllm:<local dir>``: the same VLMs served by vLLM (optional extra, GPU), with prefix caching.

The prompt is rendered by the model's own processor chat template with the image before the question, so the
image tokens form a prefix that ``enable_prefix_caching`` reuses across the perspectives of an image. vLLM is
imported only when this backend is used.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captions.backends import check_model_dir, clean_caption, model_captioner_name, model_dir_fingerprint
from differ_common.errors import ConfigError, DifferError

if TYPE_CHECKING:
    from PIL import Image

    from captions.prompts import PerspectiveSpec

_CACHE: dict[tuple, tuple[Any, Any]] = {}
_LOCK = threading.Lock()


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
        if not images:
            return []
        from vllm import SamplingParams

        processor, llm = self.load()
        conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": spec.prompt}]}]
        text = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        gen = spec.generation
        params = SamplingParams(
            max_tokens=spec.max_new_tokens,
            temperature=float(gen.get("temperature", 1.0)) if gen.get("do_sample") else 0.0,
            top_p=float(gen.get("top_p", 1.0)) if gen.get("do_sample") else 1.0,
            repetition_penalty=float(gen.get("repetition_penalty", 1.0)),
        )
        requests = [{"prompt": text, "multi_modal_data": {"image": im}} for im in images]
        outputs = llm.generate(requests, params, use_tqdm=False)
        return [clean_caption(o.outputs[0].text) for o in outputs]
