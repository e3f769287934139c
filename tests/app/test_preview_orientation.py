"""The Library preview draws a data set's box and keypoints (given on the file's stored grid) over a photo stored
turned with an EXIF orientation where they belong on the upright image. Worked by hand: a 48 x 40 (W x H) file
shown turned 90° clockwise (orientation 6) is 40 x 48; a stored point (x, y) shows at (39 - y, x), a stored edge
box [x0, x1] x [y0, y1] at [40 - y1, 40 - y0] x [x0, x1]."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6", reason="the Library page needs PySide6 (pip install fieldmark[gui])")
pytest.importorskip("pytestqt", reason="the GUI tests need pytest-qt")
PIL = pytest.importorskip("PIL")

from engine.data import Sample  # noqa: E402


def test_preview_draws_the_box_and_keypoints_of_a_turned_photo(window, qtbot, tmp_path):
    from PIL import Image

    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(path, exif=exif.tobytes())
    sample = Sample(str(path), 0, "train", bbox=(5.0, 4.0, 20.0, 18.0), parts=((10.0, 10.0, 1), (30.0, 20.0, 1)))
    prev = window.library.preview
    prev.show_sample(sample, "alpha")
    qtbot.waitUntil(lambda: prev.shown_path == str(path), timeout=5000)
    assert prev.image.image.shape == (48, 40, 3)
    r = prev.box.rect()
    assert (r.x(), r.y(), r.width(), r.height()) == (18.0, 5.0, 18.0, 20.0)
    assert prev.parts.data["x"].tolist() == [29.0, 19.0] and prev.parts.data["y"].tolist() == [10.0, 30.0]
