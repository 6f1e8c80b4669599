"""Named plug-ins and their specs, in the style of timm's ``register_model`` / ``list_models``.

One :class:`Registry` per kind (datasets, captioner backends, text encoders). A spec is ``name`` or
``name:argument`` (``hf:/models/llava``, ``open_clip:EVA02-B-16@/ckpt.pt``); :meth:`Registry.parse` is the one
parser, and its errors list what is registered::

    CAPTIONERS = Registry("captioner")

    @CAPTIONERS.register("hf", arg="<local model dir>")
    def _hf(arg: str, **options): ...

    entry, arg = CAPTIONERS.parse("hf:/models/llava")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from differ_common.errors import ConfigError

ArgRule = Literal["none", "required", "optional"]


@dataclass(frozen=True)
class Entry:
    """One registered plug-in: its name, what it builds, the argument it takes and free metadata."""

    name: str
    target: Any
    arg: ArgRule = "none"
    arg_help: str = ""
    summary: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def usage(self) -> str:
        """``name``, ``name:<arg>`` or ``name[:<arg>]`` as the help shows it."""
        if self.arg == "none":
            return self.name
        shown = self.arg_help or "<arg>"
        return f"{self.name}:{shown}" if self.arg == "required" else f"{self.name}[:{shown}]"


class Registry:
    """Plug-ins of one kind by name (plus aliases)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    def add(
        self,
        name: str,
        target: Any,
        *,
        arg: ArgRule = "none",
        arg_help: str = "",
        summary: str = "",
        aliases: tuple[str, ...] = (),
        **meta: Any,
    ) -> Entry:
        """Register ``target`` under ``name``; registering a name twice is an error."""
        if name in self._entries or name in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        entry = Entry(name, target, arg, arg_help, summary, dict(meta))
        self._entries[name] = entry
        for a in aliases:
            self._aliases[a] = name
        return entry

    def register(self, name: str, **kwargs: Any) -> Callable[[Any], Any]:
        """Decorator form of :meth:`add`; returns the decorated object unchanged."""

        def deco(target: Any) -> Any:
            self.add(name, target, **kwargs)
            return target

        return deco

    def names(self) -> list[str]:
        """Registered names, sorted (like ``timm.list_models``)."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def usage(self) -> str:
        """``a | b:<dir> | c[:<x>]``: every registered spec form, for help texts and errors."""
        return " | ".join(self._entries[n].usage for n in self.names())

    def get(self, name: str) -> Entry:
        """The entry of ``name`` (or an alias); a ConfigError listing the registered names otherwise."""
        key = self._aliases.get(name, name)
        if key not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; use {self.usage()}")
        return self._entries[key]

    def parse(self, spec: str) -> tuple[Entry, str]:
        """``"name:arg"`` → ``(entry, "arg")``, checking the argument rule of that entry."""
        spec = (spec or "").strip()
        name, sep, arg = spec.partition(":")
        entry = self.get(name.strip())
        arg = arg.strip()
        if entry.arg == "required" and not arg:
            raise ConfigError(f"{self.kind} {spec!r} needs an argument: {entry.usage}")
        if entry.arg == "none" and sep:
            raise ConfigError(f"{self.kind} {spec!r}: {entry.name!r} takes no argument; use {entry.name}")
        return entry, arg
