"""Shared fixtures: where ../shared is, and small generated image folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# every test's memory plan counts on the same machine, whatever else this one runs (a test that plans for other
# memory sets available_mb / total_mb itself); the child processes of a test inherit it
os.environ.setdefault("FIELDMARK_MEMORY_MB", "8000")
SHARED = Path(os.environ.get("FIELDMARK_SHARED", ROOT.parent / "shared"))
BIRDS_DEV = SHARED / "data" / "birds-dev"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet1k.pth"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not here (real-data tests read ../shared beside the project)")
    return path


def make_class_folders(root: Path, classes: int = 3, per_class: int = 8, size: tuple[int, int] = (40, 48),
                       seed: int = 0) -> Path:
    """Tiny learnable images: class k has a bright square at a class-specific place on noise."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    for c in range(classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = (rng.random((h, w, 3)) * 80).astype(np.uint8)
            x = 4 + (c * 13) % (w - 14)
            img[8:20, x:x + 10] = (255, 40 * c % 255, 255 - 60 * c % 255)
            cv2.imwrite(str(d / f"img_{i:03d}.jpg"), img)
    return root


def fit_one_batch(criterion, model, x, y, optimizer, steps: int) -> tuple[tuple[float, dict], tuple[float, dict]]:
    """``steps`` optimiser steps of an engine criterion on one batch; the (loss, parts) of the first and the last
    step, as floats (each measured before its own update)."""
    seen = []
    for _ in range(steps):
        loss, parts = criterion(model, x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen.append((float(loss.detach()), {k: float(v) for k, v in parts.items()}))
    return seen[0], seen[-1]


@pytest.fixture
def class_folders(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "data")
