"""RA-CNN: Recurrent Attention CNN (Fu, Zheng, Mei, "Look Closer to See Better: Recurrent Attention Convolutional
Neural Network for Fine-grained Image Recognition", CVPR 2017), as docs/METHODS.md#racnn.

Three scales of the same backbone kind (three networks, weights not shared, as the paper). After scales 1 and 2 an
attention proposal network (APN: two fully connected layers on the scale's last conv map, average-pooled to a 4 × 4
grid and flattened) predicts a square (tx, ty, tl), its centre and half side as fractions of the scale's input side.
The square is cut from that input with a differentiable boxcar mask (:func:`boxcar_mask`, a product of logistic
functions of x and y, steepness k = 10 per pixel) and zoomed to the input's size (:func:`zoom`), which is the next
scale's input. Each scale has its own classifier on its pooled features; the three pooled features, concatenated,
feed the fused classifier that predicts (``forward``).

Training (:class:`RACNNCriterion`) alternates, one phase per call: softmax cross-entropy at every scale and of the
fused classifier with the squares as constants (the APNs get no gradient), then the pairwise ranking loss
max(0, p_t(s) − p_t(s+1) + margin) with every parameter but the APNs frozen. Before the alternation the APNs learn
the square around the highest-response cell of the scale's last conv map (:func:`response_square`; half the input's
side, the paper's initialisation, or ``--apn-half``) while the classifiers learn on those squares.

A ranking step's gradient reaches the squares by the authors' rule on the crop's gradient (``--apn-gradient thirds``,
the default: :func:`~engine.models.racnn_squares.thirds_gradient`) or through the boxcar mask (``boxcar``).

The squares' geometry is in :mod:`engine.models.racnn_squares`; this file reads top to bottom: the square guard, the
APN, the model, the loss, the builder.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError
from engine.models.racnn_squares import (INIT_HALF, STEEPNESS, boxcar_mask, compose, crop_grid, response_square,
                                         square_maps, thirds_gradient, with_square_gradient, zoom)

log = logging.getLogger(__name__)

MARGIN = 0.05  # the ranking loss's margin (the paper's)
MIN_HALF = 1.0 / 6.0  # the least half side: a square at least a third of the scale's input side (the paper's bound)
APN_GRID, APN_HIDDEN = 4, 512
APN_LR = 1e-3  # the APNs' learning rate (--apn-lr), chosen on validation photos (docs/METHODS.md#racnn)
APN_HALF = 0.4  # the first squares' half side (--apn-half) a new run trains with, chosen on validation photos
SCALES = 3


class SquareGuard:
    """Keeps the APN's squares usable: a non-finite square (a diverged APN) becomes the initial one, and a half
    side under :data:`MIN_HALF` is raised to it with a straight-through gradient (the value clamped, the gradient
    passed on, so that the APN can grow it back). A square under one pixel is logged as a diverged APN; the log says
    it at the first time and then at every tenfold count, per scale."""

    def __init__(self, init_half: float = INIT_HALF) -> None:
        self.counts = [0] * (SCALES - 1)
        self.next_log = [1] * (SCALES - 1)
        self.init_half = float(init_half)

    def __call__(self, squares: torch.Tensor, scale: int, side: int) -> torch.Tensor:
        finite = torch.isfinite(squares).all(dim=1, keepdim=True)
        default = squares.new_tensor([0.5, 0.5, self.init_half]).expand_as(squares)
        sq = torch.where(finite, squares, default)
        tl = sq[:, 2]
        degenerate = (~finite[:, 0]) | (tl * side < 1.0)
        if bool(degenerate.any()):
            self.counts[scale] += int(degenerate.sum())
            n = self.counts[scale]
            if n >= self.next_log[scale]:
                self.next_log[scale] = 10 * n
                bad = float(squares.detach()[degenerate][0, 2] * side)
                log.warning("RA-CNN scale %d: the APN proposed a square of half side %.3g px (a diverged APN): "
                            "clamped to the minimum half side %.3g of the input (%d such squares so far); lower "
                            "--lr-head if it keeps happening", scale + 1, bad, MIN_HALF, n)
        clamped = MIN_HALF + (tl - tl.detach())  # the value MIN_HALF, the gradient of tl
        return torch.cat((sq[:, :2], torch.where(tl < MIN_HALF, clamped, tl)[:, None]), dim=1)


# ------------------------------------------------------------------------------------------------ the APN
class APN(nn.Module):
    """Attention proposal network: the last conv map average-pooled to a 4 × 4 grid, flattened, then two fully
    connected layers (tanh between them, the paper's); sigmoids give (tx, ty) in (0, 1) and the half side
    tl = floor + (½ − floor)·σ(z) in (floor, ½), floor = :data:`MIN_HALF`: the paper's least square holds by
    construction. Clamping ½·σ(z) with a straight-through gradient instead let the ranking loss drive z into
    σ's flat tail, where no gradient brings it back (half sides of 0.001 px on cub-parts-dev, docs/METHODS.md#racnn).
    The second layer starts at zero (its tl bias at σ⁻¹ of the share that gives ``init_half``), so every APN
    starts at the centred square of half side ``init_half`` (the paper's ¼ by default).

    ``floor`` is a buffer saved with the weights. A run saved before it had none: its APNs load with floor 0
    (tl = ½·σ(z), clamped below by :class:`SquareGuard`), so its squares stay what they were."""

    def __init__(self, width: int, hidden: int = APN_HIDDEN, grid: int = APN_GRID, floor: float = MIN_HALF,
                 init_half: float = INIT_HALF):
        super().__init__()
        self.init_half = float(init_half)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.fc1 = nn.Linear(width * grid * grid, hidden)
        self.fc2 = nn.Linear(hidden, 3)
        self.register_buffer("floor", torch.tensor(float(floor)))
        nn.init.zeros_(self.fc2.weight)
        with torch.no_grad():
            self.fc2.bias.copy_(torch.tensor([0.0, 0.0, math.log(self._init_share() / (1 - self._init_share()))]))

    def _init_share(self) -> float:
        return (self.init_half - float(self.floor)) / (0.5 - float(self.floor))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.fc2(torch.tanh(self.fc1(self.pool(features).flatten(1)))).float()
        s = torch.sigmoid(z)
        return torch.cat((s[:, :2], self.floor + (0.5 - self.floor) * s[:, 2:]), dim=1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        state_dict.setdefault(prefix + "floor", torch.tensor(0.0))  # saved before the floor: tl = ½·σ(z)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# ------------------------------------------------------------------------------------------------ the model
@dataclass
class RACNNOutputs:
    """One pass through the three scales. ``squares`` (B, 2, 3): the squares cut after scales 1 and 2, each in
    the frame of its scale's input; ``proposed`` the APNs' own squares (before :class:`SquareGuard`); ``targets``
    the highest-response squares (:func:`response_square`); ``inputs`` the three scales' inputs."""

    logits: list[torch.Tensor]
    fused: torch.Tensor
    squares: torch.Tensor
    proposed: torch.Tensor
    targets: torch.Tensor
    inputs: list[torch.Tensor]


MODES = ("ce", "rank", "warmup")
GRADIENTS = ("boxcar", "thirds")  # how a ranking step's gradient reaches the squares (--apn-gradient)
APN_GRADIENT = "thirds"  # the default, chosen on validation photos (docs/METHODS.md#racnn)


class RACNN(nn.Module):
    """RA-CNN (Fu et al., CVPR 2017) over three networks ``nets`` (image → (B, ``width``, h, w)), one per scale.

    ``forward`` is the fused classifier on the three scales' concatenated pooled features (the paper's
    prediction); :meth:`scales_and_squares` gives each scale's own and the two squares on the photo.
    ``forward_features`` / ``forward_head`` are scale 1's last conv map and its classifier (``fc``), the maps
    Grad-CAM and CAM explain. ``train_calls`` counts the criterion's calls (saved with the weights, so that a
    resumed run goes on with the alternation rather than warming its APNs up again)."""

    groups = None  # no per-class channel groups (those are MC-Loss's)

    def __init__(self, nets: list[nn.Module], width: int, num_classes: int, steepness: float = STEEPNESS,
                 scale_size: int | None = None, init_half: float = INIT_HALF):
        super().__init__()
        if isinstance(init_half, bool) or not isinstance(init_half, (int, float)) or not MIN_HALF < init_half < 0.5:
            raise ConfigError(f"apn_half={init_half!r}: give the first squares' half side as a share of the scale's "
                              f"side above {MIN_HALF:.3f} (a third of the side) and under 0.5 (the whole side); "
                              f"the paper's is {INIT_HALF}")
        if scale_size is not None and (int(scale_size) != scale_size or scale_size < 32):
            raise ConfigError(f"scale_size={scale_size!r}: give the scales' side as whole pixels, 32 or more")
        if num_classes < 2:
            raise ConfigError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
        if len(nets) != SCALES:
            raise ConfigError(f"RA-CNN needs {SCALES} networks, one per scale; got {len(nets)}")
        if not steepness > 0:
            raise ConfigError(f"steepness={steepness}: the boxcar's k must be positive (the paper uses 10)")
        self.nets = nn.ModuleList(nets)
        self.fcs = nn.ModuleList(nn.Linear(width, num_classes) for _ in range(SCALES))
        self.apns = nn.ModuleList(APN(width, init_half=init_half) for _ in range(SCALES - 1))
        self.fc_cat = nn.Linear(SCALES * width, num_classes)
        self.register_buffer("train_calls", torch.zeros((), dtype=torch.long))
        self.num_classes, self.width, self.steepness = num_classes, width, float(steepness)
        self.scale_size = None if scale_size is None else int(scale_size)
        self.init_half = float(init_half)
        self.guard = SquareGuard(init_half)

    @property
    def fc(self) -> nn.Linear:
        """Scale 1's classifier (what CAM reads)."""
        return self.fcs[0]

    def scale_one(self, x: torch.Tensor) -> torch.Tensor:
        """Scale 1's input: the photo, resized to ``scale_size`` when it is set and the photo is larger."""
        side = self.scale_size
        if side is None or tuple(x.shape[-2:]) == (side, side):
            return x
        return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Scale 1's last conv map (B, width, h, w)."""
        return self.nets[0](self.scale_one(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3))
        return pooled if pre_logits else self.fcs[0](pooled)

    def racnn_outputs(self, x: torch.Tensor, mode: str = "ce", gradient: str = APN_GRADIENT) -> RACNNOutputs:
        """The three scales on ``x``. ``mode``: ``ce`` cuts the APNs' squares as constants; ``rank`` keeps their
        gradient, through the boxcar mask (``gradient="boxcar"``) or by the authors' rule on the crop's gradient
        (``"thirds"``, :func:`thirds_gradient`); ``warmup`` cuts the highest-response squares instead. Crops are cut
        from the photo ``x`` through the composed squares with ``scale_size``, else from the scale before."""
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r}: use one of {', '.join(MODES)}")
        if gradient not in GRADIENTS:
            raise ConfigError(f"apn_gradient={gradient!r}: use one of {', '.join(GRADIENTS)}")
        thirds = mode == "rank" and gradient == "thirds"
        cur = self.scale_one(x)
        frame, logits, pooled, used, proposed, targets, inputs = None, [], [], [], [], [], [cur]
        for s in range(SCALES):
            f = self.nets[s](cur)
            z = f.mean(dim=(2, 3))
            pooled.append(z)
            logits.append(self.fcs[s](z))
            if s == SCALES - 1:
                break
            raw = self.apns[s](f.detach())  # an APN's gradient reaches its own weights only
            proposed.append(raw)
            targets.append(response_square(f, self.init_half))
            sq = targets[-1] if mode == "warmup" else self.guard(raw, s, min(cur.shape[-2:]))
            used.append(sq if mode == "rank" else sq.detach())
            # rank: the next scale depends on this scale's APN only, not on the squares before it (ranking_loss)
            if self.scale_size is None:
                src, square, size = (cur.detach() if mode == "rank" else cur), used[-1], None
            else:
                if frame is not None and mode == "rank":
                    frame = frame.detach()
                frame = used[-1] if frame is None else compose(frame, used[-1])
                src, square, size = x, frame, tuple(inputs[0].shape[-2:])
            if thirds:  # the crop cut with the square as a constant; its gradient reaches the square by the rule
                cur = with_square_gradient(zoom(src, square.detach(), self.steepness, size), square)
            else:
                cur = zoom(src, square, self.steepness, size)
            inputs.append(cur)
        fused = self.fc_cat(torch.cat(pooled, dim=1).detach())  # the fusion layer learns on the scales' features
        return RACNNOutputs(logits, fused, torch.stack(used, 1), torch.stack(proposed, 1), torch.stack(targets, 1),
                            inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The fused prediction (B, num_classes)."""
        return self.racnn_outputs(x).fused

    def scales_and_squares(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One pass: the [scale 1, scale 2, scale 3, fused] logits, each (B, num_classes), and the squares of scales
        2 and 3 in the frame of ``x`` (B, 2, 3): (tx, ty, tl) as fractions of its side."""
        out = self.racnn_outputs(x)
        sq = out.squares.float()
        return [*out.logits, out.fused], torch.stack((sq[:, 0], compose(sq[:, 0], sq[:, 1])), dim=1)

    def zoom_squares(self, x: torch.Tensor) -> torch.Tensor:
        """The squares of scales 2 and 3 in the frame of ``x`` (B, 2, 3) (:meth:`scales_and_squares`)."""
        with torch.no_grad():
            return self.scales_and_squares(x)[1]

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(the three networks, the new layers: classifiers, APNs, fused classifier) for the two learning rates."""
        head = [p for m in (self.fcs, self.apns, self.fc_cat) for p in m.parameters()]
        return list(self.nets.parameters()), head


@contextmanager
def apns_only(model: RACNN) -> Iterator[None]:
    """Every parameter but the APNs' frozen (no gradient recorded) and BatchNorm's running statistics kept (momentum
    0: batch statistics are still used), for the forward pass of a ranking step; restored on exit."""
    others = [p for name, p in model.named_parameters() if not name.startswith("apns.")]
    flags = [p.requires_grad for p in others]
    norms = [(m, m.momentum) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        for p in others:
            p.requires_grad_(False)
        for m, _ in norms:
            m.momentum = 0.0
        yield
    finally:
        for p, flag in zip(others, flags):
            p.requires_grad_(flag)
        for m, momentum in norms:
            m.momentum = momentum


# ------------------------------------------------------------------------------------------------ the loss
def ranking_loss(logits: list[torch.Tensor], targets: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """Σ_s max(0, p_t(s) − p_t(s+1) + margin) over consecutive scales, p_t the softmax probability of the true
    class, averaged over the batch (the paper's eq. 5). Each pair's gradient raises the finer scale's p_t(s+1)
    only (p_t(s) a constant in it): otherwise the pair of scales 2 and 3 rewards the first APN for lowering
    p_t(2), which is what a run on cub-parts-dev did (docs/METHODS.md#racnn)."""
    p = [torch.softmax(lg.float(), dim=1).gather(1, targets.view(-1, 1))[:, 0] for lg in logits]
    return sum((p[s].detach() - p[s + 1] + margin).clamp_min(0) for s in range(len(p) - 1)).mean()


APN_WARMUP = 76  # criterion calls that teach the APNs the highest-response squares before the alternation


class RACNNCriterion(nn.Module):
    """The RA-CNN schedule inside the criterion, one phase per call (``model.train_calls`` counts them):

    * the first ``warmup`` calls: CE on the highest-response squares + the L1 distance of the APNs' squares from
      them (the APNs' initialisation);
    * then, alternately, ``ce``: Σ_s CE(scale s) + CE(fused), the squares constants; and ``rank``: the ranking
      loss with every parameter but the APNs' frozen (:func:`apns_only`).

    ``parts`` always has ``ce``, ``rank`` and ``apn`` (that L1 distance) of the call's pass, detached, so the
    epoch's averages cover every call; the total is the phase's term."""

    def __init__(self, margin: float = MARGIN, warmup: int = APN_WARMUP, gradient: str = APN_GRADIENT):
        super().__init__()
        if not margin >= 0:
            raise ConfigError(f"margin={margin}: use a margin of 0 or more (the paper uses 0.05)")
        if int(warmup) != warmup or warmup < 0:
            raise ConfigError(f"apn_warmup={warmup}: use a whole number of steps, 0 or more (default {APN_WARMUP})")
        if gradient not in GRADIENTS:
            raise ConfigError(f"apn_gradient={gradient!r}: use one of {', '.join(GRADIENTS)}")
        self.margin, self.warmup, self.gradient = float(margin), int(warmup), gradient

    def phase(self, call: int) -> str:
        if call < self.warmup:
            return "warmup"
        return "ce" if (call - self.warmup) % 2 == 0 else "rank"

    def forward(self, model: RACNN, images: torch.Tensor,
                targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        phase = self.phase(int(model.train_calls))
        model.train_calls += 1
        if phase == "rank":
            with apns_only(model):
                out = model.racnn_outputs(images, "rank", self.gradient)
        else:
            out = model.racnn_outputs(images, phase)
        ce = sum(F.cross_entropy(lg.float(), targets) for lg in out.logits) + F.cross_entropy(out.fused.float(),
                                                                                              targets)
        rank = ranking_loss(out.logits, targets, self.margin)
        apn = (out.proposed - out.targets).abs().sum(dim=2).mean()
        total = {"warmup": ce + apn, "ce": ce, "rank": rank}[phase]
        return total, {"ce": ce.detach(), "rank": rank.detach(), "apn": apn.detach()}


# ------------------------------------------------------------------------------------------------ builder
def racnn(backbone: str, num_classes: int, pretrained: str | None = None, steepness: float = STEEPNESS,
          scale_size: int | None = None, init_half: float = INIT_HALF) -> RACNN:
    """RA-CNN on three copies of registry backbone ``backbone`` (``engine.models.backbones.BACKBONES``), each
    loaded from ``pretrained`` (a torchvision weights name or a local file) when given; ``scale_size``: the side
    every scale's network sees, the crops cut from the larger photo (None: the photo's own size); ``init_half``: the
    half side of the APNs' first squares and of the highest-response squares they learn first, a share of the
    scale's side (``--apn-half``)."""
    from engine.models.backbones import BACKBONES

    nets, width = [], 0
    for _ in range(SCALES):
        body, width, _stride = BACKBONES[backbone][0](pretrained)
        nets.append(body)
    return RACNN(nets, width, num_classes, steepness, scale_size, init_half)


__all__ = ["boxcar_mask", "square_maps", "crop_grid", "zoom", "compose", "response_square", "thirds_gradient",
           "with_square_gradient", "SquareGuard", "APN", "GRADIENTS",
           "RACNN", "RACNNOutputs", "RACNNCriterion", "ranking_loss", "apns_only", "racnn", "STEEPNESS", "MARGIN",
           "MIN_HALF", "INIT_HALF", "APN_HALF", "APN_WARMUP", "APN_LR", "APN_GRADIENT"]
