"""The names a user gives a run's parts ("crown", "wing bars"), kept in the run folder's ``part_names.json``
(:data:`engine.runs.PART_NAMES`, written atomically) and shown wherever a part is listed: the app, export folders
and files, ``predict --json``, the field guide.

The file holds ``{"format": "fieldmark-part-names", "version": 1, "names": {"1": "crown", ...}}`` with 1-based part
numbers as keys (the numbers the user sees); in Python a name map is ``{0-based part index: name}``.

A run's parts: the K shared parts of a ``parts`` run (the same body region on every bird), the ξ channels of a
class for MC-Loss / CE (part k of every class), the one structure map of TASN.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

from engine.errors import CheckpointError, ConfigError
from engine.fileio import atomic_write_json
from engine.runs import PART_NAMES, read_meta, run_dir_of

FORMAT = "fieldmark-part-names"
VERSION = 1
MAX_LENGTH = 40
_SEPARATORS = ("/", "\\")


def run_part_count(run: str | Path) -> int:
    """How many parts the run at ``run`` has (from its ``model.json``; no weights loaded)."""
    meta = read_meta(run)
    arch = meta.get("arch") or {}
    if arch.get("head") == "parts" or meta.get("method") == "parts":
        return int(arch.get("parts", 8))
    if meta.get("method") == "tasn" or str(arch.get("name", "")).startswith("tasn_"):
        return 1
    return int(arch.get("xi", 3))


def clean_name(name: Any, index: int | None = None) -> str:
    """``name`` stripped and checked: 1..40 characters, no path separator, no control character. An empty
    string stays empty (it means "remove the name"). ConfigError naming the value otherwise."""
    where = f"part {index + 1}: " if index is not None else ""
    if not isinstance(name, str):
        raise ConfigError(f"{where}name {name!r} is not text: give a name such as 'crown'")
    text = name.strip()
    if len(text) > MAX_LENGTH:
        raise ConfigError(f"{where}name {text!r} has {len(text)} characters: use at most {MAX_LENGTH}")
    if any(sep in text for sep in _SEPARATORS):
        raise ConfigError(f"{where}name {text!r} holds a path separator (/ or \\): use letters, digits, spaces "
                          "or dashes")
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise ConfigError(f"{where}name {text!r} holds a control character: type the name on one line")
    return text


def _validated(names: dict[int, str], count: int) -> dict[int, str]:
    """The names checked and cleaned, empty ones dropped, sorted by part."""
    out: dict[int, str] = {}
    for raw_index, name in names.items():
        if isinstance(raw_index, bool) or not isinstance(raw_index, int):
            raise ConfigError(f"part index {raw_index!r} is not a whole number: give 0-based part indices")
        if not 0 <= raw_index < count:
            raise ConfigError(f"part {raw_index + 1} does not exist: the run has {count} parts (1..{count})")
        text = clean_name(name, raw_index)
        if text:
            out[raw_index] = text
    seen: dict[str, int] = {}
    for k in sorted(out):
        key = out[k].casefold()
        if key in seen:
            raise ConfigError(f"parts {seen[key] + 1} and {k + 1} are both named {out[k]!r}: give each part its own "
                              "name")
        seen[key] = k
    return dict(sorted(out.items()))


def read_part_names(run: str | Path) -> dict[int, str]:
    """{0-based part index: name} of the run; {} when it has no ``part_names.json``. A damaged file raises
    CheckpointError naming it."""
    f = run_dir_of(run) / PART_NAMES
    if not f.is_file():
        return {}
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{str(f)!r} is damaged ({exc}): delete it (the parts lose their names) or restore "
                              "it from a backup") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("names"), dict):
        raise CheckpointError(f"{str(f)!r} is not a Fieldmark part-names file: delete it (the parts lose their "
                              "names) or restore it from a backup")
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise CheckpointError(f"{str(f)!r} has part-names version {doc.get('version')!r}; this Fieldmark reads "
                              f"version {VERSION}: upgrade Fieldmark")
    out: dict[int, str] = {}
    for key, name in doc["names"].items():
        try:
            number = int(key)
        except ValueError:
            raise CheckpointError(f"{str(f)!r} names part {key!r}, which is not a part number: fix or delete the "
                                  "file") from None
        if number < 1 or not isinstance(name, str) or not name.strip():
            raise CheckpointError(f"{str(f)!r}: part {key!r} has name {name!r}; fix or delete the file")
        out[number - 1] = name.strip()
    return dict(sorted(out.items()))


def write_part_names(run: str | Path, names: dict[int, str]) -> None:
    """Save the run's part names (atomic). Checks every entry against the run's parts (:func:`run_part_count`)
    and the name rules (:func:`clean_name`, names unique ignoring case); an empty name removes its entry; ConfigError
    naming the bad value, and nothing is written."""
    run = run_dir_of(run)
    clean = _validated(dict(names), run_part_count(run))
    atomic_write_json(run / PART_NAMES, {"format": FORMAT, "version": VERSION,
                                         "names": {str(k + 1): v for k, v in clean.items()}})


def set_part_name(run: str | Path, index: int, name: str) -> dict[int, str]:
    """Name part ``index`` (0-based; an empty ``name`` removes its name) and save; returns the new names."""
    names = read_part_names(run)
    names[index] = name
    write_part_names(run, names)
    return read_part_names(run)


def part_label(index: int, names: dict[int, str]) -> str:
    """What the user sees for part ``index`` (0-based): its name, else "part k" (1-based)."""
    return names.get(index) or f"part {index + 1}"


def folder_label(index: int, names: dict[int, str]) -> str:
    """A part's export folder: ``part_<k>`` (1-based), with ``_<name>`` made safe for a file name when it is
    named (spaces → ``_``, characters file systems refuse dropped): ``part_3_wing_bars``."""
    base = f"part_{index + 1}"
    name = names.get(index)
    if not name:
        return base
    bad = ':*?"<>|'
    safe = "".join("_" if ch.isspace() else ch for ch in name if ch not in bad).strip("._ ")
    return f"{base}_{safe}" if safe else base


__all__ = ["FORMAT", "MAX_LENGTH", "run_part_count", "clean_name", "read_part_names", "write_part_names",
           "set_part_name", "part_label", "folder_label"]
