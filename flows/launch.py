"""Launch multi-process training with `accelerate launch`, streaming the child's log lines."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from differ_common.errors import DifferError


def accelerate_command(
    config_file: str | Path,
    processes: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
    cpu: bool | None = None,
    entry_args: tuple[str, ...] = (),
) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment for ``accelerate launch -m differ_core.train_entry``.

    On CPU ``accelerate launch --cpu`` silently runs one process, so CPU runs use ``--multi_gpu`` with
    ``ACCELERATE_USE_CPU=1`` in the children (gloo backend). ``entry_args`` follow ``--config`` (e.g.
    ``--resume-anyway``).
    """
    import torch

    if cpu is None:
        cpu = not torch.cuda.is_available()
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    env: dict[str, str] = {}
    total = processes * num_machines
    if total > 1:
        cmd += ["--multi_gpu", "--num_processes", str(total), "--num_machines", str(num_machines)]
        if num_machines > 1:
            if not main_process_ip:
                raise DifferError(
                    "multi-machine training needs --main-process-ip (the rank-0 machine's address)"
                )
            cmd += ["--machine_rank", str(machine_rank), "--main_process_ip", main_process_ip]
        if main_process_port:
            cmd += ["--main_process_port", str(main_process_port)]
    else:
        cmd += ["--num_processes", "1"]
    if cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    else:
        cmd += ["--mixed_precision", "no"]  # the training loop picks bf16/fp16 itself from the config
    cmd += ["--dynamo_backend", "no", "-m", "differ_core.train_entry", "--config", str(config_file)]
    cmd += list(entry_args)
    return cmd, env


def run_streaming(
    cmd: list[str],
    env: dict[str, str] | None = None,
    log: Callable[[str], None] = print,
    tail: int = 30,
    cwd: str | Path | None = None,
) -> None:
    """Run ``cmd``, passing each output line to ``log``; raise DifferError with the last lines on failure."""
    full_env = {**os.environ, **(env or {})}
    last: collections.deque[str] = collections.deque(maxlen=tail)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=full_env,
        cwd=cwd,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        last.append(line)
        log(line)
    rc = proc.wait()
    if rc != 0:
        lines = "\n".join(last)
        raise DifferError(f"training launcher exited with code {rc}; last lines:\n{lines}")


def launch_training(
    train_cfg: dict,
    run_dir: str | Path,
    launch: dict,
    log: Callable[[str], None] = print,
    entry_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> None:
    """Train ``train_cfg`` (a ``TrainConfig`` as a plain dict) over ``accelerate launch``: its config written to
    ``<run_dir>/launch_config.yaml``, ``launch`` the ``accelerate_command`` options (processes, num_machines,
    machine_rank, main_process_ip, main_process_port), every child line passed to ``log``. `differ train` and the
    train stage both launch through here."""
    import yaml

    from differ_common.io import write_text_atomic

    cfg_file = Path(run_dir) / "launch_config.yaml"
    write_text_atomic(cfg_file, yaml.safe_dump(train_cfg, sort_keys=False))
    cmd, launch_env = accelerate_command(cfg_file, entry_args=entry_args, **launch)
    log("launching: " + " ".join(cmd))
    run_streaming(cmd, env={**launch_env, **(env or {})}, log=log)
