"""The shared-parts losses of PDiscoNet (van der Klis et al., ICCV 2023, arXiv 2309.03173) as
docs/METHODS.md#shared-parts states them, the optional PDiscoFormer terms (Aniraj et al., ECCV 2024), and
:class:`PartsCriterion`, called as every engine criterion: ``criterion(model, images, targets) -> (total, parts)``.

Maps are (B, K+1, h, w) with the background last; part vectors (B, K+1, C), unmodulated.

Equivariance, geometry. One similarity transform per batch is drawn and expressed in the normalised coordinates
of ``affine_grid`` (x right, y down, [-1, 1] across the frame, ``align_corners=False``), with the rotation done
in pixel units so that it stays a rotation on non-square images. The same normalised transform then applies to
the images and to any grid of maps, so the translation (±50 px at 448 px) scales with the image and the maps by
itself. The maps of the transformed pass are sampled back at T(ij) for every pixel ij of the original grid.

Equivariance, out-of-frame regions. A pixel ij whose T(ij) falls outside the transformed frame has no
counterpart: the authors' code compares it with zero fill (so the loss cannot reach 0 for an exactly equivariant
model and pushes foreground parts away from whatever leaves the frame). Here those pixels are masked out of
both maps before the cosine similarity (``mask_out_of_frame=True``, the default); ``False`` gives the authors'
zero fill. The transformed images themselves are zero-filled outside the original frame (as the authors').
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# ±50 px at 448 px, as a fraction of the half-size (normalised coordinates)
_MAX_TRANSLATE = 50.0 / (448 / 2)


# -- PDiscoNet's four priors ------------------------------------------------------------------------------------
def spread(maps: torch.Tensor) -> torch.Tensor:
    """Σ_ij a_k,ij · ‖(ij − c_k) / (h, w)‖² of maps (B, K, h, w) ≥ 0: (B, K). c_k is the map's centroid with its
    denominator Σ_ij a_k,ij detached (as the authors). Rows are divided by h and columns by w (the authors divide
    rows by w and columns by h: the same on square grids)."""
    h, w = maps.shape[-2:]
    rows = torch.arange(h, dtype=maps.dtype, device=maps.device).view(1, 1, h, 1)
    cols = torch.arange(w, dtype=maps.dtype, device=maps.device).view(1, 1, 1, w)
    mass = maps.sum(dim=(2, 3), keepdim=True).detach().clamp_min(1e-12)
    c_row = (maps * rows).sum(dim=(2, 3), keepdim=True) / mass
    c_col = (maps * cols).sum(dim=(2, 3), keepdim=True) / mass
    dist = ((rows - c_row) / h) ** 2 + ((cols - c_col) / w) ** 2
    return (dist * maps).sum(dim=(2, 3))


def concentration_loss(maps: torch.Tensor) -> torch.Tensor:
    """:func:`spread` of the K foreground parts, averaged over batch, parts and the h·w pixels."""
    fg = maps[:, :-1]
    return spread(fg).mean() / (fg.shape[-2] * fg.shape[-1])


def orthogonality_loss(part_vectors: torch.Tensor) -> torch.Tensor:
    """Mean of the squares of (cosine-similarity matrix − I) of the K+1 part vectors of each sample."""
    n = F.normalize(part_vectors, dim=2)
    sim = n @ n.transpose(1, 2)
    eye = torch.eye(sim.shape[-1], dtype=sim.dtype, device=sim.device)
    return (sim - eye).pow(2).mean()


def presence_loss(maps: torch.Tensor, border: int = 2, include_background: bool = True) -> torch.Tensor:
    """1 − mean over parts of max over batch of max over space of the 3×3 average (stride 1) of each map after a
    ``border``-cell crop. The authors' PDiscoNet code takes all K+1 maps (background included, the default);
    PDiscoFormer only the K foreground ones. Grids too small for the crop and the 3×3 window get a thinner crop,
    then a smaller window."""
    m = maps if include_background else maps[:, :-1]
    size = min(m.shape[-2:])
    border = max(0, min(border, (size - 3) // 2))
    if border:
        m = m[:, :, border:-border, border:-border]
    k = min(3, *m.shape[-2:])
    pooled = F.avg_pool2d(m, k, stride=1)
    return 1.0 - pooled.amax(dim=(2, 3)).amax(dim=0).mean()


@dataclass(frozen=True)
class Similarity:
    """A similarity transform about the frame centre: ``angle`` in degrees (positive turns clockwise on screen,
    y pointing down), ``translate`` (x, y) in normalised units (1 = half the width / height), ``scale`` > 1
    enlarges the content."""

    angle: float = 0.0
    translate: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0

    def thetas(self, height: int, width: int, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward, inverse) 2×3 matrices in normalised coordinates for a ``height`` × ``width`` frame: forward
        maps a point of the original frame to its place in the transformed one."""
        a = math.radians(self.angle)
        c, s = math.cos(a), math.sin(a)
        ratio = height / width  # rotation in pixel units: D⁻¹ R D with D = diag(w/2, h/2)
        lin = torch.tensor([[c, -s * ratio], [s / ratio, c]], dtype=torch.float64) * self.scale
        t = torch.tensor(self.translate, dtype=torch.float64).view(2, 1)
        inv = torch.linalg.inv(lin)
        fwd = torch.cat((lin, t), dim=1)
        back = torch.cat((inv, -inv @ t), dim=1)
        return fwd.to(dtype=dtype, device=device), back.to(dtype=dtype, device=device)


