"""Progress of long stages as lines in the Prefect run log (visible in the UI while a task runs)."""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any


class ProgressLog:
    """A ``progress(fraction)`` callback that logs ``<label>: 40% (12 s)`` at every ``step`` percent."""

    def __init__(self, label: str, log: Callable[[str], None], step: float = 10.0) -> None:
        self.label, self.log, self.step = label, log, step
        self._next = 0.0
        self._t0 = time.perf_counter()

    def __call__(self, fraction: float) -> None:
        pct = 100.0 * max(0.0, min(1.0, float(fraction)))
        if pct + 1e-9 >= self._next:
            self.log(f"{self.label}: {pct:.0f}% ({time.perf_counter() - self._t0:.0f} s)")
            self._next = (pct // self.step + 1) * self.step


def format_train_row(row: dict[str, str]) -> str:
    """One ``train_log.csv`` row as a log line: step, epoch, then the loss terms and throughput."""
    shown = [f"step {row.get('step', '?')}", f"epoch {row.get('epoch', '?')}"]
    for k, v in row.items():
        if k.startswith("loss") or k in ("lr", "images_per_s"):
            try:
                shown.append(f"{k} {float(v):.4g}")
            except (TypeError, ValueError):
                continue
    return "train: " + ", ".join(shown)


class TrainLogTail:
    """While in use, logs the newest row of a run's ``train_log.csv`` every ``every_s`` seconds (from a thread).

    The trainer appends a row every ``run.log_every`` steps and at each epoch's end; this turns them into run-log
    lines without touching the training loop. A final poll on exit logs the last row.
    """

    def __init__(self, csv_path: str | Path, log: Callable[[str], None], every_s: float = 30.0) -> None:
        self.path = Path(csv_path)
        self.log = log
        self.every_s = every_s
        self._last_step: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="differ-train-log", daemon=True)

    def poll(self) -> None:
        """Log the newest row if it is new; an absent or half-written file is skipped."""
        try:
            with open(self.path, newline="") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, csv.Error):
            return
        if rows and rows[-1].get("step") != self._last_step:
            self._last_step = rows[-1].get("step")
            self.log(format_train_row(rows[-1]))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.poll()

    def __enter__(self) -> TrainLogTail:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Any:
        self._stop.set()
        self._thread.join()
        self.poll()
        return None
