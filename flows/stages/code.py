"""The code part of every stage's cache key: ``StageCode(<entry modules>)``, the ``code_fingerprint`` of the
project source the stage runs (``differ_common.code_fingerprint``). An edit to that source reruns the stage; an edit
to code it does not run leaves it cached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy

from differ_common.code_fingerprint import code_fingerprint


@dataclass
class StageCode(CachePolicy):
    """Prefect cache-policy part: the ``code_fingerprint`` of the stage's entry modules."""

    entries: tuple[str, ...] = ()

    def compute_key(self, task_ctx: Any, inputs: Any, flow_parameters: Any, **kwargs: Any) -> str | None:
        return stage_code_fingerprint(self.entries)


def stage_code_fingerprint(entries: tuple[str, ...]) -> str:
    """``code_fingerprint(entries)``: the one place the stages read it (tests replace it to simulate an edit)."""
    return code_fingerprint(entries)