def random_similarity(generator: torch.Generator | None = None, max_angle: float = 90.0,
                      max_translate: float = _MAX_TRANSLATE, scale: tuple[float, float] = (0.8, 1.4)) -> Similarity:
    """The authors' draw: angle in [−90°, 90°), translation up to ±50 px at 448 px on each axis (as a fraction
    of the half-size: the same share of any image), scale in [0.8, 1.4). Uses torch's global RNG unless a
    ``generator`` is given, so ``torch.manual_seed`` makes it deterministic."""
    r = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    return Similarity(angle=max_angle * (2 * r[0] - 1),
                      translate=(max_translate * (2 * r[1] - 1), max_translate * (2 * r[2] - 1)),
                      scale=scale[0] + (scale[1] - scale[0]) * r[3])


def _grid(theta: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.affine_grid(theta.unsqueeze(0).expand(like.shape[0], 2, 3), list(like.shape), align_corners=False)


def transform_images(images: torch.Tensor, sim: Similarity) -> torch.Tensor:
    """``images`` (B, C, H, W) seen through ``sim`` (bilinear; zero outside the original frame)."""
    _, back = sim.thetas(*images.shape[-2:], dtype=images.dtype, device=images.device)
    return F.grid_sample(images, _grid(back, images), mode="bilinear", padding_mode="zeros", align_corners=False)


def transform_back(maps_t: torch.Tensor, sim: Similarity, image_size: tuple[int, int] | None = None,
                   zero_fill: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps computed on transformed images, brought back to the original frame: (maps (B, K, h, w), valid (B, 1,
    h, w) bool: where T(ij) lies inside the transformed frame). ``image_size`` (H, W) fixes the aspect ratio of
    the rotation (default: the maps'). Outside the frame: border values, or zeros with ``zero_fill``."""
    fwd, _ = sim.thetas(*(image_size or maps_t.shape[-2:]), dtype=maps_t.dtype, device=maps_t.device)
    grid = _grid(fwd, maps_t)
    back = F.grid_sample(maps_t, grid, mode="bilinear", padding_mode="zeros" if zero_fill else "border",
                         align_corners=False)
    valid = (grid.abs() <= 1.0).all(dim=-1).unsqueeze(1)
    return back, valid


def equivariance_loss(maps: torch.Tensor, maps_t: torch.Tensor, sim: Similarity,
                      image_size: tuple[int, int] | None = None, mask_out_of_frame: bool = True) -> torch.Tensor:
    """1 − mean over batch and foreground parts of the cosine similarity between the flattened maps of the
    original images (``maps``) and those of the transformed images (``maps_t``) mapped back by the inverse
    transform. Both (B, K+1, h, w); see the module docstring for the masking."""
    back, valid = transform_back(maps_t[:, :-1], sim, image_size, zero_fill=not mask_out_of_frame)
    orig = maps[:, :-1]
    if mask_out_of_frame:
        keep = valid.to(orig.dtype)
        orig, back = orig * keep, back * keep
    cos = F.cosine_similarity(orig.flatten(2), back.flatten(2), dim=2, eps=1e-8)
    return 1.0 - cos.mean()


# -- PDiscoFormer's extras (off by default) --------------------------------------------------------------------
def total_variation_loss(maps: torch.Tensor) -> torch.Tensor:
    """Σ |vertical and horizontal neighbour differences| over all K+1 maps, divided by B·h·w (PDiscoFormer's
    "mean" reduction: per pixel, summed over parts)."""
    dv = (maps[..., 1:, :] - maps[..., :-1, :]).abs().sum()
    dh = (maps[..., :, 1:] - maps[..., :, :-1]).abs().sum()
    return (dv + dh) / (maps.shape[0] * maps.shape[-2] * maps.shape[-1])


def border_background_loss(maps: torch.Tensor) -> torch.Tensor:
    """Background enforced at the image borders (PDiscoFormer's "enforced presence"): the 3×3 average of the
    background map, weighted by the squared distance from the centre (0 at the centre, 1 in the corners), should
    reach 1 somewhere in every image: mean over the batch of −log(max)."""
    bg = F.avg_pool2d(maps[:, -1:], min(3, *maps.shape[-2:]), stride=1)[:, 0]
    h, w = bg.shape[-2:]
    ys = torch.linspace(-1, 1, h, dtype=bg.dtype, device=bg.device).view(h, 1) if h > 1 else bg.new_zeros(1, 1)
    xs = torch.linspace(-1, 1, w, dtype=bg.dtype, device=bg.device).view(1, w) if w > 1 else bg.new_zeros(1, 1)
    r2 = ys ** 2 + xs ** 2
    weight = r2 / r2.max().clamp_min(1e-12)
    peak = (bg * weight).amax(dim=(1, 2))
    return F.binary_cross_entropy(peak.clamp(0.0, 1.0), torch.ones_like(peak))


def pixel_entropy_loss(maps: torch.Tensor) -> torch.Tensor:
    """Entropy of the part distribution at each pixel, −Σ_k a_k log a_k, averaged over batch and pixels."""
    return -torch.special.xlogy(maps, maps).sum(dim=1).mean()


# -- the criterion ------------------------------------------------------------------------------------------------
class PartsCriterion(nn.Module):
    """PDiscoNet's objective with the authors' CUB weights: 2·CE + 1000·concentration + orthogonality +
    equivariance + presence, on a :class:`~engine.models.shared_parts.SharedPartsNet`.

    The equivariance term costs a second forward/backward pass (maps only) on the transformed batch; it is
    skipped when its weight is 0. ``parts`` holds the unweighted, detached terms ('ce', 'conc', 'orth', 'pres',
    'equiv' when computed, and 'tv', 'border', 'entropy' when their weight is not 0). PDiscoFormer's extras:
    ``tv`` (total variation), ``border`` (background at the borders), ``entropy`` (per-pixel entropy); its
    Gumbel-softmax is the model's ``gumbel`` flag. :meth:`pdiscoformer` sets its weights.

    ``equiv_stop_grad``: run the transformed pass without gradient (its maps become a fixed target for the
    original pass): the step then costs a forward instead of a forward + backward more than a CE step. Not
    the authors' (their gradient flows through both passes), so off in this class; training turns it on unless
    ``--equiv-backprop`` (``PARTS_EQUIV_BACKPROP``) and spends the time on a larger image. Measured on
    mobilenet_v2 fine features, batch 16, 224 px, the 2-core CPU: a full step 2.1-2.35× a CE step, with
    ``equiv_stop_grad`` about 1.5× (``benchmarks/bench_train_step.py``).
    """

    def __init__(self, ce: float = 2.0, conc: float = 1000.0, orth: float = 1.0, equiv: float = 1.0,
                 pres: float = 1.0, tv: float = 0.0, border: float = 0.0, entropy: float = 0.0,
                 mask_out_of_frame: bool = True, presence_border: int = 2, presence_background: bool = True,
                 equiv_stop_grad: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        self.weights = {"ce": float(ce), "conc": float(conc), "orth": float(orth), "equiv": float(equiv),
                        "pres": float(pres), "tv": float(tv), "border": float(border), "entropy": float(entropy)}
        self.mask_out_of_frame = mask_out_of_frame
        self.presence_border, self.presence_background = presence_border, presence_background
        self.equiv_stop_grad, self.generator = equiv_stop_grad, generator

    @classmethod
    def pdiscoformer(cls, **overrides: float) -> "PartsCriterion":
        """PDiscoFormer's terms: no concentration; total variation 1, border background 2, entropy 1."""
        return cls(**{"conc": 0.0, "tv": 1.0, "border": 2.0, "entropy": 1.0, **overrides})

    def forward(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        w = self.weights
        if getattr(model, "zoom", 0):  # zoom to the bird: every term is computed on the zoomed batch
            images = model.zoomed(images)[0]
        out = model.forward_parts(images, zoom=False)
        terms = {"ce": F.cross_entropy(out.logits, targets),
                 "conc": concentration_loss(out.maps),
                 "orth": orthogonality_loss(out.part_vectors),
                 "pres": presence_loss(out.maps, self.presence_border, self.presence_background)}
        if w["equiv"]:
            sim = random_similarity(self.generator)
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.equiv_stop_grad):
                maps_t = model.forward_features(transform_images(images, sim), zoom=False)
            terms["equiv"] = equivariance_loss(out.maps, maps_t, sim, tuple(images.shape[-2:]),
                                               self.mask_out_of_frame)
        for name, fn in (("tv", total_variation_loss), ("border", border_background_loss),
                         ("entropy", pixel_entropy_loss)):
            if w[name]:
                terms[name] = fn(out.maps)
        total = sum(w[name] * value for name, value in terms.items())
        return total, {name: value.detach() for name, value in terms.items()}


__all__ = ["spread", "concentration_loss", "orthogonality_loss", "presence_loss", "Similarity", "random_similarity",
           "transform_images", "transform_back", "equivariance_loss", "total_variation_loss",
           "border_background_loss", "pixel_entropy_loss", "PartsCriterion"]
