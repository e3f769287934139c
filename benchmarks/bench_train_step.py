"""Training step with the mutual-channel loss (Chang et al., IEEE TIP 2020) against plain cross-entropy.

Same model (mobilenet_v2 part network, ``part_channels="auto"``, 16 classes, ξ = 3), same batch, same optimizer;
one step is the training loop's: criterion forward, ``zero_grad``, backward, SGD step, and the ``float()`` of the
logged terms. The two steps alternate (CE, MC, CE, MC, ...) after a warm-up and the medians are compared.
Goal: an MC-Loss step costs at most 1.05× a cross-entropy step.

The shared-parts step (PDiscoNet, ``--method parts``: fine stride-16 features, K = 8, the four losses with the
equivariance pass on a transformed copy of the batch, Adam) is timed in the same interleaving against the same CE
step, as the training defaults run it (``PARTS_EQUIV_BACKPROP``: the transformed pass a fixed target, a second
forward without a second backward). Goal: at most 2.2× (the method needs a second forward). The authors' way
(``--equiv-backprop``: both passes back-propagated) is timed too, with no goal.

The MC-Loss criterion is the default one: μ = 0.5 with the concentration term (docs/METHODS.md#mc-loss-
concentration). MC-Loss runs pad their backbone with ``replicate`` and use stride-16 maps by default
(docs/METHODS.md#mc-loss-border): the same MC-Loss step on a replicate-padded copy of the model, and on a
replicate-padded stride-16 copy (the defaults), are timed too, so each costs a row of its own (no goal: they are
the price of parts on the bird).

``python -m benchmarks.bench_train_step [--quick]`` prints the table; ``run()`` returns the rows.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from benchmarks.common import cli, interleaved_medians, median, row
from engine.device import resolve_device
from engine.losses.mcloss import CECriterion, MCLossCriterion
from engine.losses.parts import PartsCriterion
from engine.models import create_model
from engine.training.config import MC_CONC_PRETRAINED, MU_PRETRAINED, PARTS_EQUIV_BACKPROP

GOAL = 1.05
PARTS_GOAL = 2.2


def make_step(model: nn.Module, criterion: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
              y: torch.Tensor) -> Callable[[], None]:
    """One training step as engine.training.loop runs it (without the lr schedule and the AMP scaler, no-ops on CPU)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def step() -> None:
        loss, parts = criterion(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss.detach())
        for v in parts.values():
            float(v)
        sync()

    return step


def loss_terms_seconds(model: nn.Module, mc: MCLossCriterion, x: torch.Tensor, y: torch.Tensor,
                       repeats: int) -> float:
    """Median seconds of the MC-Loss terms alone: loss forward and backward on fixed (leaf) part features."""
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def terms() -> None:
        f = features.detach().requires_grad_(True)
        total, _ = mc.loss(f, logits, y)
        total.backward()
        sync()

    (times,) = interleaved_medians([terms], repeats=repeats, warmup=2)
    return median(times)


