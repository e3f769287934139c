"""The training loader (engine.data.loader) with images decoded per item (cache off): a file that fails is named
and left out of its batch, never replaced by another image; a data set where every file fails is a clear error."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from engine.data import scan
from engine.data.loader import ImageCache, ImageDataset, collate_decoded
from engine.data.transforms import Preprocessing
from engine.errors import DataError
from engine.events import drive
from engine.training.config import TrainConfig
from engine.training.loop import train

PP = Preprocessing.for_size(32)


def bad_crc_png(path: Path, value: int = 90) -> None:
    """A PNG whose IDAT CRC is wrong: the fast scan accepts it (signature, IEND), decoding refuses it."""
    data = bytearray(cv2.imencode(".png", np.full((36, 36, 3), value, np.uint8))[1].tobytes())
    i = 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i:i + 4])
        if bytes(data[i + 4:i + 8]) == b"IDAT":
            at = i + 8 + length
            data[at:at + 4] = struct.pack(">I", (zlib.crc32(bytes(data[i + 4:at])) & 0xFFFFFFFF) ^ 1)
            break
        i += 12 + length
    path.write_bytes(bytes(data))


def folders(root: Path, good: int, bad: int) -> Path:
    for c in range(2):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(good):
            cv2.imwrite(str(d / f"good_{i}.png"), np.full((36, 36, 3), 40 + 100 * c + i, np.uint8))
        for i in range(bad):
            bad_crc_png(d / f"bad_{i}.png", 10 + i)
    return root


def test_a_file_that_fails_is_named_and_left_out_not_replaced(tmp_path, caplog):
    root = folders(tmp_path / "d", good=2, bad=1)
    report = scan(root)
    samples = report.split("all")
    bad = [k for k, s in enumerate(samples) if "bad_" in s.path]
    assert len(samples) == 6 and len(bad) == 2  # the fast scan cannot see a bad CRC
    cache = ImageCache(samples, PP, limit_mb=0)
    assert not cache.enabled
    ds = ImageDataset(cache, train=False)
    with caplog.at_level(logging.WARNING, logger="engine.data.loader"):
        assert ds[bad[0]] is None  # not the next file's image
    assert samples[bad[0]].path in caplog.text and "corrupt" in caplog.text
    assert set(ds.failed) == {samples[bad[0]].path}
    x, y = next(iter(DataLoader(ds, batch_size=6, collate_fn=collate_decoded)))
    good = [k for k in range(6) if k not in bad]
    assert x.shape == (4, 32, 32, 3) and y.tolist() == [samples[k].label for k in good]
    for row, k in zip(x, good):  # each kept item is its own file's pixels
        assert int(row[16, 16, 0]) == int(cv2.imread(samples[k].path)[18, 18, 0])
    x, y = collate_decoded([None, None])
    assert len(x) == len(y) == 0


def test_training_on_files_that_all_fail_is_a_clear_error(tmp_path):
    """Every image passes the fast scan and fails to decode: with the cache off (decoding per item), training
    used to swap in the next image, recursing forever when there was none."""
    root = folders(tmp_path / "d", good=0, bad=5)
    cfg = TrainConfig(data=str(root), out=str(tmp_path / "run"), model="smallnet", epochs=1, img_size=32,
                      batch_size=4, cache_mb=0)
    with pytest.raises(DataError) as info:
        drive(train(cfg))
    msg = str(info.value)
    assert "none of the 8 training images" in msg and "bad_" in msg and "corrupt" in msg


def test_training_skips_a_failing_file_and_says_so(tmp_path):
    root = folders(tmp_path / "d", good=4, bad=1)
    cfg = TrainConfig(data=str(root), out=str(tmp_path / "run"), model="smallnet", epochs=1, img_size=32,
                      batch_size=4, cache_mb=0, test_fraction=0.2, seed=1)
    events = []
    drive(train(cfg), events.append)
    warned = [e.text for e in events if type(e).__name__ == "Message" and e.level == "warning"]
    assert any("bad_0.png: corrupt, skipped" in t for t in warned), warned
    seen = [e for e in events if type(e).__name__ == "EpochEnd"]
    assert len(seen) == 1 and torch.isfinite(torch.tensor(seen[0].train["loss"]))
