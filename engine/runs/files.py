"""The run folder's files, and every file name in them (only this module names them): see :mod:`engine.runs`.

Every file is written atomically, so a killed run is never unreadable.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine import __version__
from engine.data.split import check_doc
from engine.data.split import to_text as split_text
from engine.errors import CheckpointError
from engine.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

FORMAT = "fieldmark-run"
FORMAT_VERSION = 1
MODEL_JSON, MODEL_WEIGHTS, METRICS, RESUME = "model.json", "model.safetensors", "metrics.jsonl", "resume.pt"
SPLIT, EVALUATION, OVERLAYS = "split.json", "evaluation.json", "overlays"
PART_NAMES = "part_names.json"
PART_NAMES_FORMAT, PART_NAMES_VERSION = "fieldmark-part-names", 1
PART_PLACES = "part_places.json"
PART_PLACES_FORMAT, PART_PLACES_VERSION = "fieldmark-part-places", 1
#: The files of a run folder (``OVERLAYS`` is a folder).
RUN_FILES = (MODEL_JSON, MODEL_WEIGHTS, METRICS, RESUME, SPLIT, EVALUATION, PART_NAMES, PART_PLACES)


def run_dir_of(path: str | Path) -> Path:
    """Accept the run folder or any file inside it."""
    p = Path(path).expanduser()
    return p.parent if p.is_file() else p


def is_run(path: str | Path) -> bool:
    return (run_dir_of(path) / MODEL_JSON).is_file()


def read_meta(path: str | Path) -> dict[str, Any]:
    run = run_dir_of(path)
    f = run / MODEL_JSON
    if not f.is_file():
        raise CheckpointError(f"{str(run)!r} is not a Fieldmark run folder (no {MODEL_JSON}): "
                              "pass a folder written by `fieldmark train`")
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{str(f)!r} is damaged ({exc}): retrain, or restore the file") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(f)!r} is not a Fieldmark model description (format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{str(run)!r} was written by Fieldmark {meta.get('fieldmark_version', '?')} "
                              f"(run format {version}); this is Fieldmark {__version__}, which reads format "
                              f"{FORMAT_VERSION}: upgrade Fieldmark to open it")
    return meta


def save_state_dict(path: Path, model: nn.Module) -> None:
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={"format": FORMAT}))


def save_epoch(run: Path, model: nn.Module, meta: dict[str, Any], history: list[dict[str, Any]],
               resume_state: dict[str, Any] | None, split: dict[str, Any] | None = None) -> None:
    """Write one epoch's files. ``split`` (a new run's split, or one a resume was allowed to change) goes first;
    ``resume.pt`` carries the model too, so it alone resumes consistently; ``model.json`` goes last and names the
    epoch the published weights belong to."""
    run.mkdir(parents=True, exist_ok=True)
    if split is not None:
        write_split(run, split)
    if resume_state is not None:
        buf = io.BytesIO()
        torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **resume_state}, buf)
        atomic_write_bytes(run / RESUME, buf.getvalue())
    save_state_dict(run / MODEL_WEIGHTS, model)
    atomic_write_text(run / METRICS, "".join(json.dumps(h) + "\n" for h in history))
    meta = {**meta, "format": FORMAT, "format_version": FORMAT_VERSION, "fieldmark_version": __version__,
            "torch_version": torch.__version__, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(run / MODEL_JSON, meta)


def remove_orphan_temps(run: Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a kill interrupted (``.<name>.<random>.tmp``); they never
    replace a real file, so they are only litter. Returns what was removed."""
    removed = []
    for name in RUN_FILES:
        for tmp in run.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        log.info("removed %d temporary files left by an interrupted save in %s", len(removed), run)
    return removed


def load_resume(run: Path) -> dict[str, Any]:
    f = run / RESUME
    if not f.is_file():
        raise CheckpointError(f"{str(run)!r} has no {RESUME}: nothing to resume (train without --resume)")
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{str(f)!r} was refused: it holds Python objects that could run code") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{str(f)!r} is damaged ({exc}): start a new run") from exc


