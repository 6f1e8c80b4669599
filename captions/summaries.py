"""Per-identity biometric summaries (``differ summarize``) from the current biometric captions.

``extractive`` (default, deterministic): the identity's most representative caption, i.e. the one whose
word set overlaps most (mean Jaccard) with the identity's other captions; ties go to the more frequent
caption, then to the alphabetically first. ``hf:<dir>``: a local causal LM asked to condense the identity's
most representative captions into one sentence (greedy, batched across identities with left padding).
Identities whose caption set and summarizer are unchanged keep their previous summary.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from differ_common.errors import ConfigError, DataError
from differ_common.fingerprint import sha256_json
from differ_common.perspectives import BIOMETRIC
from differ_common.workspace import Workspace

SUMMARY_COLUMNS = (
    "pid",
    "raw_pid",
    "perspective",
    "summary",
    "n_captions",
    "summarizer",
    "source_fingerprint",
    "captions_sha",
    "flag",
)
SUMMARY_PROMPT = (
    "These are descriptions of the same person in different photos:\n{captions}\n"
    "Summarize in one short factual sentence the traits that persist across outfits: gender presentation, "
    "age range, height, build and skin tone. Do not mention clothing."
)
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def _tokens(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def rank_captions(captions: list[str]) -> list[str]:
    """Distinct captions, most representative first (mean Jaccard overlap with all captions, weighted by count)."""
    import numpy as np

    counts = Counter(captions)
    distinct = sorted(counts)
    toks = [_tokens(c) for c in distinct]
    vocab = sorted(set().union(*toks)) if toks else []
    if not vocab:
        return sorted(distinct, key=lambda c: (-counts[c], c))
    index = {w: j for j, w in enumerate(vocab)}
    m = np.zeros((len(distinct), len(vocab)), dtype=np.float32)
    for i, t in enumerate(toks):
        m[i, [index[w] for w in t]] = 1.0
    inter = m @ m.T
    sizes = m.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    w = np.array([counts[c] for c in distinct], dtype=np.float64)
    score = (jac.astype(np.float64) * w[None, :]).sum(1) / w.sum()
    order = sorted(
        range(len(distinct)), key=lambda i: (-round(float(score[i]), 9), -counts[distinct[i]], distinct[i])
    )
    return [distinct[i] for i in order]


def extractive_summary(captions: list[str]) -> str:
    """The most representative caption of an identity (deterministic)."""
    ranked = rank_captions(captions)
    return ranked[0] if ranked else ""


class HFSummarizer:
    """``hf:<dir>``: a local causal LM (``AutoModelForCausalLM``) that writes one sentence per identity."""

    def __init__(
        self, model_dir: str, max_new_tokens: int = 48, batch_size: int = 8, device: str | None = None
    ):
        from captions.backends import check_model_dir, model_dir_fingerprint

        self.path = check_model_dir(f"hf:{model_dir}", model_dir, kind="lm")
        self.name = f"hf:{self.path.resolve().name}"
        self.fingerprint = model_dir_fingerprint(self.path)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.max_captions = 32  # the most representative ones; the rest add length, not information
        self._device = device
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from captions.backends.hf import pick_dtype
            from differ_common.device import pick_device

            device = pick_device(self._device)
            try:
                tok = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(
                    self.path, local_files_only=True, dtype=pick_dtype(device)
                )
            except (OSError, ValueError, KeyError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"{self.path}: cannot load as a causal language model: {first}") from exc
            tok.padding_side = "left"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            self._loaded = (tok, model.to(device).eval())
        return self._loaded

    def prompt_budget(self) -> int:
        tok, model = self._load()
        max_pos = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        return max(32, min(1536, max_pos - self.max_new_tokens - 16))

    def render(self, captions: list[str]) -> str:
        """The chat prompt for one identity, with as many representative captions as fit the context."""
        tok, _ = self._load()
        budget = self.prompt_budget()
        chosen: list[str] = []
        text = ""
        for c in rank_captions(captions)[: self.max_captions]:
            trial = self._chat(tok, chosen + [c])
            if chosen and len(tok(trial, add_special_tokens=False)["input_ids"]) > budget:
                break
            chosen.append(c)
            text = trial
        return text

    @staticmethod
    def _chat(tok: Any, captions: list[str]) -> str:
        body = SUMMARY_PROMPT.format(captions="\n".join(f"- {c}" for c in captions))
        msgs = [{"role": "user", "content": body}]
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return body + "\nSummary:"

    def summarize(self, groups: list[list[str]]) -> list[str]:
        import torch

        from captions.backends import clean_caption

        tok, model = self._load()
        out: list[str] = []
        for start in range(0, len(groups), self.batch_size):
            texts = [self.render(g) for g in groups[start : start + self.batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.inference_mode():
                gen = model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=tok.pad_token_id,
                )
            new = gen[:, enc["input_ids"].shape[1] :]
            out.extend(clean_caption(t) for t in tok.batch_decode(new, skip_special_tokens=True))
        return out


def summarize_dataset(
    workdir: str | os.PathLike | None,
    dataset: str,
    summarizer: str = "extractive",
    device: str | None = None,
    lock_timeout: float = -1,
    max_new_tokens: int = 48,
) -> Path:
    """Write ``W/captions/<ds>/_summaries.parquet``: one row per training identity with biometric captions.

    Columns: pid (train pid), raw_pid, perspective ("biometrics"), summary, n_captions, summarizer,
    source_fingerprint (the biometric captions + summarizer it came from), captions_sha (this identity's
    caption set), flag ("" or "empty-fallback": the LM gave nothing, the extractive summary is used).
    """
    import pandas as pd

    from captions.table import read_current_captions, read_current_json
    from data_manifests.schema import load_manifest
    from differ_common.io import stage_lock, write_parquet_atomic

    ws = Workspace.at(workdir)
    kind, _, loc = summarizer.partition(":")
    if kind == "extractive" and not loc:
        engine: HFSummarizer | None = None
        name, fp = "extractive", "extractive-v1"
    elif kind == "hf" and loc:
        engine = HFSummarizer(loc, max_new_tokens=max_new_tokens, device=device)
        name, fp = engine.name, engine.fingerprint
    else:
        raise ConfigError(f"unknown summarizer {summarizer!r}; use extractive or hf:<local causal LM dir>")
    current = read_current_json(ws.root, dataset)
    if BIOMETRIC not in current:
        raise DataError(
            f"{ws.captions_current(dataset)}: no current biometrics captions; run "
            f"`differ caption --dataset {dataset} --perspectives {BIOMETRIC}` first"
        )
    caps = read_current_captions(ws.root, dataset, [BIOMETRIC], split="train")
    manifest = load_manifest(ws.root, dataset)
    train = manifest.loc[manifest["split"] == "train", ["image_id", "pid", "raw_pid"]]
    caps = caps.merge(train, on="image_id", how="inner")
    if caps.empty:
        raise DataError(
            f"{ws.captions_current(dataset)}: no biometrics captions for training images; run "
            f"`differ caption --dataset {dataset} --perspectives {BIOMETRIC}` first"
        )
    source_fp = sha256_json([current[BIOMETRIC]["fingerprint"], name, fp], 16)
    out_path = ws.summaries(dataset)
    with stage_lock(ws.locks() / f"summaries-{dataset}.lock", lock_timeout, f"summarizing {dataset}"):
        previous: dict[tuple[int, str], tuple[str, str]] = {}
        if out_path.exists():
            old = pd.read_parquet(out_path)
            if {"captions_sha", "summarizer", "summary", "flag"} <= set(old.columns):
                for r in old.itertuples(index=False):
                    previous[(int(r.pid), r.captions_sha)] = (r.summarizer, r.summary, r.flag)
        groups = []
        for (pid, raw_pid), g in caps.groupby(["pid", "raw_pid"], sort=True):
            texts = g["caption"].astype(str).tolist()
            groups.append((int(pid), int(raw_pid), texts, sha256_json([fp, sorted(texts)], 16)))
        summaries: dict[int, tuple[str, str]] = {}
        todo = []
        for pid, _, texts, sha in groups:
            prev = previous.get((pid, sha))
            if prev is not None and prev[0] == name:
                summaries[pid] = (prev[1], prev[2])
            elif engine is None:
                summaries[pid] = (extractive_summary(texts), "")
            else:
                todo.append((pid, texts))
        if engine is not None and todo:
            for (pid, texts), text in zip(todo, engine.summarize([t for _, t in todo]), strict=True):
                summaries[pid] = (text, "") if text else (extractive_summary(texts), "empty-fallback")
        rows = [
            {
                "pid": pid,
                "raw_pid": raw_pid,
                "perspective": BIOMETRIC,
                "summary": summaries[pid][0],
                "n_captions": len(texts),
                "summarizer": name,
                "source_fingerprint": source_fp,
                "captions_sha": sha,
                "flag": summaries[pid][1],
            }
            for pid, raw_pid, texts, sha in groups
        ]
        df = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
        df = df.astype({"pid": "int64", "raw_pid": "int64", "n_captions": "int64"})
        write_parquet_atomic(df, out_path)
    return out_path
