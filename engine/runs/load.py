"""Loading a run's model: the weights checked against the architecture its ``model.json`` describes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.errors import CheckpointError
from engine.runs.files import MODEL_JSON, MODEL_WEIGHTS, read_meta, run_dir_of


@dataclass
class LoadedRun:
    run_dir: Path
    model: nn.Module
    meta: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.meta["preprocessing"])

    @property
    def method(self) -> str:
        return self.meta.get("method", "ce")


def load_weights(model: nn.Module, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{str(path)!r} is missing: the run folder is incomplete, retrain or restore it")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{str(path)!r} is damaged or truncated ({exc}): retrain, or restore the file") from exc
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or shapes:
        raise CheckpointError(f"{str(path)!r} does not fit the model described in {MODEL_JSON} "
                              f"({len(missing)} missing, {len(extra)} unexpected, {len(shapes)} wrong shapes, "
                              f"e.g. {(missing + extra + shapes)[:2]}): the files come from different runs, or "
                              "the run was saved by a Fieldmark whose model of that name had another "
                              "architecture; retrain it")
    model.load_state_dict(state)


def load_run(path: str | Path, device: str | torch.device = "cpu",
             expect_classes: list[str] | int | None = None) -> LoadedRun:
    """Load a run folder's model in eval mode. ``expect_classes`` (names or a count) is checked."""
    from engine.models import create_model

    run = run_dir_of(path)
    meta = read_meta(run)
    arch = dict(meta.get("arch") or {})
    classes = meta.get("classes") or []
    if not arch.get("name") or len(classes) != arch.get("num_classes"):
        raise CheckpointError(f"{str(run / MODEL_JSON)!r} is inconsistent: {len(classes)} class names for "
                              f"{arch.get('num_classes')} outputs")
    if expect_classes is not None:
        n = expect_classes if isinstance(expect_classes, int) else len(expect_classes)
        if n != len(classes):
            raise CheckpointError(f"checkpoint has {len(classes)} classes, the dataset has {n}: "
                                  "pick a matching checkpoint or retrain")
        if not isinstance(expect_classes, int) and list(expect_classes) != list(classes):
            diff = [c for c in expect_classes if c not in classes][:3]
            raise CheckpointError(f"checkpoint classes differ from the dataset's (e.g. {diff} are unknown to "
                                  "it): pick a matching checkpoint or retrain")
    name = arch.pop("name")
    try:
        model = create_model(name, pretrained=None, **arch)
    except TypeError as exc:
        raise CheckpointError(f"{str(run)!r}: architecture {meta.get('arch')} cannot be built ({exc})") from exc
    load_weights(model, run / MODEL_WEIGHTS)
    model.to(device).eval()
    return LoadedRun(run, model, meta)
