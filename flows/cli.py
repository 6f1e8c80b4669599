"""The ``differ`` command line (docs/design.md §4)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from flows.commands import COMMANDS


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--workdir",
        default=argparse.SUPPRESS,
        help="workspace folder (env DIFFER_WORKDIR, default ./differ-work)",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="differ", description=__doc__, parents=[_common()])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(f"flows.commands.{module}")
        except ImportError as exc:
            raise ImportError(
                f"differ {name}: its module flows.commands.{module} cannot be imported ({exc}); "
                "fix the module or its entry in flows.commands.COMMANDS"
            ) from exc
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[_common()])
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


# options that count something: a value below 1 is refused in one line before the command starts
COUNT_OPTIONS = ("batch_size", "caption_batch_size", "chunk_size", "workers", "threads", "processes", "num_machines",
                 "dask_workers", "every_k", "limit", "k1", "k2")  # fmt: skip


def check_counts(args: argparse.Namespace) -> None:
    """A ConfigError naming the first count option given a value below 1 (``--batch-size -1``)."""
    from differ_common.errors import ConfigError

    for name in COUNT_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be >= 1 (got {value}); give a whole number of at least 1")


def main(argv: list[str] | None = None) -> int:
    from differ_common.errors import DifferError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if not hasattr(args, "workdir"):
        args.workdir = None
    args.workdir_given = args.workdir  # rule 1 of flows.run_config only when given on the command line
    from differ_common.workspace import resolve_workdir

    args.workdir = resolve_workdir(args.workdir)
    os.environ["DIFFER_WORKDIR"] = str(args.workdir)
    # the command line, handed down to the reproducibility record (differ_core.reproducibility.COMMAND_ENV)
    previous = os.environ.get("DIFFER_COMMAND")
    os.environ["DIFFER_COMMAND"] = json.dumps(["differ", *(sys.argv[1:] if argv is None else argv)])
    try:
        check_counts(args)
        return int(args._run(args) or 0)
    except DifferError as exc:
        print(f"differ {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"differ {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is None:
            os.environ.pop("DIFFER_COMMAND", None)
        else:
            os.environ["DIFFER_COMMAND"] = previous


if __name__ == "__main__":
    sys.exit(main())