def run(quick: bool = False, device: str = "auto", batch: int | None = None, size: int | None = None,
        repeats: int | None = None) -> list[dict]:
    """Median seconds of a CE step and an MC-Loss step; rows of {name, seconds, ratio, goal, met}."""
    batch = batch or (8 if quick else 16)
    size = size or (128 if quick else 224)
    repeats = repeats or (3 if quick else 5)
    dev = resolve_device(device)
    torch.manual_seed(0)
    classes = 16
    model = create_model("mobilenet_v2", classes, xi=3, pretrained=None, part_channels="auto").to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.arange(batch, device=dev) % classes
    ce = CECriterion().to(dev).train()
    mc = MCLossCriterion(model.groups, mu=MU_PRETRAINED, lam=10.0, conc=MC_CONC_PRETRAINED).to(dev).train()
    torch.manual_seed(0)
    rep_model = create_model("mobilenet_v2", classes, xi=3, pretrained=None, part_channels="auto",
                             padding="replicate").to(dev).train()
    rep_opt = torch.optim.SGD(rep_model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)
    torch.manual_seed(0)
    fine_model = create_model("mobilenet_v2", classes, xi=3, pretrained=None, part_channels="auto",
                              padding="replicate", fine=True).to(dev).train()
    fine_opt = torch.optim.SGD(fine_model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)
    torch.manual_seed(0)
    parts_model = create_model("mobilenet_v2", classes, head="parts", fine=True, parts=8).to(dev).train()
    parts_opt = torch.optim.Adam(parts_model.parameters(), lr=1e-4)
    pc = PartsCriterion(equiv_stop_grad=not PARTS_EQUIV_BACKPROP).to(dev).train()
    pc_other = PartsCriterion(equiv_stop_grad=PARTS_EQUIV_BACKPROP).to(dev).train()
    t_ce, t_mc, t_parts, t_rep, t_fine, t_other = interleaved_medians(
        [make_step(model, ce, opt, x, y), make_step(model, mc, opt, x, y),
         make_step(parts_model, pc, parts_opt, x, y), make_step(rep_model, mc, rep_opt, x, y),
         make_step(fine_model, mc, fine_opt, x, y), make_step(parts_model, pc_other, parts_opt, x, y)],
        repeats=repeats, warmup=1)
    ce_s, mc_s, parts_s, rep_s = median(t_ce), median(t_mc), median(t_parts), median(t_rep)
    fine_s, other_s = median(t_fine), median(t_other)
    other = "--no-equiv-backprop: a fixed target" if PARTS_EQUIV_BACKPROP else "--equiv-backprop: back-propagated"
    ratio = mc_s / ce_s
    parts_ratio = parts_s / ce_s
    terms_s = loss_terms_seconds(model, mc, x, y, repeats=10 if quick else 30)
    what = f"mobilenet_v2 B={batch} {size}px, {sum(model.groups)} part channels, {dev.type}"
    return [
        row(f"train step CE ({what})", ce_s, 1.0, None, None,
            measured=f"{ce_s * 1e3:.0f} ms ({batch / ce_s:.1f} img/s)"),
        row("train step MC-Loss (x CE step)", mc_s, ratio, f"<= {GOAL}", ratio <= GOAL,
            measured=f"{mc_s * 1e3:.0f} ms ({batch / mc_s:.1f} img/s)",
            note=f"medians of {repeats} interleaved steps; CE spread {min(t_ce) * 1e3:.0f}-{max(t_ce) * 1e3:.0f} ms, "
                 f"MC {min(t_mc) * 1e3:.0f}-{max(t_mc) * 1e3:.0f} ms"),
        row("train step MC-Loss, replicate padding (its default; x the same step with zero padding)", rep_s,
            rep_s / mc_s, None, None, measured=f"{rep_s * 1e3:.0f} ms ({batch / rep_s:.1f} img/s)",
            note=f"every padded convolution copies its input into a padded tensor first; spread "
                 f"{min(t_rep) * 1e3:.0f}-{max(t_rep) * 1e3:.0f} ms"),
        row("train step MC-Loss, the defaults: replicate padding and stride-16 maps (x the CE step)", fine_s,
            fine_s / ce_s, None, None, measured=f"{fine_s * 1e3:.0f} ms ({batch / fine_s:.1f} img/s)",
            note=f"{size // 16} x {size // 16} maps instead of {size // 32} x {size // 32} (the last stage upsampled "
                 f"and joined with the one before); spread {min(t_fine) * 1e3:.0f}-{max(t_fine) * 1e3:.0f} ms"),
        row("MC-Loss terms alone, forward + backward (share of a CE step)", terms_s, terms_s / ce_s, None, None,
            measured=f"{terms_s * 1e3:.2f} ms",
            note="the MC-specific work (CWA mask, CCMP, softmax over the positions, L_dis, L_div, concentration) "
                 "on the part channels of the same batch, gradients to the features: the true extra cost of a "
                 "step, which the step ratio above only sees through the noise of a shared machine"),
        row("train step shared parts, K=8, equivariance pass included, the defaults (x CE step)", parts_s,
            parts_ratio, f"<= {PARTS_GOAL}", parts_ratio <= PARTS_GOAL,
            measured=f"{parts_s * 1e3:.0f} ms ({batch / parts_s:.1f} img/s)",
            note=f"stride-16 features (1376 channels), Adam; the transformed pass "
                 f"{'back-propagated' if PARTS_EQUIV_BACKPROP else 'a fixed target (forward only)'}; spread "
                 f"{min(t_parts) * 1e3:.0f}-{max(t_parts) * 1e3:.0f} ms"),
        row(f"train step shared parts, the transformed pass {other} (x CE step)", other_s, other_s / ce_s, None,
            None, measured=f"{other_s * 1e3:.0f} ms ({batch / other_s:.1f} img/s)",
            note=f"spread {min(t_other) * 1e3:.0f}-{max(t_other) * 1e3:.0f} ms"),
    ]


if __name__ == "__main__":
    cli(run, __doc__, device=True)
