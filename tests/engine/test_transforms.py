"""The training transform's rotation (``Preprocessing.rotate``): a rotation about the centre within the range,
corners filled with the ImageNet mean, nothing rotated when it is 0, and old model files reading as 0."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.data.transforms import Preprocessing, train_transform

SIZE = 65  # odd: the centre is pixel (32, 32)


def _dot_image(row: int, col: int) -> np.ndarray:
    """A black square image with one white 3 × 3 dot centred on (row, col)."""
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[row - 1:row + 2, col - 1:col + 2] = 255
    return img


def _dot_position(out: np.ndarray) -> tuple[float, float]:
    """Brightness-weighted centre of the pixels brighter than the fill colour (row, col)."""
    lum = out.astype(np.float64).mean(axis=2)
    mask = lum > 200
    rows, cols = np.nonzero(mask)
    w = lum[mask]
    return float((rows * w).sum() / w.sum()), float((cols * w).sum() / w.sum())


def _pp(rotate: float) -> Preprocessing:
    # crop area 1 on a square image: the crop is the whole image (the aspect draw never fits, so the square
    # fallback); no flip, so only the rotation moves the dot
    return Preprocessing(img_size=SIZE, resize=SIZE, crop_scale=(1.0, 1.0), hflip=False, rotate=rotate)


def test_rotation_turns_the_photo_about_its_centre_within_the_range():
    c = (SIZE - 1) / 2
    img = _dot_image(32, 52)  # 20 px right of the centre: angle 0 in image coordinates
    rng = np.random.default_rng(0)
    angles = []
    for _ in range(40):
        r, col = _dot_position(train_transform(img, _pp(30.0), rng))
        assert math.hypot(r - c, col - c) == pytest.approx(20.0, abs=0.6)  # a rotation: the radius is kept
        angles.append(math.degrees(math.atan2(-(r - c), col - c)))  # counter-clockwise on screen positive
    assert max(abs(a) for a in angles) <= 30.5
    assert min(angles) < -10 and max(angles) > 10  # both directions are drawn


def test_uncovered_corners_get_the_mean_colour_and_zero_rotation_changes_nothing():
    img = np.full((SIZE, SIZE, 3), 255, np.uint8)
    rng = np.random.default_rng(1)
    mean = np.array([round(255 * v) for v in Preprocessing().mean], np.uint8)  # (124, 116, 104)
    corners_filled = 0
    for _ in range(20):
        out = train_transform(img, _pp(90.0), rng)
        assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
        assert (out[32, 32] == 255).all()  # the centre stays
        corners_filled += int((out[0, 0] == mean).all())
    assert corners_filled >= 10  # any turn beyond a few degrees uncovers the corner
    unrotated = train_transform(_dot_image(32, 52), _pp(0.0), np.random.default_rng(2))
    assert _dot_position(unrotated) == pytest.approx((32.0, 52.0), abs=1e-6)


def test_rotation_is_saved_with_the_model_and_old_files_read_as_none():
    pp = Preprocessing.for_size(288, rotate=90)
    d = pp.to_dict()
    assert "rotation up to ±90°" in d["description"]
    assert Preprocessing.from_dict(d).rotate == 90.0
    del d["rotate"]  # a model.json written before the option
    assert Preprocessing.from_dict(d).rotate == 0.0
    assert "rotation" not in Preprocessing.for_size(288).to_dict()["description"]
