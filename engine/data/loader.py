"""Datasets for training and evaluation: decode once, keep images resized in memory (small CPU machines spend
more time decoding than computing otherwise), apply the seeded transforms, batch uint8."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.errors import DecodeError
from engine.data.imageio import read_image
from engine.data.scan import Sample, Skipped
from engine.data.transforms import Preprocessing, resize_shorter, test_transform, train_transform

log = logging.getLogger(__name__)


class ImageCache:
    """Decoded, shorter-side-resized images. ``iter_load`` reports undecodable files and drops them."""

    def __init__(self, samples: Sequence[Sample], pp: Preprocessing, limit_mb: int = 4096):
        self.pp = pp
        self.samples = list(samples)
        self.est_mb = len(self.samples) * pp.resize * pp.resize * 1.4 * 3 / 2 ** 20  # shorter side x 1.4, RGB
        self.enabled = self.est_mb <= limit_mb
        self.images: list[np.ndarray | None] = [None] * len(self.samples)
        if not self.enabled:
            log.info("image cache off: about %.0f MB needed, limit %d MB", self.est_mb, limit_mb)

    def iter_load(self):
        """Decode everything once (when caching): yields the number of files done, returns the files that
        failed, which are removed from ``samples``."""
        failed: list[Skipped] = []
        keep_s, keep_i = [], []
        for i, s in enumerate(self.samples):
            try:
                img = resize_shorter(read_image(s.path), self.pp.resize) if self.enabled else None
                keep_s.append(s)
                keep_i.append(img)
            except DecodeError as exc:
                failed.append(Skipped(s.path, exc.reason, exc.detail))
            yield i + 1
        self.samples, self.images = keep_s, keep_i
        return failed

    def get(self, i: int) -> np.ndarray:
        img = self.images[i]
        if img is None:
            img = resize_shorter(read_image(self.samples[i].path), self.pp.resize)
        return img


class ImageDataset(Dataset):
    """Items are (uint8 HWC tensor, label). Train mode draws its augmentation from a generator seeded by
    (seed, epoch, index): the same epoch gives the same batches after a resume."""

    def __init__(self, cache: ImageCache, train: bool, seed: int = 0):
        self.cache, self.train, self.seed, self.epoch = cache, train, seed, 0

    def __len__(self) -> int:
        return len(self.cache.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int):
        try:
            img = self.cache.get(i)
        except DecodeError as exc:  # only when not cached: a file changed after the scan
            log.warning("%s: %s; using another image in its place", exc.path, exc.reason)
            return self[(i + 1) % len(self)]
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            out = train_transform(img, self.cache.pp, rng)
        else:
            out = test_transform(img, self.cache.pp, cached=True)
        return torch.from_numpy(out), int(self.cache.samples[i].label)
