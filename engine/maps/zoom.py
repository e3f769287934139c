"""RA-CNN's zoom views of a photo (Fu, Zheng, Mei, "Look Closer to See Better", CVPR 2017; docs/METHODS.md#racnn):
the squares of scales 2 and 3 in the photo's pixels, and each square cut from the photo at full resolution and
zoomed to one side, with the sampling grid that maps a point of a zoomed view back to the photo
(:func:`engine.models.sampler.resampled_to_original`, the same convention as TASN's views)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.data.transforms import Preprocessing
from engine.errors import ConfigError


@dataclass
class ZoomViews:
    """``squares`` (2, 3): scales 2 and 3's (tx, ty, tl) as fractions of the photo's sides (the model sees the whole
    photo resized to a square, so a square of its input is a rectangle of a photo that is not square);
    ``crops`` the two zoomed views (S, S, 3) uint8; ``grids`` their sampling grids (S, S, 2) in
    ``grid_sample``'s align_corners=True coordinates of the photo; ``in_size`` the photo's (H, W)."""

    squares: np.ndarray
    crops: list[np.ndarray]
    grids: list[torch.Tensor]
    in_size: tuple[int, int]

    def boxes(self) -> list[tuple[float, float, float, float]]:
        """Each square as (x0, y0, x1, y1) in the photo's pixel-edge coordinates (the photo spans 0..W, 0..H)."""
        h, w = self.in_size
        return [(float((tx - tl) * w), float((ty - tl) * h), float((tx + tl) * w), float((ty + tl) * h))
                for tx, ty, tl in self.squares.tolist()]

    def to_dict(self) -> dict[str, Any]:
        """The squares as the ``explain`` JSON writes them: centre (pixel centres, x = col), half sides and box."""
        h, w = self.in_size
        out = []
        for scale, ((tx, ty, tl), box) in enumerate(zip(self.squares.tolist(), self.boxes()), start=2):
            out.append({"scale": scale, "centre": [tx * w - 0.5, ty * h - 0.5], "half_side": [tl * w, tl * h],
                        "box": list(box), "normalised": [tx, ty, tl]})
        return {"size": list(self.in_size), "squares": out}


def square_grid(square: np.ndarray | torch.Tensor, in_size: tuple[int, int], side: int) -> torch.Tensor:
    """The (side, side, 2) grid (align_corners=True) that zooms ``square`` (tx, ty, tl) of a photo of ``in_size``:
    output pixel j samples the photo at (tx − tl)·W + (j + ½)·2·tl·W/side − ½ (pixel centres)."""
    h, w = in_size
    tx, ty, tl = (float(v) for v in np.asarray(square, np.float64))
    j = (torch.arange(side, dtype=torch.float64) + 0.5) / side
    xs = (tx - tl + 2 * tl * j) * w - 0.5
    ys = (ty - tl + 2 * tl * j) * h - 0.5
    gx = xs / max(w - 1, 1) * 2 - 1
    gy = ys / max(h - 1, 1) * 2 - 1
    return torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).float()


def views_of(image: np.ndarray, squares: np.ndarray | torch.Tensor, side: int) -> ZoomViews:
    """The zoom views of ``image`` (RGB uint8 (H, W, 3)) for ``squares`` (2, 3), each ``side`` pixels square."""
    if side < 1:
        raise ConfigError(f"zoom view side={side}: use at least 1 pixel")
    sq = np.asarray(torch.as_tensor(squares).detach().float().cpu(), np.float32).reshape(-1, 3)
    h, w = image.shape[:2]
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    crops, grids = [], []
    for square in sq:
        grid = square_grid(square, (h, w), side)
        out = F.grid_sample(img, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        crops.append(out.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy())
        grids.append(grid)
    return ZoomViews(sq, crops, grids, (h, w))


def zoom_views(model: nn.Module, image: np.ndarray, preprocessing: Preprocessing,
               side: int | None = None) -> ZoomViews:
    """The squares ``model`` (an RA-CNN) zooms into on ``image`` under the explanation input convention (whole
    photo resized, no crop) and their zoom views, ``side`` pixels square (default: the model's input size)."""
    from engine.maps.explain import model_device, prepare, session

    if not hasattr(model, "zoom_squares"):
        raise ConfigError(f"zoom views need an RA-CNN model (racnn_<backbone>, trained with --method racnn); "
                          f"{type(model).__name__} is not one")
    with session(model), torch.no_grad():
        squares = model.zoom_squares(prepare([image], preprocessing, model_device(model)))[0]
    return views_of(image, squares, int(side or preprocessing.img_size))


__all__ = ["ZoomViews", "zoom_views", "views_of", "square_grid"]
