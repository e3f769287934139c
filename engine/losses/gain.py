"""Self-guided GAIN: attention mining during training (Li, Wu, Peng, Ernst, Fu, "Tell Me Where to Look: Guided
Attention Inference Network", CVPR 2018, arXiv 1802.10171), docs/METHODS.md#gain.

The Grad-CAM of the true class, computed in the training pass and kept in the graph, gives an attention map A,
scaled to [0, 1] per image. A soft mask ``T(A) = sigmoid(ω (A − σ))`` erases what the network attends to:
``I* = I − T(A) ⊙ I``. The attention-mining loss L_am is the mean true-class score on I*; the total is
``L_cls + α L_am``. Minimising L_am through A asks the attention to cover *all* the evidence of the class, so that
nothing of it is left outside the erased region, not only the most discriminative spot.

Choices where the paper leaves room:

* the score s^c(I*) is the softmax probability of the true class (the paper's multi-label classifier scores are
  sigmoids; a raw logit could be driven to −∞ on erased photos without moving the attention);
* A is Grad-CAM on the features the ``gradcam`` map method uses (the part channels of a PartNet; the part maps of
  a shared-parts model), taken with ``create_graph=True`` so that L_am reaches the weights through both the
  features and the Grad-CAM weights. That second-order term only runs through the head (the features are the
  last layer before it), so it is cheap;
* A is upsampled bilinearly to the input and min-max scaled per image; I is the normalised input, so an erased
  pixel takes the mean colour of the normalisation (0), not black.

For ``ce`` and ``mcloss`` the classification loss and A come from one pass (the criteria's ``terms``); the
shared-parts criterion runs its own pass, so ``parts`` + GAIN costs one more forward and backward. The erased
batch is one more pass for every method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.shared_parts import has_shared_parts

#: The paper's α, σ and ω.
GAIN_ALPHA, GAIN_SIGMA, GAIN_OMEGA = 1.0, 0.5, 10.0


def soft_mask(attention: torch.Tensor, sigma: float = GAIN_SIGMA, omega: float = GAIN_OMEGA) -> torch.Tensor:
    """T(A) = sigmoid(ω (A − σ)), elementwise."""
    return torch.sigmoid(omega * (attention - sigma))


def erase(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """I* = I − T(A) ⊙ I (the mask (B, 1, H, W) broadcast over the colours)."""
    return images - mask * images


def scaled(cam: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each map of ``cam`` (B, 1, H, W) min-max scaled to [0, 1] (a constant map becomes 0)."""
    lo = cam.amin(dim=(2, 3), keepdim=True)
    hi = cam.amax(dim=(2, 3), keepdim=True)
    return (cam - lo) / (hi - lo).clamp_min(eps)


def gradcam_attention(features: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                      size: tuple[int, int]) -> torch.Tensor:
    """A (B, 1, *size) in [0, 1]: ReLU(Σ_k α_k F_k) with α_k the spatial mean of ∂y_t/∂F_k of each sample's true
    class t, upsampled to ``size`` and scaled; differentiable (the gradient is taken with ``create_graph``)."""
    score = logits.gather(1, targets.view(-1, 1)).sum()  # the head treats samples independently
    grad, = torch.autograd.grad(score, features, create_graph=True)
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return scaled(cam)


def mining_loss(erased_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L_am: the mean softmax probability of the true class on the erased photos."""
    return erased_logits.float().softmax(dim=1).gather(1, targets.view(-1, 1)).mean()


class GAINCriterion(nn.Module):
    """A training criterion (``criterion(model, images, targets) -> (total, parts)``) with GAIN's attention mining
    added: ``total + α L_am``; ``parts`` gains ``am`` (L_am, unweighted)."""

    def __init__(self, base: nn.Module, alpha: float = GAIN_ALPHA, sigma: float = GAIN_SIGMA,
                 omega: float = GAIN_OMEGA):
        super().__init__()
        self.base = base
        self.alpha, self.sigma, self.omega = float(alpha), float(sigma), float(omega)

    def forward(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        shared = has_shared_parts(model)
        if shared:  # the parts criterion runs its own pass; Grad-CAM on the part maps of another
            total, parts = self.base(model, images, targets)
            if getattr(model, "zoom", 0):  # the zoomed batch, as the parts criterion's terms
                images = model.zoomed(images)[0]
            z = model.embed(images)
            features = model.part_maps(z)
            logits = model.forward_head(features, z)
        else:
            features = model.forward_features(images)
            logits = model.forward_head(features)
            total, parts = self.base.terms(features, logits, targets)
        attention = gradcam_attention(features, logits, targets, tuple(images.shape[-2:]))
        erased = erase(images, soft_mask(attention, self.sigma, self.omega).to(images.dtype))
        erased_logits = model.forward_parts(erased, zoom=False).logits if shared else model(erased)
        am = mining_loss(erased_logits, targets)
        return total + self.alpha * am, {**parts, "am": am.detach()}


__all__ = ["GAIN_ALPHA", "GAIN_SIGMA", "GAIN_OMEGA", "soft_mask", "erase", "scaled", "gradcam_attention",
           "mining_loss", "GAINCriterion"]
