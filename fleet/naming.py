"""Names: lookups with a "did you mean …?" hint (presets, tasks, embodiments, adapters) and model version numbers."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


def unknown(kind: str, name: str, known: Iterable[str], *, detail: str = "known") -> KeyError:
    """A KeyError naming what was asked for, what exists, and the closest match."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return KeyError(f"unknown {kind} {name!r}; {detail}: {names}.{hint}")


def lookup(table: Mapping[str, T], name: str, kind: str) -> T:
    """`table[name]`, or `unknown(kind, ...)` raised with a hint."""
    try:
        return table[name]
    except KeyError:
        raise unknown(kind, name, table) from None


def version_number(version: str | None) -> int | None:
    """A registry version's number ("7" -> 7); None for anything else (a local checkpoint, no model). Registry
    versions are increasing integers, so the numbers order them."""
    return int(version) if version is not None and str(version).isdigit() else None