def read_history(run: Path) -> list[dict[str, Any]]:
    f = run / METRICS
    if not f.is_file():
        return []
    out = []
    for line in f.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line (should not happen with atomic writes): keep what is whole
    return out



# ------------------------------------------------------------------------------- the run's documents
def load_json(f: Path, hint: str) -> Any:
    """The JSON document in ``f``; a CheckpointError naming it and saying what to do (``hint``) when unreadable."""
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{str(f)!r} is damaged ({exc}): {hint}") from exc


def write_split(run: str | Path, doc: dict[str, Any]) -> None:
    atomic_write_text(Path(run) / SPLIT, split_text(doc))


def read_split(run: str | Path) -> dict[str, Any] | None:
    """The run's saved split (:mod:`engine.data.split`), or None for a run saved before splits were kept."""
    f = run_dir_of(run) / SPLIT
    if not f.is_file():
        return None
    doc = load_json(f, "restore it from a backup, or delete it (the split is then drawn again from the folder)")
    return check_doc(doc, str(f))


def write_evaluation(run: str | Path, figures: dict[str, Any]) -> None:
    atomic_write_json(run_dir_of(run) / EVALUATION, figures)


def read_evaluation(run: str | Path) -> dict[str, Any] | None:
    """The run's ``evaluation.json`` (written by the demo or the app), or None when absent or unreadable."""
    f = run_dir_of(run) / EVALUATION
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s cannot be read: %s", f, exc)
        return None
    return data if isinstance(data, dict) else None


def weights_stamp(run: str | Path) -> list[int]:
    """[size, mtime_ns] of the run's weights file: what a figure computed from the weights was computed from."""
    st = (run_dir_of(run) / MODEL_WEIGHTS).stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def write_part_places(run: str | Path, doc: dict[str, Any]) -> None:
    """Save the run's on-bird shares (:mod:`engine.fieldmarks.onbird` builds ``doc``), stamped with its weights."""
    run = run_dir_of(run)
    atomic_write_json(run / PART_PLACES, {"format": PART_PLACES_FORMAT, "version": PART_PLACES_VERSION,
                                          "weights": weights_stamp(run), **doc})


def read_part_places(run: str | Path) -> dict[str, Any] | None:
    """The run's saved on-bird shares, or None when it has none or they were computed from other weights (the run
    was trained on since). A damaged file raises CheckpointError naming it."""
    f = run_dir_of(run) / PART_PLACES
    if not f.is_file():
        return None
    doc = load_json(f, "delete it (it is computed again)")
    if not isinstance(doc, dict) or doc.get("format") != PART_PLACES_FORMAT or not isinstance(doc.get("parts"), list):
        raise CheckpointError(f"{str(f)!r} is not a Fieldmark part-places file: delete it (it is computed again)")
    if not isinstance(doc.get("version"), int) or doc["version"] > PART_PLACES_VERSION:
        raise CheckpointError(f"{str(f)!r} has version {doc.get('version')!r}; this Fieldmark reads "
                              f"{PART_PLACES_VERSION}: upgrade Fieldmark, or delete it")
    try:
        if doc.get("weights") != weights_stamp(run):
            return None
    except OSError:
        return None
    return doc


def read_part_names(run: str | Path) -> dict[int, str]:
    """{0-based part index: name} of the run (the user's names; :mod:`engine.fieldmarks.names` writes them), {}
    when it has no ``part_names.json``. A damaged file raises CheckpointError naming it."""
    f = run_dir_of(run) / PART_NAMES
    if not f.is_file():
        return {}
    doc = load_json(f, "delete it (the parts lose their names) or restore it from a backup")
    if not isinstance(doc, dict) or doc.get("format") != PART_NAMES_FORMAT \
            or not isinstance(doc.get("names"), dict):
        raise CheckpointError(f"{str(f)!r} is not a Fieldmark part-names file: delete it (the parts lose their "
                              "names) or restore it from a backup")
    if not isinstance(doc.get("version"), int) or doc["version"] > PART_NAMES_VERSION:
        raise CheckpointError(f"{str(f)!r} has part-names version {doc.get('version')!r}; this Fieldmark reads "
                              f"version {PART_NAMES_VERSION}: upgrade Fieldmark")
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
