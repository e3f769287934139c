"""Datasets for training and evaluation: decode once, keep images resized in memory (small CPU machines spend
more time decoding than computing otherwise), apply the seeded transforms, batch uint8."""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

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


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)`` for each index of ``base``: the epoch travels with every index to the dataset,
    also into DataLoader workers, whose copy of the dataset (persistent workers keep theirs for the whole run)
    never sees a ``set_epoch`` made in the training process. ``set_epoch`` is passed on to ``base``."""

    def __init__(self, base: Sampler[int]):
        self.base, self.epoch = base, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((int(i), epoch) for i in self.base)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]


class ImageDataset(Dataset):
    """Items are (uint8 HWC tensor, label). Train mode draws its augmentation from a generator seeded by
    (seed, epoch, index): the same epoch gives the same batches after a resume, with or without workers. The
    key is ``(index, epoch)`` (from :class:`EpochSampler`) or a plain index (epoch 0). ``sizes``: the training
    image size of each epoch (``--size-schedule``; the cache's own size past its end), the crop and flip drawn the
    same at any size.

    A file that fails to decode here (only when not cached) is never replaced by another image: the item is None,
    the file is named in the log once per process and in ``failed``, and :func:`collate_decoded` leaves it out of
    its batch."""

    def __init__(self, cache: ImageCache, train: bool, seed: int = 0, sizes: Sequence[int] = ()):
        self.cache, self.train, self.seed, self.sizes = cache, train, seed, tuple(sizes)
        self.failed: dict[str, Skipped] = {}  # path → why, of the files that failed in this process

    def __len__(self) -> int:
        return len(self.cache.samples)

    def epoch_pp(self, epoch: int) -> Preprocessing:
        """The preprocessing of training epoch ``epoch`` (0-based): the cache's at the epoch's size."""
        size = self.sizes[epoch] if 0 <= epoch < len(self.sizes) else self.cache.pp.img_size
        return self.cache.pp if size == self.cache.pp.img_size else dataclasses.replace(self.cache.pp, img_size=size)

    def __getitem__(self, key: int | tuple[int, int]):
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        try:
            img = self.cache.get(i)
        except DecodeError as exc:  # only when not cached: the fast scan decodes nothing, or the file changed
            if exc.path not in self.failed:
                self.failed[exc.path] = Skipped(exc.path, exc.reason, exc.detail)
                log.warning("%s: %s, skipped", exc.path, exc.reason)
            return None
        if self.train:
            rng = np.random.default_rng((self.seed, epoch, i))
            out = train_transform(img, self.epoch_pp(epoch), rng)
        else:
            out = test_transform(img, self.cache.pp, cached=True)
        return torch.from_numpy(out), int(self.cache.samples[i].label)


def collate_decoded(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the items that decoded (None items left out); an empty batch when none did."""
    kept = [it for it in items if it is not None]
    if not kept:
        return torch.zeros((0, 0, 0, 3), dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
    return default_collate(kept)
