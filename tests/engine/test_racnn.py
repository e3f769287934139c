"""RA-CNN (engine.models.racnn, Fu et al., CVPR 2017): the boxcar mask and the ranking loss by hand on tiny tensors,
the crop's geometry, the APN's initial square, the guard against a diverged APN, the alternating criterion (CE
steps train all but the APNs, ranking steps only the APNs) and the registry's racnn models."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.models import create_model, list_models
from engine.models.racnn import (INIT_HALF, MIN_HALF, RACNN, RACNNCriterion, SquareGuard, apns_only, boxcar_mask,
                                 compose, crop_grid, ranking_loss, response_square, thirds_gradient,
                                 with_square_gradient, zoom)


def _sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_boxcar_mask_by_hand():
    """16 × 16, centre pixel (8, 8) (tx = 8.5/16), half side 4 px (tl = ¼): the edges lie on pixels 4 and 12."""
    m = boxcar_mask(torch.tensor([[8.5 / 16, 8.5 / 16, 0.25]]), (16, 16), k=10.0)[0].double()
    inside = _sig(40) - _sig(-40)  # 4 px from both edges
    assert float(m[8, 8]) == pytest.approx(inside * inside, abs=1e-7)
    assert float(m[8, 4]) == pytest.approx((_sig(0) - _sig(-80)) * inside, abs=1e-7)  # on the left edge: ½
    assert float(m[8, 4]) == pytest.approx(0.5, abs=1e-7)
    assert float(m[8, 12]) == pytest.approx(0.5, abs=1e-7)  # on the right edge
    assert float(m[8, 3]) == pytest.approx(_sig(-10) - _sig(-90), rel=1e-4)  # one pixel outside: 4.54e-5
    assert float(m[8, 3]) == pytest.approx(4.5398e-5, rel=1e-3)
    assert float(m[4, 4]) == pytest.approx(0.25, abs=1e-7)  # a corner: ½ · ½
    assert float(m[0, 0]) < 1e-30


def test_ranking_loss_at_a_chosen_pair():
    """p_t = 0.6, 0.5, 0.9 at the three scales: max(0, 0.6 − 0.5 + 0.05) + max(0, 0.5 − 0.9 + 0.05) = 0.15."""
    def logits(p: float) -> torch.Tensor:  # two classes, true class 0 with probability p
        return torch.tensor([[math.log(p), math.log(1 - p)]])

    t = torch.tensor([0])
    assert float(ranking_loss([logits(0.6), logits(0.5), logits(0.9)], t, 0.05)) == pytest.approx(0.15, abs=1e-6)
    assert float(ranking_loss([logits(0.7), logits(0.7)], t, 0.05)) == pytest.approx(0.05, abs=1e-6)  # a tie: margin
    assert float(ranking_loss([logits(0.2), logits(0.9)], t, 0.05)) == 0.0  # finer and surer by more than it


def test_crop_samples_the_square():
    """A horizontal ramp (value = x) cut at tx = ½, tl = ¼ of 16 px: output column j samples x = 3.75 + j/2."""
    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 1, 16, 16)
    sq = torch.tensor([[0.5, 0.5, 0.25]])
    grid = crop_grid(sq, (16, 16))
    assert torch.allclose((grid[0, 0, :, 0] + 1) * 8 - 0.5, 3.75 + torch.arange(16.0) / 2)
    out = zoom(ramp, sq, k=1000.0)[0, 0]  # a sharp mask: the crop is the ramp itself inside the square
    assert torch.allclose(out[8, 1:-1], 3.75 + torch.arange(1, 15.0) / 2, atol=1e-4)


def test_compose_puts_an_inner_square_in_the_outer_frame():
    outer = torch.tensor([[0.5, 0.5, 0.25]])
    assert torch.allclose(compose(outer, torch.tensor([[0.5, 0.5, 0.5]])), outer)  # the whole crop
    assert torch.allclose(compose(outer, torch.tensor([[0.5, 0.5, 0.25]])), torch.tensor([[0.5, 0.5, 0.125]]))
    assert torch.allclose(compose(outer, torch.tensor([[0.0, 0.0, 0.25]])), torch.tensor([[0.25, 0.25, 0.125]]))


def test_response_square_is_around_the_strongest_cell():
    f = torch.zeros(2, 3, 4, 4)
    f[0, 1, 0, 3] = 5.0  # top-right cell: centre (0.875, 0.125), moved inside: (0.75, 0.25)
    f[1, :, 2, 1] = 1.0  # centre (0.375, 0.625)
    sq = response_square(f)
    assert torch.allclose(sq, torch.tensor([[0.75, 0.25, INIT_HALF], [0.375, 0.625, INIT_HALF]]))


def test_a_zero_sized_square_is_clamped_and_logged(caplog):
    guard = SquareGuard()
    tl = torch.tensor([0.0, 0.3], requires_grad=True)
    raw = torch.stack((torch.tensor([0.4, 0.5]), torch.tensor([0.6, 0.5]), tl), dim=1)
    with caplog.at_level(logging.WARNING, logger="engine.models.racnn"):
        out = guard(raw, 0, 224)
    assert torch.allclose(out[:, 2], torch.tensor([MIN_HALF, 0.3]))
    assert torch.allclose(out[:, :2], raw[:, :2])
    out[:, 2].sum().backward()
    assert torch.allclose(tl.grad, torch.ones(2))  # straight through: the APN can grow it back
    (rec,) = caplog.records
    assert "scale 1" in rec.getMessage() and "half side 0 px" in rec.getMessage() and "clamped" in rec.getMessage()
    nan = guard(torch.tensor([[float("nan"), 0.5, 0.2]]), 1, 224)
    assert torch.allclose(nan, torch.tensor([[0.5, 0.5, INIT_HALF]]))


def _tiny(classes: int = 3) -> RACNN:
    torch.manual_seed(0)
    return create_model("racnn_smallnet", classes)


def test_apn_half_sets_the_first_squares_and_their_targets():
    """--apn-half: the APNs start at the centred square of that half side, the warm-up's targets (the highest-response
    squares) have it, and a non-finite square falls back to it; out of (⅙, ½) is refused by name."""
    torch.manual_seed(0)
    m = create_model("racnn_smallnet", 3, apn_half=0.4).eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(m.zoom_squares(x)[:, 0], torch.tensor([[0.5, 0.5, 0.4]] * 2))
    out = m.racnn_outputs(x, "warmup")
    assert torch.allclose(out.targets[..., 2], torch.full((2, 2), 0.4))
    assert torch.allclose(out.squares[..., 2], torch.full((2, 2), 0.4))
    nan = m.guard(torch.full((1, 3), float("nan")), 0, 64)
    assert torch.allclose(nan, torch.tensor([[0.5, 0.5, 0.4]]))
    assert m.arch["apn_half"] == 0.4
    for bad in (0.1, 0.5, True):
        with pytest.raises(ConfigError, match=rf"apn_half={bad!r}: .*the paper's is 0.25"):
            create_model("racnn_smallnet", 3, apn_half=bad)


def test_the_apn_half_side_never_falls_below_the_least_square(caplog):
    """tl = ⅙ + ⅓·σ(z): the first square has half side ¼, a saturated APN gives the least square itself (nothing to
    clamp, nothing logged), and tl keeps a gradient everywhere in between."""
    m = _tiny().eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(m.zoom_squares(x)[:, 0], torch.tensor([[0.5, 0.5, INIT_HALF]] * 2))
    apn = m.apns[0]
    f = torch.randn(2, m.width, 4, 4)
    for bias, want in ((-1e4, MIN_HALF), (0.0, MIN_HALF + 1 / 6), (1e4, 0.5)):
        with torch.no_grad():
            apn.fc2.bias[2] = bias
        assert torch.allclose(apn(f)[:, 2], torch.full((2,), want)), bias
    with torch.no_grad():
        apn.fc2.bias[2] = -3.0
    apn.fc2.bias.grad = None
    apn(f)[:, 2].sum().backward()
    assert abs(float(apn.fc2.bias.grad[2]) - 2 * (1 / 3) * torch.sigmoid(torch.tensor(-3.0)) *
               (1 - torch.sigmoid(torch.tensor(-3.0)))) < 1e-6  # d tl / dz = ⅓·σ'(z), for each of the 2 images
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="engine.models.racnn"):
        apn.fc2.bias[2] = -1e4
        assert torch.isfinite(m(x)).all()
    assert not caplog.records


def test_a_run_saved_before_the_floor_loads_its_squares_unchanged(caplog):
    """A state dict without the APNs' ``floor`` (runs saved before it): tl = ½·σ(z) as it was, and a diverged APN's
    zero-sized square is clamped to the least square and said in the log."""
    m = _tiny().eval()
    old = {k: v for k, v in m.state_dict().items() if not k.endswith(".floor")}
    old["apns.0.fc2.bias"] = torch.tensor([0.0, 0.0, -1e4])  # tl = ½·σ(−10⁴) = 0: a diverged APN
    old["apns.1.fc2.bias"] = torch.tensor([0.0, 0.0, 0.0])  # tl = ½·σ(0) = ¼
    m.load_state_dict(old)
    assert [float(a.floor) for a in m.apns] == [0.0, 0.0]
    f = torch.randn(2, m.width, 4, 4)
    assert torch.allclose(m.apns[1](f)[:, 2], torch.full((2,), 0.25))
    x = torch.randn(2, 3, 64, 64)
    with caplog.at_level(logging.WARNING, logger="engine.models.racnn"):
        logits = m(x)
        sq = m.zoom_squares(x)
    assert torch.isfinite(logits).all()
    assert torch.allclose(sq[:, 0, 2], torch.full((2,), MIN_HALF))
    assert any("diverged APN" in r.getMessage() for r in caplog.records)


def test_the_criterion_alternates_and_freezes_the_other_side():
    m = _tiny().train()
    crit = RACNNCriterion(warmup=1)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    assert [crit.phase(i) for i in range(5)] == ["warmup", "ce", "rank", "ce", "rank"]
    apn = {n for n, _ in m.named_parameters() if n.startswith("apns.")}
    got = []
    for _ in range(3):
        stats = {n: b.clone() for n, b in m.named_buffers() if "running" in n}
        loss, parts = crit(m, x, y)
        assert set(parts) == {"ce", "rank", "apn"} and torch.isfinite(loss)
        loss.backward()
        got.append({n for n, p in m.named_parameters() if p.grad is not None})
        if len(got) == 3:  # the ranking step: BatchNorm's running statistics kept
            assert all(torch.equal(stats[n], b) for n, b in m.named_buffers() if "running" in n)
        m.zero_grad(set_to_none=True)
    warm, ce, rank = got
    assert apn <= warm and len(warm - apn) > 0  # warm-up: the classifiers on the target squares, the APNs' L1
    assert not (ce & apn) and "nets.2.body.0.weight" in ce and "fc_cat.weight" in ce  # CE: never the APNs
    assert rank and rank <= apn  # ranking: the APNs only
    assert all(p.requires_grad for p in m.parameters())  # the freeze is undone
    assert int(m.train_calls) == 3


def test_thirds_gradient_by_hand():
    """The authors' rule on a 6 × 6 crop gradient (thirds of 2 pixels): energy only in the right third moves the
    centre right (descent: −gradient > 0) and grows the square (the ring's mean energy above the middle's); energy
    only in the middle cell shrinks it and leaves the centre; no gradient, no step. Values by hand, batch of 2."""
    grad = torch.zeros(2, 1, 6, 6)
    grad[0, 0, :, 4:] = 1.0  # right third: e = 1 there; mean 1/3; right 1, left 0; ring 12/32, middle 0
    grad[1, 0, 2:4, 2:4] = 2.0  # middle cell: e = 4 there; mean 16/36; ring 0, middle 4
    got = thirds_gradient(torch.cat((grad, torch.zeros(1, 1, 6, 6))))  # a third crop with no gradient at all
    b = 3
    want = torch.tensor([[-(1 - 0) / (1 / 3), 0.0, -(12 / 32 - 0) / (1 / 3)],
                         [0.0, 0.0, -(0 - 4) / (16 / 36)],
                         [0.0, 0.0, 0.0]]) / b
    assert torch.allclose(got, want)
    sq = torch.tensor([[0.5, 0.5, 0.25]], requires_grad=True)
    crop = torch.ones(1, 1, 6, 6)
    out = with_square_gradient(crop, sq)
    (out * grad[:1]).sum().backward()  # the crop's gradient is grad[0]
    assert torch.equal(out, crop) and torch.allclose(sq.grad, want[:1] * b)


@pytest.mark.parametrize("gradient", ["boxcar", "thirds"])
@pytest.mark.parametrize("scale_size", [None, 32])
def test_each_ranking_pair_moves_only_the_apn_that_zooms_into_its_finer_scale(scale_size, gradient):
    """The pair (scale 2, scale 3) reaches the second APN only: the first APN could otherwise lower the pair's loss
    by making scale 2 worse. The pair (1, 2) reaches the first APN only, and the loss's value is the paper's. With
    a scale size scale 3 is cut from the photo through both squares, and still only the second APN moves."""
    torch.manual_seed(0)
    m = create_model("racnn_smallnet", 3, **({"scale_size": scale_size} if scale_size else {})).train()
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    grads = []
    for pair in (slice(0, 2), slice(1, 3)):
        with apns_only(m):
            out = m.racnn_outputs(x, "rank", gradient)
            loss = ranking_loss(out.logits[pair], y, margin=1.0)  # a margin of 1: every photo's hinge is active
            loss.backward()
        grads.append({n.split(".")[1] for n, p in m.named_parameters()
                      if n.startswith("apns.") and p.grad is not None and p.grad.abs().sum() > 0})
        m.zero_grad(set_to_none=True)
    assert grads == [{"0"}, {"1"}]
    p = [torch.softmax(lg, 1).gather(1, y.view(-1, 1))[:, 0] for lg in out.logits]
    want = sum((p[s] - p[s + 1] + 0.05).clamp_min(0) for s in range(2)).mean()
    assert torch.allclose(ranking_loss(out.logits, y), want)


def test_a_scale_size_cuts_every_crop_from_the_photo():
    """--img-size 64 --scale-size 32: scale 1 sees the photo resized (antialiased), scales 2 and 3 the squares cut
    from the 64-px photo itself (scale 3 through the composed square), each at 32 px; Grad-CAM's map is scale 1's."""
    import torch.nn.functional as F

    from engine.models.racnn import STEEPNESS, compose, zoom

    torch.manual_seed(0)
    m = create_model("racnn_smallnet", 3, scale_size=32).eval()
    assert m.arch["scale_size"] == 32 and m.scale_size == 32
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = m.racnn_outputs(x)
        sq = out.squares
        assert [tuple(i.shape[-2:]) for i in out.inputs] == [(32, 32)] * 3
        assert torch.allclose(out.inputs[0], F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True))
        assert torch.allclose(out.inputs[1], zoom(x, sq[:, 0], STEEPNESS, (32, 32)))
        assert torch.allclose(out.inputs[2], zoom(x, compose(sq[:, 0], sq[:, 1]), STEEPNESS, (32, 32)))
        assert m.forward_features(x).shape == m.nets[0](out.inputs[0]).shape
        assert torch.allclose(m.zoom_squares(x)[:, 1], compose(sq[:, 0], sq[:, 1]))
    with pytest.raises(ConfigError, match=r"scale_size=8: .*32 or more"):
        create_model("racnn_smallnet", 3, scale_size=8)


def test_every_parameter_learns_over_a_cycle_and_a_batch_can_be_fitted():
    m = _tiny(2).train()
    crit = RACNNCriterion(warmup=0)
    x, y = torch.randn(4, 3, 48, 48), torch.tensor([0, 1, 0, 1])
    seen = set()
    for _ in range(2):
        loss, _ = crit(m, x, y)
        loss.backward()
        seen |= {n for n, p in m.named_parameters() if p.grad is not None}
        m.zero_grad(set_to_none=True)
    assert seen == {n for n, _ in m.named_parameters()}
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    first = None
    for step in range(24):
        loss, parts = crit(m, x, y)
        first = float(parts["ce"]) if first is None else first
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert float(parts["ce"]) < 0.5 * first


@pytest.mark.parametrize("name", list_models("racnn"))
def test_registry_models_shapes(name):
    if name in ("racnn_resnet50", "racnn_vgg16_bn"):  # three of them: shapes only, at the smallest input
        size = 32
    else:
        size = 64
    m = create_model(name, 3).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        logits, both = m.scales_and_squares(x)
        sq = m.zoom_squares(x)
    assert torch.equal(both, sq)
    assert [tuple(lg.shape) for lg in logits] == [(1, 3)] * 4
    assert sq.shape == (1, 2, 3) and bool(((sq >= 0) & (sq <= 1)).all())
    assert m.arch["name"] == name and m.groups is None


def test_bad_options_are_one_line():
    with pytest.raises(ConfigError, match=r"margin=-1.*0.05"):
        RACNNCriterion(margin=-1)
    with pytest.raises(ConfigError, match=r"apn_warmup=1.5"):
        RACNNCriterion(warmup=1.5)
    with pytest.raises(ConfigError, match=r"apn_gradient='ring': use one of boxcar, thirds"):
        RACNNCriterion(gradient="ring")
    with pytest.raises(ConfigError, match=r"num_classes=1"):
        create_model("racnn_smallnet", 1)
    with pytest.raises(ConfigError, match=r"steepness=0"):
        create_model("racnn_smallnet", 3, steepness=0)
    assert np.isfinite(float(_tiny()(torch.randn(1, 3, 32, 32)).detach().sum()))
