"""TASN's resampled views of an image for any explanation map (Zheng et al., "Looking for the Devil in the
Details: Learning Trilinear Attention Sampling Network for Fine-grained Image Recognition", CVPR 2019, §3.2),
through :mod:`engine.models.sampler`. Re-exported by :mod:`engine.maps.explain`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import ConfigError


@dataclass
class ResampledViews:
    """TASN's two views of one image (Zheng et al., CVPR 2019, §3.2) for a given map: ``structure`` (S, S, 3)
    uint8 resampled by the squared map, ``detail`` by the map itself, with the sampling grids (S, S, 2) that
    :func:`engine.models.sampler.resampled_to_original` / ``box_to_original`` use to map points back (``in_size``)."""

    structure: np.ndarray
    detail: np.ndarray
    structure_grid: torch.Tensor
    detail_grid: torch.Tensor
    in_size: tuple[int, int]


def resampled_views(image: np.ndarray, attention_map: np.ndarray | torch.Tensor, out_size: int | None = None,
                    dense: float = 4.0) -> ResampledViews:
    """Structure- and detail-preserved views of ``image`` (RGB uint8 (H, W, 3)) through the TASN sampler, driven
    by any map of this module (e.g. ``MapSet.maps[k]``, a CCMP or Grad-CAM map). A map of another size is resized
    to the image first (bilinear). ``out_size`` defaults to the image's shorter side."""
    import engine.models.sampler as sampler

    h, w = image.shape[:2]
    att = torch.as_tensor(np.asarray(attention_map, dtype=np.float32))
    if att.dim() != 2:
        raise ConfigError(f"attention_map must be one (H, W) map; got shape {tuple(att.shape)}")
    if tuple(att.shape) != (h, w):
        att = F.interpolate(att[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    att = att.clamp_min(0.0)[None]
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    s = int(out_size or min(h, w))
    views = []
    for fn, a in ((sampler.structure_preserved, att * att), (sampler.detail_preserved, att)):
        out, grid = fn(img, a, s, dense)
        views.append((out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy(), grid[0]))
    return ResampledViews(views[0][0], views[1][0], views[0][1], views[1][1], (h, w))


__all__ = ["ResampledViews", "resampled_views"]
