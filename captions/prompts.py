"""Caption prompts per perspective (``captions/prompts.yaml``): loading, validation and ``prompt_id``.

Layout: ``{generation: {...}, perspectives: [{name, prompt, max_new_tokens, biometric}, ...]}``. Every one of
the six perspectives must appear exactly once. ``prompt_id`` = sha256[:12] of the prompt text, its
``max_new_tokens`` and the generation settings, so editing one prompt changes only that perspective's id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from differ_common.errors import ConfigError
from differ_common.fingerprint import sha256_json
from differ_common.perspectives import PERSPECTIVES

DEFAULT_PROMPTS = Path(__file__).with_name("prompts.yaml")
TOP_KEYS = ("generation", "perspectives")
PERSPECTIVE_KEYS = ("name", "prompt", "max_new_tokens", "biometric")
DEFAULT_MAX_NEW_TOKENS = 32
# generation settings a prompts file may set (passed to ``generate`` / vLLM SamplingParams); greedy by default
GENERATION_DEFAULTS: dict[str, Any] = {"do_sample": False, "num_beams": 1}
GENERATION_KEYS = (
    "do_sample",
    "num_beams",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "length_penalty",
)


@dataclass(frozen=True)
class PerspectiveSpec:
    """One perspective's question and how to generate its answer."""

    name: str
    index: int
    prompt: str
    max_new_tokens: int
    biometric: bool
    generation: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_id(self) -> str:
        """sha256[:12] of the prompt text + max_new_tokens + generation settings."""
        return prompt_id(self.prompt, self.max_new_tokens, self.generation)

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate`` (greedy unless the file says otherwise)."""
        return {"max_new_tokens": self.max_new_tokens, **self.generation}


def prompt_id(prompt: str, max_new_tokens: int, generation: dict[str, Any]) -> str:
    return sha256_json(
        {"prompt": prompt, "max_new_tokens": int(max_new_tokens), "generation": generation}, 12
    )


def load_prompts(path: str | os.PathLike | None = None) -> dict[str, PerspectiveSpec]:
    """Read and validate a prompts YAML (None = the packaged one); ordered as ``PERSPECTIVES``.

    Raises ConfigError with one line naming the file on any problem.
    """
    import yaml

    src = Path(path) if path is not None else DEFAULT_PROMPTS
    if not src.is_file():
        raise ConfigError(f"{src}: prompts file not found; pass --prompts with an existing YAML file")
    try:
        raw = yaml.safe_load(src.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{src}: not valid YAML ({first})") from exc
    return parse_prompts(raw, str(src))


def parse_prompts(raw: Any, source: str = "prompts") -> dict[str, PerspectiveSpec]:
    """Validate an already-parsed prompts mapping (see ``load_prompts``)."""

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{source}: {msg}")

    if not isinstance(raw, dict):
        raise fail("expected a mapping with keys 'generation' and 'perspectives'")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise fail(f"unknown key(s) {unknown}; allowed: {list(TOP_KEYS)}")
    gen_raw = raw.get("generation") or {}
    if not isinstance(gen_raw, dict):
        raise fail("'generation' must be a mapping of generation settings")
    bad_gen = sorted(set(gen_raw) - set(GENERATION_KEYS))
    if bad_gen:
        raise fail(f"unknown generation setting(s) {bad_gen}; allowed: {list(GENERATION_KEYS)}")
    generation = {**GENERATION_DEFAULTS, **gen_raw}
    items = raw.get("perspectives")
    if not isinstance(items, list) or not items:
        raise fail("'perspectives' must be a non-empty list of {name, prompt, max_new_tokens, biometric}")
    specs: dict[str, PerspectiveSpec] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise fail(f"perspectives[{i}] must be a mapping with keys {list(PERSPECTIVE_KEYS)}")
        name = item.get("name")
        where = f"perspective {name!r}" if name else f"perspectives[{i}]"
        extra = sorted(set(item) - set(PERSPECTIVE_KEYS))
        if extra:
            raise fail(f"{where}: unknown key(s) {extra}; allowed: {list(PERSPECTIVE_KEYS)}")
        if name not in PERSPECTIVES:
            raise fail(f"{where}: unknown perspective name; expected one of {list(PERSPECTIVES)}")
        if name in specs:
            raise fail(f"duplicate perspective {name!r}; list each perspective once")
        prompt = item.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise fail(f"{where}: empty prompt; write the question to ask about the image")
        if "biometric" not in item:
            raise fail(
                f"{where}: missing 'biometric' (true for traits that persist across outfits, else false)"
            )
        if not isinstance(item["biometric"], bool):
            raise fail(f"{where}: 'biometric' must be true or false")
        mnt = item.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        if isinstance(mnt, bool) or not isinstance(mnt, int) or not 1 <= mnt <= 2048:
            raise fail(f"{where}: 'max_new_tokens' must be an integer in 1..2048 (got {mnt!r})")
        specs[name] = PerspectiveSpec(
            name=name,
            index=PERSPECTIVES.index(name),
            prompt=" ".join(prompt.split()),
            max_new_tokens=mnt,
            biometric=item["biometric"],
            generation=dict(generation),
        )
    missing = [p for p in PERSPECTIVES if p not in specs]
    if missing:
        raise fail(f"missing perspective(s) {missing}; every one of {list(PERSPECTIVES)} needs a prompt")
    return {p: specs[p] for p in PERSPECTIVES}
