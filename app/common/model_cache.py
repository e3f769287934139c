"""Loaded runs and per-image class probabilities, kept on a worker lane's thread (no Qt here).

Widgets never hold a model: a workspace's jobs get a :class:`ModelCache` and return plain data.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from engine.errors import ConfigError

from .caches import trim_oldest


class ModelCache:
    """Loaded runs and per-image probabilities, used on the worker thread only (never by widgets)."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._runs: OrderedDict[str, Any] = OrderedDict()
        self._probs: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def get(self, path: str):
        """The :class:`engine.runs.LoadedRun` of ``path`` (loaded on first use, on the best device)."""
        from engine.device import resolve_device
        from engine.runs import load_run

        if path not in self._runs:
            self._runs[path] = load_run(path, device=resolve_device("auto"))
            trim_oldest(self._runs, self.keep)
        self._runs.move_to_end(path)
        return self._runs[path]

    def probs(self, run_path: str, image_path: str, image: np.ndarray) -> np.ndarray:
        from engine.data.transforms import Preprocessing
        from engine.maps.explain import predict_probs

        key = (run_path, image_path)
        if key not in self._probs:
            run = self.get(run_path)
            pp = Preprocessing.from_dict(run.preprocessing)
            self._probs[key] = predict_probs(run.model, [image], pp)[0].astype(np.float32)
            trim_oldest(self._probs, 512)
        return self._probs[key]


def valid_methods(model) -> list[str]:
    """The map methods of :mod:`engine.maps.explain` that ``model`` supports, in the engine's order."""
    from engine.maps.explain import METHODS, get_method

    out = []
    for name in METHODS:
        try:
            get_method(name).check(model)
        except ConfigError:
            continue
        out.append(name)
    return out
