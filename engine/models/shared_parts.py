"""Shared parts: PDiscoNet (van der Klis et al., "PDiscoNet: Semantically consistent part discovery for
fine-grained recognition", ICCV 2023, arXiv 2309.03173), as docs/METHODS.md#shared-parts describes it.

K parts shared by all classes plus a background part. On the fine features z (C × h × w, see
:mod:`engine.models.fine`), K+1 prototypes p_k (the weights of a bias-free 1×1 convolution) give the logit
−‖z_ij − p_k‖² = −‖z_ij‖² + 2 z_ij·p_k − ‖p_k‖² of part k at pixel ij; a softmax over the K+1 parts at each pixel
gives maps a_k that sum to 1 (the last one is the background). Part vectors v_k = (1/hw) Σ_ij a_k,ij z_ij; each
is multiplied by its column of a learnable modulation (C × (K+1), initialised to ones), whole part vectors are
dropped while training, and one bias-free linear layer scores every part. Image logits: mean over the K foreground
parts' scores.

Part dropout: ``nn.Dropout1d`` semantics on the part axis, as the authors' code: per sample, each part vector is
zeroed with probability p and the kept ones are scaled by 1/(1 − p); the image logits still average over all K
parts (dropped ones contribute 0), so training logits equal evaluation logits in expectation. The background
part is never scored, so the background column of the modulation receives no gradient (kept for the authors'
(C, K+1) shape).

Zoom to the bird (``zoom`` > 0; the "look closer" of RA-CNN and TASN applied to shared parts,
docs/METHODS.md#zoom): a first pass, without gradient and with BatchNorm on its running statistics, finds the bird
as the cells where one minus the background map exceeds half its maximum (:func:`bird_squares`); the photo is cut
to the square around them, widened by ``zoom`` of its side on each side, and run again at the full input size. The
part vectors and logits come from that second pass. The maps are put back on the photo's own grid
(:meth:`SharedPartsNet.to_frame`, at twice the plain grid's resolution, background outside the square), so every
consumer (evaluate, export, Explore, the guide) sees maps in the photo's coordinates. Training computes its losses
on the zoomed input (:class:`engine.losses.parts.PartsCriterion`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError

#: The zoomed square's side is at least this share of the photo's (at most 2.5× zoom): a background map that
#: finds a speck does not blow it up.
ZOOM_MIN_SIDE = 0.4
#: The zoomed maps go back onto the photo's grid at this many times the plain grid's resolution, so the detail
#: the zoom adds is not thrown away.
FRAME_SCALE = 2

# the authors' CUB learning rates relative to the base rate 1e-4: backbone and prototypes ×1, classifier ×10,
# modulation ×100 (Adam; the released main.py)
AUTHORS_BASE_LR = 1e-4
LR_SCALES = {"backbone": 1.0, "classifier": 10.0, "modulation": 100.0}


class PartsOutput(NamedTuple):
    """Everything one forward pass computes. ``part_vectors`` are the unmodulated v_k (the orthogonality loss
    uses them); ``part_logits`` the foreground parts' class scores (after modulation and, while training,
    part dropout)."""

    maps: torch.Tensor  # (B, K+1, h, w), softmax over parts, last = background
    part_vectors: torch.Tensor  # (B, K+1, C)
    part_logits: torch.Tensor  # (B, K, classes)
    logits: torch.Tensor  # (B, classes)
    squares: torch.Tensor | None = None  # (B, 3) zoom squares (cx, cy, half side) in [-1, 1] coordinates, or None


def bird_squares(foreground: torch.Tensor, margin: float, min_side: float = ZOOM_MIN_SIDE) -> torch.Tensor:
    """The square to zoom to, per image, from a foreground map (B, h, w) (one minus the background part):
    (cx, cy, s) with centre and half side in ``F.affine_grid``'s [-1, 1] coordinates of each axis (so the square
    is a square in pixels only on a square input; its zoom is the same on both axes either way).

    The cells above half the image's maximum make a box; its longer side, widened by ``margin`` of itself on each
    side, is the square's side, at least ``min_side`` and at most the whole photo; the square is moved inside the
    photo. An image with no foreground (maximum ≤ 0) keeps the whole photo."""
    b, h, w = foreground.shape
    fg = foreground.detach().float()
    peak = fg.flatten(1).amax(dim=1)
    mask = fg > 0.5 * peak.view(b, 1, 1)
    ys = (torch.arange(h, device=fg.device, dtype=torch.float32) + 0.5) * (2.0 / h) - 1.0
    xs = (torch.arange(w, device=fg.device, dtype=torch.float32) + 0.5) * (2.0 / w) - 1.0
    rows, cols = mask.any(dim=2), mask.any(dim=1)  # (B, h), (B, w)
    big = torch.tensor(4.0, device=fg.device)
    y0 = torch.where(rows, ys, big).amin(dim=1) - 1.0 / h
    y1 = torch.where(rows, ys, -big).amax(dim=1) + 1.0 / h
    x0 = torch.where(cols, xs, big).amin(dim=1) - 1.0 / w
    x1 = torch.where(cols, xs, -big).amax(dim=1) + 1.0 / w
    half = torch.maximum(x1 - x0, y1 - y0) * (0.5 + margin)
    half = half.clamp(min=min_side, max=1.0)
    cx = torch.maximum(torch.minimum((x0 + x1) / 2, 1.0 - half), half - 1.0)
    cy = torch.maximum(torch.minimum((y0 + y1) / 2, 1.0 - half), half - 1.0)
    whole = ~(peak > 0) | ~rows.any(dim=1)
    out = torch.stack((cx, cy, half), dim=1)
    return torch.where(whole.view(b, 1), torch.tensor([0.0, 0.0, 1.0], device=fg.device), out)


def zoom_in(x: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
    """The squares (B, 3) of ``x`` (B, C, H, W), each resampled (bilinear) to H × W."""
    cx, cy, s = squares.to(x.dtype).unbind(1)
    zero = torch.zeros_like(s)
    theta = torch.stack((torch.stack((s, zero, cx), 1), torch.stack((zero, s, cy), 1)), 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_frame(maps: torch.Tensor, squares: torch.Tensor, size: tuple[int, int] | None = None,
             background: bool = False) -> torch.Tensor:
    """Maps (B, M, h, w) computed on :func:`zoom_in`'s squares, put back on the photo's grid: (B, M, *size)
    (default ``FRAME_SCALE`` × (h, w)). Outside the square the maps are 0; with ``background`` the last map is 1
    there instead, so softmax maps still sum to 1 at every cell."""
    b, m, h, w = maps.shape
    size = size or (FRAME_SCALE * h, FRAME_SCALE * w)
    cx, cy, s = squares.to(maps.dtype).unbind(1)
    zero = torch.zeros_like(s)
    inv = torch.stack((torch.stack((1 / s, zero, -cx / s), 1), torch.stack((zero, 1 / s, -cy / s), 1)), 1)
    grid = F.affine_grid(inv, [b, m, *size], align_corners=False)
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if background:
        inside = F.grid_sample(maps.new_ones(b, 1, h, w), grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        out = torch.cat((out[:, :-1], out[:, -1:] + (1.0 - inside)), dim=1)
    return out


class SharedPartsNet(nn.Module):
    """PDiscoNet head on a feature extractor returning (B, C, h, w).

    ``gumbel``: PDiscoFormer's option (Aniraj et al., ECCV 2024) — while training, the maps are a Gumbel-softmax
    (temperature 1, soft) of the part logits instead of their softmax; evaluation always uses the softmax.
    """

    def __init__(self, backbone: nn.Module, width: int, stride: int, num_classes: int, parts: int = 8,
                 part_dropout: float = 0.3, gumbel: bool = False, zoom: float = 0.0):
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
        if parts < 1:
            raise ConfigError(f"parts={parts}: the method needs at least one foreground part (the paper uses 4-16)")
        if not 0.0 <= part_dropout < 1.0:
            raise ConfigError(f"part_dropout={part_dropout}: use a probability in [0, 1) (the paper uses 0.3)")
        if not 0.0 <= zoom <= 1.0:
            raise ConfigError(f"zoom={zoom}: use 0 (off) or the margin around the bird, a share of its side in "
                              "(0, 1] (e.g. 0.15)")
        self.backbone = backbone
        self.width, self.stride = width, stride
        self.num_classes, self.parts = num_classes, parts
        self.part_dropout, self.gumbel, self.zoom = float(part_dropout), gumbel, float(zoom)
        self.prototypes = nn.Conv2d(width, parts + 1, 1, bias=False)
        self.modulation = nn.Parameter(torch.ones(width, parts + 1))
        self.fc = nn.Linear(width, num_classes, bias=False)

    # -- the pieces -------------------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The fine features z (B, C, h, w)."""
        return self.backbone(x)

    def part_logit_maps(self, z: torch.Tensor) -> torch.Tensor:
        """−‖z_ij − p_k‖² (B, K+1, h, w), written as −‖z‖² + 2 z·p_k − ‖p_k‖²."""
        w = self.prototypes.weight  # (K+1, C, 1, 1)
        zp = self.prototypes(z)
        z_sq = z.pow(2).sum(dim=1, keepdim=True)
        p_sq = w.pow(2).sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
        return 2.0 * zp - z_sq - p_sq

    def part_maps(self, z: torch.Tensor) -> torch.Tensor:
        """Part maps a (B, K+1, h, w): softmax over the K+1 parts at each pixel."""
        logits = self.part_logit_maps(z)
        if self.gumbel and self.training:
            return F.gumbel_softmax(logits, tau=1.0, hard=False, dim=1)
        return logits.softmax(dim=1)

    @staticmethod
    def part_vectors(maps: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """v_k = (1/hw) Σ_ij a_k,ij z_ij: (B, K+1, C)."""
        return torch.einsum("bkhw,bchw->bkc", maps, z) / (maps.shape[-2] * maps.shape[-1])

    def score_parts(self, vectors: torch.Tensor) -> torch.Tensor:
        """Class scores of the K foreground parts (B, K, classes): modulation, part dropout (training), linear."""
        fg = vectors[:, :self.parts] * self.modulation[:, :self.parts].t().unsqueeze(0)
        if self.training and self.part_dropout > 0:
            fg = F.dropout1d(fg, self.part_dropout, training=True)  # (B, K, C): whole part vectors
        return self.fc(fg)

    # -- zoom to the bird -------------------------------------------------------------------------------------
    def locate(self, x: torch.Tensor) -> torch.Tensor:
        """The squares to zoom to (B, 3): a pass without gradient, every module in eval mode (BatchNorm on its
        running statistics, no Gumbel noise), then :func:`bird_squares` of one minus the background map."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            with torch.no_grad():
                background = self.part_maps(self.embed(x))[:, -1]
        finally:
            for m, mode in modes:
                m.training = mode
        return bird_squares(1.0 - background, self.zoom)

    def zoomed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the input the parts see, the squares): ``x`` zoomed to the bird, or ``x`` itself and None without
        zoom."""
        if not self.zoom:
            return x, None
        squares = self.locate(x)
        return zoom_in(x, squares), squares

    def to_frame(self, maps: torch.Tensor, squares: torch.Tensor | None) -> torch.Tensor:
        """Part maps (B, K+1, h, w) of the zoomed input on the photo's grid (the maps themselves without zoom)."""
        return maps if squares is None else to_frame(maps, squares, background=True)

    # -- the model interface ------------------------------------------------------------------------------------
    def forward_parts(self, x: torch.Tensor, zoom: bool = True) -> PartsOutput:
        """Maps (on the photo's grid), part vectors and logits; ``zoom=False``: of ``x`` as it is (what training
        uses on its already zoomed batch)."""
        x, squares = self.zoomed(x) if zoom else (x, None)
        z = self.embed(x)
        maps = self.part_maps(z)
        vectors = self.part_vectors(maps, z)
        part_logits = self.score_parts(vectors)
        return PartsOutput(self.to_frame(maps, squares), vectors, part_logits, part_logits.mean(dim=1), squares)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(x).logits

    def forward_features(self, x: torch.Tensor, zoom: bool = True) -> torch.Tensor:
        """The part maps (B, K+1, h, w), background last: what the application shows and §4 scores (on the
        photo's grid, :meth:`to_frame`, when the model zooms)."""
        x, squares = self.zoomed(x) if zoom else (x, None)
        return self.to_frame(self.part_maps(self.embed(x)), squares)

    def forward_head(self, maps: torch.Tensor, z: torch.Tensor | None = None,
                     pre_logits: bool = False) -> torch.Tensor:
        """Logits (B, classes) from the maps and the fine features z (``embed(x)``) they were computed on;
        ``pre_logits``: the modulated foreground part vectors (B, K, C) instead. Unlike a pooled CNN head, the
        part vectors need z as well as the maps: call ``z = model.embed(x); maps = model.part_maps(z)``, on
        ``x = model.zoomed(x)[0]`` when the model zooms (the maps are then the zoomed input's)."""
        if z is None:
            raise ConfigError("SharedPartsNet.forward_head needs the fine features z as well as the maps: "
                              "z = model.embed(x); model.forward_head(model.part_maps(z), z)")
        vectors = self.part_vectors(maps, z)
        if pre_logits:
            return vectors[:, :self.parts] * self.modulation[:, :self.parts].t().unsqueeze(0)
        return self.score_parts(vectors).mean(dim=1)

    def param_groups(self, base_lr: float = AUTHORS_BASE_LR, two_groups: bool = False
                     ) -> list[dict[str, Any]] | tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The authors' three learning rates: a list of optimizer groups ``{"name", "params", "lr_scale", "lr"}``
        with lr = base_lr × lr_scale: backbone and prototypes ×1 (1e-4), classifier ×10 (1e-3), modulation ×100
        (1e-2). Usable as is: ``torch.optim.Adam(model.param_groups())`` (extra keys are kept by torch).

        ``two_groups=True``: the registry's ``(backbone params, head params)`` convention instead, prototypes
        with the backbone and classifier + modulation as the head (the modulation then loses its ×10 over the
        classifier)."""
        backbone = list(self.backbone.parameters()) + list(self.prototypes.parameters())
        if two_groups:
            return backbone, list(self.fc.parameters()) + [self.modulation]
        return [{"name": "backbone", "params": backbone, "lr_scale": LR_SCALES["backbone"],
                 "lr": base_lr * LR_SCALES["backbone"]},
                {"name": "classifier", "params": list(self.fc.parameters()), "lr_scale": LR_SCALES["classifier"],
                 "lr": base_lr * LR_SCALES["classifier"]},
                {"name": "modulation", "params": [self.modulation], "lr_scale": LR_SCALES["modulation"],
                 "lr": base_lr * LR_SCALES["modulation"]}]


def has_shared_parts(model: nn.Module) -> bool:
    """A shared-parts model: its maps are its K parts (+ background), the same for every class."""
    return hasattr(model, "forward_parts")


__all__ = ["AUTHORS_BASE_LR", "LR_SCALES", "ZOOM_MIN_SIDE", "FRAME_SCALE", "PartsOutput", "SharedPartsNet",
           "bird_squares", "zoom_in", "to_frame", "has_shared_parts"]
