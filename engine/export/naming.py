"""The names of a part export's folders and files: class folders safe for any file system and never merged, part
folders carrying the user's part names, and images' paths relative to the data folder (see
:mod:`engine.export.crops`)."""

from __future__ import annotations

import os
from typing import Any

_UNSAFE = '/\\:*?"<>|\0'  # characters some file system refuses in a name


def folder_name(name: str) -> str:
    """``name`` made safe for a folder: unsafe characters as ``_``, end dots and spaces dropped."""
    return "".join("_" if ch in _UNSAFE else ch for ch in name).strip(". ") or "class"


def part_folder(index: int, part_names: dict[int, str]) -> str:
    """Part ``index``'s folder (0-based index): ``part_<k>``, or ``part_<k>_<name>`` for a named part, the name
    made safe for a folder (spaces as ``_``): ``part_3_wing_bars``."""
    safe = "".join("_" if ch in _UNSAFE or ch.isspace() else ch for ch in part_names.get(index, "")).strip("._ ")
    return f"part_{index + 1}_{safe}" if safe else f"part_{index + 1}"


def class_folders(classes: list[str], taken: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """({class: folder}, notes): each class's export folder, distinct even where names sanitise to one folder or
    differ only in case; ``taken`` ({class: folder}) are the folders earlier exports in the folder already use."""
    out = dict(taken or {})
    owner = {f.casefold(): c for c, f in out.items()}
    notes = []
    for c in classes:
        if c in out:
            continue
        base = folder = folder_name(c)
        n = 2
        while folder.casefold() in owner:
            folder = f"{base}-{n}"
            n += 1
        if folder != base:
            notes.append(f"class {c!r} is exported to {folder}/: its name makes the folder {base}/, which class "
                         f"{owner[base.casefold()]!r} already uses")
        owner[folder.casefold()] = c
        out[c] = folder
    return out, notes


def record_folder(rec: dict[str, Any]) -> str:
    """The class folder a done record's crops went to (older records: from a crop's path, or the class name)."""
    if rec.get("folder"):
        return rec["folder"]
    return rec["parts"][0]["crop"].split("/")[0] if rec.get("parts") else folder_name(rec["class"])


def relative_image(path: str, root: str) -> str:
    """The image's path relative to the data root (absolute when outside it), "/"-separated."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, os.path.abspath(root))
    return full if rel.startswith("..") else rel.replace(os.sep, "/")
