"""Prediction: top-k classes for images, with the run's own preprocessing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from engine.data.scan import Skipped, walk_images
from engine.data.transforms import Preprocessing, normalize, test_transform
from engine.errors import DataError, DecodeError
from engine.data.imageio import is_image_name, read_image
from engine.models.shared_parts import has_shared_parts
from engine.runs import LoadedRun


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class, probability), best first
    #: a shared-parts run: each part's share of the top class's logit (the logit is their sum), part 1 first
    part_contributions: list[float] | None = None


def expand_inputs(items: Iterable[str]) -> tuple[list[Path], list[Skipped]]:
    """Files and folders (searched recursively for images) → image paths, plus what was skipped."""
    paths: list[Path] = []
    skipped: list[Skipped] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            paths.extend(walk_images(p, skipped))
        elif p.is_file() or os.path.lexists(p):
            paths.append(p)  # a broken link or a named pipe too: decoding reports it as unreadable, and goes on
        else:
            raise DataError(f"{item!r} does not exist: give image files or folders")
    if not paths:
        raise DataError(f"no image found in {', '.join(map(repr, items))}: give .jpg/.png files or folders of them")
    return [p for p in paths if is_image_name(p) or p.is_file()], skipped


@torch.no_grad()
def predict(run: LoadedRun, paths: list[Path], top_k: int = 5, batch_size: int = 32,
            ) -> Iterator[Prediction | Skipped]:
    """Yield a Prediction per readable image and a Skipped for each unreadable one, in input order."""
    pp = Preprocessing.from_dict(run.preprocessing)
    device = next(run.model.parameters()).device
    k = max(1, min(top_k, len(run.classes)))
    batch: list[tuple[Path, np.ndarray]] = []

    def flush():
        x = normalize(torch.from_numpy(np.stack([b[1] for b in batch])).to(device), pp)
        shares = None
        if has_shared_parts(run.model):
            out = run.model.forward_parts(x)
            logits, shares = out.logits.float(), out.part_logits.float() / out.part_logits.shape[1]
        else:
            logits = run.model(x).float()
        probs = logits.softmax(1).cpu()
        vals, idx = probs.topk(k, dim=1)
        for n, ((p, _), v, i) in enumerate(zip(batch, vals, idx)):
            contrib = None if shares is None else [round(float(c), 6) for c in shares[n, :, int(i[0])].tolist()]
            yield Prediction(str(p), [(run.classes[j], float(q)) for q, j in zip(v.tolist(), i.tolist())], contrib)
        batch.clear()

    for p in paths:
        try:
            batch.append((p, test_transform(read_image(p), pp)))
        except DecodeError as exc:
            yield Skipped(str(p), exc.reason, exc.detail)
            continue
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()
