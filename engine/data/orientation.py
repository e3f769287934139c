"""Where a decoded image's pixels come from in its file: the EXIF/TIFF orientation applied and the scale of a reduced
decode, as one :class:`ImageInfo` that maps points and boxes both ways.

Frames. The *file frame* is the pixel grid stored in the file at full resolution, before any orientation. Fieldmark
reads a data set's boxes and keypoints (CUB's bounding_boxes.txt, part_locs.txt) in it, the grid that PIL's
``Image.open`` and the browsers of CUB's time show, and an export writes its coordinates in it. The *image frame* is
the RGB array :func:`engine.data.imageio.load_image` returns: oriented upright, maybe reduced. Points have pixel
centres at integers; boxes are edge coordinates, (x0, y0, x1, y1) in [0, W] × [0, H].

Orientation values (TIFF 6.0 tag 274, as EXIF): 1 as stored; 2 mirrored left-right; 3 turned 180°; 4 mirrored
top-bottom; 5 transposed (mirrored across the main diagonal); 6 turned 90° clockwise to view; 7 transversed; 8 turned
90° counter-clockwise to view. Applying one: first transpose (5-8), then mirror in the transposed frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# orientation → (transpose, mirror x, mirror y), applied in that order
_STEPS = {1: (False, False, False), 2: (False, True, False), 3: (False, True, True), 4: (False, False, True),
          5: (True, False, False), 6: (True, True, False), 7: (True, True, True), 8: (True, False, True)}


def orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """``img`` (H, W, ...) as it is meant to be viewed under ``orientation`` (1-8)."""
    swap, fx, fy = _STEPS.get(orientation, _STEPS[1])
    if swap:
        img = img.swapaxes(0, 1)
    if fx:
        img = img[:, ::-1]
    if fy:
        img = img[::-1]
    return np.ascontiguousarray(img)


@dataclass(frozen=True)
class ImageInfo:
    """How a decoded image relates to its file: ``file_size`` (width, height) stored, ``orientation`` applied,
    ``size`` (width, height) returned."""

    file_size: tuple[int, int]
    orientation: int
    size: tuple[int, int]

    @property
    def oriented_size(self) -> tuple[int, int]:
        """(width, height) of the file's grid once oriented, at full resolution."""
        w, h = self.file_size
        return (h, w) if _STEPS[self.orientation][0] else (w, h)

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy): image pixels per oriented file pixel (below 1 for a reduced decode)."""
        (ow, oh), (w, h) = self.oriented_size, self.size
        return w / ow, h / oh

    @property
    def identity(self) -> bool:
        return self.orientation == 1 and tuple(self.size) == tuple(self.file_size)

    def points_to_image(self, xy: np.ndarray | Sequence) -> np.ndarray:
        """File-frame points (..., 2) → image-frame points."""
        p = np.array(xy, dtype=np.float64)
        x, y = p[..., 0].copy(), p[..., 1].copy()
        swap, fx, fy = _STEPS[self.orientation]
        if swap:
            x, y = y, x
        ow, oh = self.oriented_size
        if fx:
            x = ow - 1 - x
        if fy:
            y = oh - 1 - y
        sx, sy = self.scale
        p[..., 0], p[..., 1] = (x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5
        return p

    def points_to_file(self, xy: np.ndarray | Sequence) -> np.ndarray:
        """Image-frame points (..., 2) → file-frame points."""
        p = np.array(xy, dtype=np.float64)
        sx, sy = self.scale
        x, y = (p[..., 0] + 0.5) / sx - 0.5, (p[..., 1] + 0.5) / sy - 0.5
        swap, fx, fy = _STEPS[self.orientation]
        ow, oh = self.oriented_size
        if fx:
            x = ow - 1 - x
        if fy:
            y = oh - 1 - y
        if swap:
            x, y = y, x
        p[..., 0], p[..., 1] = x, y
        return p

    def box_to_image(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """A file-frame box (x0, y0, x1, y1) in edge coordinates → the image frame."""
        return _box(self.points_to_image, box)

    def box_to_file(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """An image-frame box (x0, y0, x1, y1) in edge coordinates → the file frame."""
        return _box(self.points_to_file, box)

    def xywh_to_image(self, bbox: Sequence[float] | None) -> tuple[float, float, float, float] | None:
        """A data set's bird box (x0, y0, w, h) → the same form in the image frame (None stays None)."""
        if bbox is None:
            return None
        x0, y0, x1, y1 = self.box_to_image((bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]))
        return x0, y0, x1 - x0, y1 - y0

    def keypoints_to_image(self, kps: np.ndarray | None) -> np.ndarray | None:
        """(P, 3) or (N, P, 3) x, y, visible keypoints → the image frame (visibility kept; None stays None)."""
        if kps is None:
            return None
        out = np.array(kps, dtype=np.float64)
        out[..., :2] = self.points_to_image(out[..., :2])
        return out


def _box(fn, box: Sequence[float]) -> tuple[float, float, float, float]:
    corners = fn(np.array([[box[0], box[1]], [box[2], box[3]]], np.float64) - 0.5) + 0.5
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


__all__ = ["ImageInfo", "orient"]
