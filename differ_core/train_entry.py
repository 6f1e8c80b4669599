"""Entry point for ``accelerate launch -m differ_core.train_entry --config F.yaml [key=value ...]``.

Every process runs this; :func:`differ_core.training.train` finds its rank from accelerate's environment.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse ``--config`` and overrides, train; a DifferError prints one line and exits 2."""
    p = argparse.ArgumentParser(prog="differ_core.train_entry", description=__doc__)
    p.add_argument("--config", required=True, help="training YAML (base: overlays allowed)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4")
    p.add_argument(
        "--resume-anyway", action="store_true", help="continue a run folder whose config.yaml differs"
    )
    args = p.parse_args(argv)
    from differ_common.errors import DifferError
    from differ_core.config import load_config

    try:
        from differ_core.training import train

        train(load_config(args.config, args.overrides), resume_anyway=args.resume_anyway)
    except DifferError as exc:
        print(f"differ train: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
