"""`prefect deployment run differ-pipeline/synthcc-tiny` against a real local Prefect server.

Starts `prefect server start` on a free port, serves the deployments with `differ serve`, runs the tiny
pipeline deployment from Prefect's own CLI, waits for Completed, stops `differ serve` with SIGTERM, then reads the
caption tables with pandas.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, procs=()) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: a helper process exited with {p.returncode}")
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_deployment_run_against_local_server(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    work = tmp_path / "work"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "DIFFER_WORKDIR": str(work),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=open(logs / "server.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    served = None
    try:
        _wait(lambda: _healthy(api), 120, "the Prefect server", [server])
        served = subprocess.Popen(
            [str(BIN / "differ"), "serve"],
            env=env,
            cwd=REPO,
            stdout=open(logs / "serve.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def registered() -> bool:
            r = subprocess.run(
                [str(BIN / "prefect"), "deployment", "inspect", "differ-pipeline/synthcc-tiny"],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            return r.returncode == 0

        _wait(registered, 120, "the served deployments", [served])
        run = subprocess.run(
            [
                str(BIN / "prefect"),
                "deployment",
                "run",
                "differ-pipeline/synthcc-tiny",
                "--watch",
                "--watch-timeout",
                "600",
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=660,
        )
        out = run.stdout + run.stderr
        assert run.returncode == 0 and "Completed" in out, out + (logs / "serve.log").read_text()[-4000:]
        served.send_signal(signal.SIGTERM)  # `differ serve` stops on SIGTERM (issue 28: it used to hang)
        assert served.wait(timeout=60) == 0, (logs / "serve.log").read_text()[-4000:]
    finally:
        if served is not None:
            _stop(served)
        _stop(server)
    caps = pd.read_parquet(work / "captions" / "synthcc")
    assert {"image_id", "perspective", "prompt_id", "caption", "captioner"} <= set(caps.columns)
    assert caps["perspective"].nunique() == 6 and caps["caption"].str.len().gt(0).all()
    assert list((work / "runs").glob("*/metrics.json"))
