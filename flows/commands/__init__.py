"""One module per ``differ`` sub-command: ``add_arguments(parser)`` and ``run(args) -> int``.

Modules import only argparse-level things and the light registries (their names fill the help texts; `differ
--help` takes ~0.65 s) at import time; heavy imports (torch, models) happen inside ``run``.
"""

# command name -> module under flows.commands; help text
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "the whole pipeline on SynthCC with the embedded defaults"),
    "pretrain": (
        "pretrain",
        "(re)train a pre-trained start on synthetic people (SynthCC's EVA02-CLIP stand-in)",
    ),
    "manifest": (
        "manifest",
        "write the manifest of a dataset (ltcc, prcc, celeb-light, ccvid, custom, synthcc)",
    ),
    "caption": ("caption", "caption missing (image, perspective) rows with a local VLM"),
    "summarize": ("summarize", "per-identity biometric summaries"),
    "encode": ("encode", "text features for missing caption rows"),
    "train": ("train", "train DIFFER (or a baseline) from a config"),
    "evaluate": ("evaluate", "metrics under the dataset's CC-ReID protocols"),
    "run": ("run", "the full pipeline flow for a config"),
    "reproduce": (
        "reproduce",
        "rebuild a run's inputs from its reproduce.json, retrain, re-evaluate, compare",
    ),
    "study": ("study", "multi-seed DIFFER vs baseline vs ablations study"),
    "serve": ("serve", "serve the Prefect deployments from this process"),
    "status": ("status", "what each stage holds and what is stale"),
    "configs": ("configs", "list the shipped and your own configs ($DIFFER_CONFIG_PATH) or resolve one"),
}


def workdir_option(args) -> str | None:  # args: argparse.Namespace
    """``--workdir`` as given on the command line, None when it was not (``flows.run_config``'s rule 1)."""
    if hasattr(args, "workdir_given"):  # set by flows.cli.main before it resolves args.workdir
        return args.workdir_given
    value = getattr(args, "workdir", None)
    return None if value is None else str(value)
