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
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError

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


class SharedPartsNet(nn.Module):
    """PDiscoNet head on a feature extractor returning (B, C, h, w).

    ``gumbel``: PDiscoFormer's option (Aniraj et al., ECCV 2024) — while training, the maps are a Gumbel-softmax
    (temperature 1, soft) of the part logits instead of their softmax; evaluation always uses the softmax.
    """

    def __init__(self, backbone: nn.Module, width: int, stride: int, num_classes: int, parts: int = 8,
                 part_dropout: float = 0.3, gumbel: bool = False):
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
        if parts < 1:
            raise ConfigError(f"parts={parts}: the method needs at least one foreground part (the paper uses 4-16)")
        if not 0.0 <= part_dropout < 1.0:
            raise ConfigError(f"part_dropout={part_dropout}: use a probability in [0, 1) (the paper uses 0.3)")
        self.backbone = backbone
        self.width, self.stride = width, stride
        self.num_classes, self.parts = num_classes, parts
        self.part_dropout, self.gumbel = float(part_dropout), gumbel
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

    # -- the model interface ------------------------------------------------------------------------------------
    def forward_parts(self, x: torch.Tensor) -> PartsOutput:
        z = self.embed(x)
        maps = self.part_maps(z)
        vectors = self.part_vectors(maps, z)
        part_logits = self.score_parts(vectors)
        return PartsOutput(maps, vectors, part_logits, part_logits.mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(x).logits

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The part maps (B, K+1, h, w), background last: what the application shows and §4 scores."""
        return self.part_maps(self.embed(x))

    def forward_head(self, maps: torch.Tensor, z: torch.Tensor | None = None,
                     pre_logits: bool = False) -> torch.Tensor:
        """Logits (B, classes) from the maps and the fine features z (``embed(x)``) they were computed on;
        ``pre_logits``: the modulated foreground part vectors (B, K, C) instead. Unlike a pooled CNN head, the
        part vectors need z as well as the maps: call ``z = model.embed(x); maps = model.part_maps(z)``."""
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


__all__ = ["AUTHORS_BASE_LR", "LR_SCALES", "PartsOutput", "SharedPartsNet", "has_shared_parts"]
