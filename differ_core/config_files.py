"""Where training configs, ablation overlays and pipeline option files are found.

The shipped ones are package data (``differ_core/configs/``, read through ``importlib.resources`` as open_clip
ships ``model_configs/``), so an installed wheel has them. A name is looked up, in order, as a file path (absolute or
relative to the working directory), then in each folder of ``$DIFFER_CONFIG_PATH`` (``os.pathsep``-separated, your
own configs first), then among the shipped configs. ``configs/ltcc.yaml``, ``ltcc.yaml`` and ``ltcc`` all name the
shipped LTCC recipe; ``ablations/baseline`` an overlay; ``pipelines/synthcc_study`` a pipeline option file.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from differ_common.errors import ConfigError

ENV_VAR = "DIFFER_CONFIG_PATH"


def shipped_dir() -> Path:
    """The folder of the configs shipped with the package."""
    return Path(str(files("differ_core") / "configs"))


def config_dirs() -> list[Path]:
    """``$DIFFER_CONFIG_PATH`` folders (in order), then the shipped folder."""
    user = [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    return [*user, shipped_dir()]


def _relative_name(name: str) -> str:
    rel = name.replace("\\", "/")
    rel = rel[len("configs/") :] if rel.startswith("configs/") else rel
    return rel if rel.endswith((".yaml", ".yml")) else f"{rel}.yaml"


def resolve_config(name: str | os.PathLike) -> Path:
    """The config file ``name`` refers to (see the module docstring); a ConfigError naming where it looked."""
    p = Path(name).expanduser()
    if p.is_file():
        return p.resolve()
    rel = _relative_name(str(name))
    for d in config_dirs():
        cand = d / rel
        if cand.is_file():
            return cand.resolve()
    shown = ", ".join(list_configs()[:12])
    raise ConfigError(
        f"{name}: no such config file (looked in the working directory, ${ENV_VAR} and the shipped configs: "
        f"{shown}, ...); pass a path or one of `differ configs`"
    )


def list_configs(folder: str = "") -> list[str]:
    """Names of the configs in every config folder (``folder`` = ``ablations``/``pipelines`` for those)."""
    names: set[str] = set()
    for d in config_dirs():
        base = d / folder if folder else d
        if base.is_dir():
            names |= {str(p.relative_to(d).with_suffix("")) for p in base.glob("*.yaml")}
    return sorted(names)


def config_folder(folder: str) -> list[Path]:
    """Every ``<config dir>/<folder>/*.yaml`` (user folders shadow shipped files of the same name)."""
    seen: dict[str, Path] = {}
    for d in reversed(config_dirs()):
        for p in sorted((d / folder).glob("*.yaml")) if (d / folder).is_dir() else []:
            seen[p.name] = p
    return [seen[k] for k in sorted(seen)]
