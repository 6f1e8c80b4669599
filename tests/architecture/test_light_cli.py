"""`differ --help` stays fast: building the CLI imports no model library and no Prefect (the reason the command
modules and the task bodies import their packages inside functions; docs/design.md §2, "Imports")."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "prefect", "open_clip", "timm", "accelerate", "sklearn")


def test_building_the_cli_imports_no_heavy_library():
    code = (
        "import sys, flows.cli; flows.cli.build_parser(); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`differ --help` imports {out.stdout.strip()}"
