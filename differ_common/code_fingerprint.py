"""The fingerprint of project source: some modules and every project module they import (at module level or inside
a function), found by reading the source, hashed file by file.

It keys what code produces: a pipeline stage's cache (``flows.stages.code``), a pre-training's folder, the
attributes captioner's rows, a generated SynthCC folder. An edit to any file of the closure changes it; an edit
elsewhere does not. Imports are read, not executed: nothing is imported to compute a fingerprint.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import cache
from pathlib import Path

PROJECT_PACKAGES: tuple[str, ...] = ("differ_common", "data_manifests", "captions", "differ_core", "flows")


@cache
def _package_dir(top: str) -> Path | None:
    spec = importlib.util.find_spec(top)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def module_file(name: str) -> Path | None:
    """The source file of project module ``name`` (``a/b.py`` or ``a/b/__init__.py``), None if there is none."""
    top, *rest = name.split(".")
    if top not in PROJECT_PACKAGES or (base := _package_dir(top)) is None:
        return None
    path = base.joinpath(*rest)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(name: str, path: Path) -> set[str]:
    """Project modules ``path`` (module ``name``) imports anywhere in its source, with their parent packages."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    out: set[str] = set()
    for module in found:
        parts = module.split(".")
        if parts[0] in PROJECT_PACKAGES:
            out.update(".".join(parts[: k + 1]) for k in range(len(parts)))
    return out


def closure(entries: tuple[str, ...]) -> dict[str, Path]:
    """``{module: file}`` of ``entries`` and every project module they import, transitively."""
    files: dict[str, Path] = {}
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in files:
            continue
        path = module_file(name)
        if path is None:
            continue  # an attribute imported from a package (`from captions import encode_dataset`)
        files[name] = path
        todo.extend(imported_modules(name, path) - files.keys())
    return dict(sorted(files.items()))


@cache
def code_fingerprint(entries: tuple[str, ...], follow_imports: bool = True) -> str:
    """sha256 (16 hex) over the module names and source bytes of ``closure(entries)`` (``follow_imports=False``:
    of ``entries`` alone); computed once per process."""
    files = (
        closure(entries) if follow_imports else {n: p for n in entries if (p := module_file(n)) is not None}
    )
    h = hashlib.sha256()
    for name, path in sorted(files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]
