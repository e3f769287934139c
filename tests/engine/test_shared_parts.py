"""Shared parts (PDiscoNet, docs/METHODS.md#shared-parts): fine features, the model the timm way, and the losses against
hand-computed tiny cases."""

import math

import pytest
import torch
from torch import nn

from engine.errors import ConfigError
from engine.models.backbones import BACKBONES, smallnet
from engine.models.fine import fine_backbone
from engine.models import create_model
from engine.models.shared_parts import SharedPartsNet
from engine.losses.parts import (PartsCriterion, Similarity, border_background_loss, concentration_loss,
                                          equivariance_loss, orthogonality_loss, pixel_entropy_loss, presence_loss,
                                          random_similarity, total_variation_loss, transform_images)

from ..conftest import MOBILENET_WEIGHTS, fit_one_batch, need

FINE = {"resnet18": (768, 16), "resnet50": (3072, 16), "vgg16_bn": (512, 16), "mobilenet_v2": (1376, 16),
        "smallnet": (128, 8)}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def small_model(classes=3, parts=4, **kw):
    f, w, s = smallnet()
    return SharedPartsNet(f, w, s, classes, parts, **kw)


def pixel_model(parts=2, dtype=torch.float64, **kw):
    """Maps that are a function of each pixel's colour alone: they move exactly with the image."""
    return SharedPartsNet(nn.Identity(), 3, 1, 2, parts, **kw).to(dtype)


def fg_bg(fg):
    """(B, K, h, w) foreground maps + background = 1 − their sum."""
    return torch.cat((fg, 1 - fg.sum(1, keepdim=True)), dim=1)


# -- fine features ------------------------------------------------------------------------------------------------
def test_every_registry_backbone_has_fine_features():
    assert set(FINE) == set(BACKBONES)


@pytest.mark.parametrize("name", list(FINE))
@pytest.mark.parametrize("px", [224, 448])
def test_fine_shapes_and_strides(name, px):
    m, width, stride = fine_backbone(name)
    assert (width, stride) == FINE[name]
    y = m.to("meta")(torch.empty(2, 3, px, px, device="meta"))  # shapes only: no arithmetic
    assert tuple(y.shape) == (2, width, px // stride, px // stride)


def test_fine_mobilenet_is_both_stages():
    torch.manual_seed(0)
    m, _, _ = fine_backbone("mobilenet_v2")
    torch.manual_seed(0)  # the same random weights
    body, _, _ = BACKBONES["mobilenet_v2"][0](None)
    m.eval(), body.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y, early, last = m(x), body[:14](x), body(x)
    assert y.shape == (1, 1376, 4, 4) and last.shape[-1] == 2
    assert torch.equal(y[:, 1280:], early)  # the stride-16 stage, as it is
    # 2x bilinear upsampling (half-pixel centres, clamped edges) keeps each channel's mean exactly
    assert torch.allclose(y[:, :1280].mean((2, 3)), last.mean((2, 3)), atol=1e-5)


def test_fine_weights_load_as_the_registry():
    path = str(need(MOBILENET_WEIGHTS))
    m, _, _ = fine_backbone("mobilenet_v2", path)
    state = torch.load(path, weights_only=True)
    assert torch.equal(m.early[0][0].weight, state["features.0.0.weight"])
    assert torch.equal(m.late[-1][0].weight, state["features.18.0.weight"])


def test_fine_unknown_name():
    with pytest.raises(ConfigError, match="'nope'"):
        fine_backbone("nope")


# -- the model ------------------------------------------------------------------------------------------------------
def test_shapes_finite_and_maps_sum_to_one():
    m = small_model(classes=3, parts=4).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = m.forward_parts(x)
        z = m.embed(x)
        maps = m.forward_features(x)
        head = m.forward_head(maps, z)
    assert out.maps.shape == (2, 5, 8, 8) and out.part_vectors.shape == (2, 5, 128)
    assert out.part_logits.shape == (2, 4, 3) and out.logits.shape == (2, 3)
    assert all(torch.isfinite(t).all() for t in out if t is not None) and out.squares is None
    assert torch.allclose(out.maps.sum(1), torch.ones(2, 8, 8), atol=1e-6)
    assert torch.equal(maps, out.maps) and torch.allclose(head, out.logits) and torch.allclose(m(x), out.logits)
    assert torch.allclose(out.logits, out.part_logits.mean(1))  # image logits: mean over the K parts
    with pytest.raises(ConfigError, match="embed"):
        m.forward_head(maps)


def test_huge_features_stay_finite():
    m = pixel_model(parts=3, dtype=torch.float32)
    maps = m.forward_features(torch.randn(2, 3, 6, 6) * 1000)  # logits of order −1e6
    assert torch.isfinite(maps).all() and torch.allclose(maps.sum(1), torch.ones(2, 6, 6))


def test_part_logits_and_vectors_by_hand():
    m = SharedPartsNet(nn.Identity(), 2, 1, 2, parts=1).double().eval()
    with torch.no_grad():
        m.prototypes.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]).view(2, 2, 1, 1))
    z = torch.ones(1, 2, 1, 2, dtype=torch.float64)  # two pixels, both z = (1, 1)
    # ‖z − p0‖² = 0² + 1² = 1; ‖z − p1‖² = 1² + (−1)² = 2 → logits (−1, −2)
    assert m.part_logit_maps(z)[0, :, 0, 0].tolist() == pytest.approx([-1.0, -2.0])
    a0 = math.exp(-1) / (math.exp(-1) + math.exp(-2))  # 0.7311
    out = m.forward_parts(z)
    assert out.maps[0, :, 0, 1].tolist() == pytest.approx([a0, 1 - a0])
    # v0 = mean over the 2 pixels of a0·(1, 1)
    assert out.part_vectors[0].flatten().tolist() == pytest.approx([a0, a0, 1 - a0, 1 - a0])


def test_part_dropout_drops_whole_parts_and_rescales():
    m = pixel_model(parts=8, dtype=torch.float32, part_dropout=0.5)  # no batch norm: train = eval but dropout
    x = torch.rand(64, 3, 4, 4)
    with torch.no_grad():
        ref = m.eval().forward_parts(x).part_logits
        got = m.train().forward_parts(x).part_logits
    dropped = (got == 0).all(dim=2)
    assert 0.35 < dropped.float().mean() < 0.65
    assert torch.allclose(got[~dropped], 2 * ref[~dropped], atol=1e-5)  # kept parts × 1/(1 − p)
    m.part_dropout = 0.0
    assert torch.allclose(m.forward_parts(x).part_logits, ref)


def test_gumbel_maps_are_random_but_still_sum_to_one():
    m = pixel_model(parts=3, gumbel=True).train()
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    a, b = m.forward_features(x), m.forward_features(x)
    assert not torch.allclose(a, b) and torch.allclose(a.sum(1), torch.ones_like(a[:, 0]))
    assert torch.equal(m.eval().forward_features(x), m.forward_features(x))


def test_every_parameter_gets_a_gradient():
    m = small_model(classes=3, parts=4).train()
    loss, parts = PartsCriterion()(m, torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 2]))
    loss.backward()
    assert torch.isfinite(loss) and set(parts) == {"ce", "conc", "orth", "equiv", "pres"}
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    g = m.modulation.grad
    assert (g[:, :4].abs().sum(0) > 0).all() and torch.equal(g[:, 4], torch.zeros(128))  # background: never scored


def test_param_groups_authors_rates():
    m = small_model()
    groups = m.param_groups()
    assert [(g["name"], g["lr"], g["lr_scale"]) for g in groups] == [
        ("backbone", pytest.approx(1e-4), 1.0), ("classifier", pytest.approx(1e-3), 10.0),
        ("modulation", pytest.approx(1e-2), 100.0)]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in m.parameters())
    assert id(m.prototypes.weight) in [id(p) for p in groups[0]["params"]]
    opt = torch.optim.Adam(m.param_groups(base_lr=1e-3))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-2, 1e-1])
    backbone, head = m.param_groups(two_groups=True)
    assert len(backbone) + len(head) == len(list(m.parameters()))
    assert any(p is m.modulation for p in head)


def test_builders():
    m = create_model("smallnet", 4, head="parts", fine=True, parts=3)
    assert m.parts == 3 and m.width == 128 and m.stride == 8
    m = create_model("mobilenet_v2", 5, xi=3, head="parts", fine=True, parts=2)
    assert m.width == 1376 and m.stride == 16 and m.fc.out_features == 5
    with pytest.raises(ConfigError, match="parts=0"):
        create_model("smallnet", 4, head="parts", fine=True, parts=0)


def test_small_model_overfits_one_batch():
    m = small_model(classes=2, parts=4).train()
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    crit = PartsCriterion()
    opt = torch.optim.Adam(m.param_groups(base_lr=1e-3))  # the authors' ratios, a faster base
    (loss0, first), (loss, parts) = fit_one_batch(crit, m, x, y, opt, 40)
    assert loss < 0.5 * loss0 and parts["ce"] < 0.5 * first["ce"], (loss0, first, parts)
    assert parts["pres"] < 0.75  # foreground parts still present: not collapsed into the background


# -- losses by hand -----------------------------------------------------------------------------------------------
def test_concentration_by_hand():
    one_hot = torch.zeros(1, 1, 3, 3)
    one_hot[0, 0, 1, 2] = 1
    assert concentration_loss(fg_bg(one_hot)).item() == 0.0  # all mass on its centroid
    diag = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    # centroid (0.5, 0.5); each mass pixel: ((0.5)/2)² + ((0.5)/2)² = 0.125; sum 0.25 over 4 pixels → 0.0625
    assert concentration_loss(fg_bg(diag)).item() == pytest.approx(0.0625)
    # with a second, one-hot part: mean over 2 parts → 0.03125
    two = torch.cat((diag, torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])), 1)
    assert concentration_loss(fg_bg(two)).item() == pytest.approx(0.03125)
    # 1 × 4 grid, mass at columns 0 and 3: centroid column 1.5; (1.5 / 4)² = 0.140625 twice → 0.28125 / 4
    row = torch.tensor([[[[1.0, 0.0, 0.0, 1.0]]]])
    assert concentration_loss(fg_bg(row)).item() == pytest.approx(0.0703125)
    # the background (last map) is not a part here
    assert concentration_loss(torch.cat((one_hot, torch.rand(1, 1, 3, 3)), 1)).item() == 0.0


def test_orthogonality_by_hand():
    assert orthogonality_loss(torch.eye(3).unsqueeze(0) * 5).item() == pytest.approx(0.0)
    # v0 = (1, 0), v1 = (3, 3): cos = 1/√2 off the diagonal; squares 0.5, 0.5 over 4 entries → 0.25
    assert orthogonality_loss(torch.tensor([[[1.0, 0.0], [3.0, 3.0]]])).item() == pytest.approx(0.25)
    # v0 = v1 = e0, v2 = e2: two off-diagonal ones over 9 entries → 2/9; batch mean with an orthogonal sample
    v = torch.stack((torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 0, 1]]), torch.eye(3)))
    assert orthogonality_loss(v).item() == pytest.approx((2 / 9 + 0) / 2)


def test_presence_by_hand():
    fg = torch.zeros(2, 1, 8, 8)
    fg[0, 0, 3:6, 3:6] = 1  # a full 3×3 patch of part 0 inside the cropped 4×4 centre of sample 0
    maps = fg_bg(fg)  # the background is 1 everywhere in sample 1
    assert presence_loss(maps).item() == pytest.approx(0.0)
    fg = torch.zeros(2, 1, 8, 8)
    fg[0, 0, 4, 4] = 1  # one cell: best 3×3 average 1/9; background 1 → 1 − (1/9 + 1)/2 = 4/9
    assert presence_loss(fg_bg(fg)).item() == pytest.approx(4 / 9)
    assert presence_loss(fg_bg(fg), include_background=False).item() == pytest.approx(8 / 9)
    fg = torch.zeros(2, 1, 8, 8)
    fg[0, 0, 0:3, 0:3] = 1  # a full patch in the corner: the 2-cell crop keeps one of its cells → 4/9 again
    assert presence_loss(fg_bg(fg)).item() == pytest.approx(4 / 9)


def test_equivariance_exact_for_an_exact_transform():
    maps = torch.rand(2, 4, 6, 6, dtype=torch.float64).softmax(1)
    assert equivariance_loss(maps, maps, Similarity()).item() == pytest.approx(0.0, abs=1e-12)
    m, x = pixel_model(parts=3), torch.rand(2, 3, 8, 8, dtype=torch.float64) * 5  # sharp maps
    for angle in (90.0, -90.0):
        sim = Similarity(angle=angle)  # square grid: pixel centres land on pixel centres
        maps_t = m.forward_features(transform_images(x, sim))
        assert equivariance_loss(m.forward_features(x), maps_t, sim).item() == pytest.approx(0.0, abs=1e-9)
        wrong = Similarity(angle=-angle)  # mapping back the other way: 180° off
        assert equivariance_loss(m.forward_features(x), maps_t, wrong).item() > 0.2


def test_equivariance_translation_by_hand():
    # one part, one-hot at row 1, column 1 of a 4×6 grid; its transformed map one-hot at column 2:
    # a shift of one cell to the right is t_x = 2/6 in normalised units
    maps, maps_t = torch.zeros(1, 2, 4, 6), torch.zeros(1, 2, 4, 6)
    maps[0, 0, 1, 1] = maps_t[0, 0, 1, 2] = 1
    maps[:, 1], maps_t[:, 1] = 1 - maps[:, 0], 1 - maps_t[:, 0]
    assert equivariance_loss(maps, maps_t, Similarity(translate=(2 / 6, 0.0))).item() == pytest.approx(0.0)
    assert equivariance_loss(maps, maps_t, Similarity(translate=(-2 / 6, 0.0))).item() == pytest.approx(1.0)
    # constant foreground: masked, the 5 columns that stay in frame match → 0; with the authors' zero fill the
    # last column (4 cells) comes back 0: cos = 20 / (√24 · √20) = √(5/6) → loss 1 − 0.9129
    flat = torch.stack((torch.ones(4, 6), torch.zeros(4, 6))).unsqueeze(0)
    sim = Similarity(translate=(2 / 6, 0.0))
    assert equivariance_loss(flat, flat, sim).item() == pytest.approx(0.0, abs=1e-6)
    assert equivariance_loss(flat, flat, sim, mask_out_of_frame=False).item() == pytest.approx(1 - math.sqrt(5 / 6),
                                                                                      abs=1e-5)


def test_equivariance_general_transform_on_smooth_images():
    m = pixel_model(parts=3)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 48), indexing="ij")
    x = torch.stack((torch.exp(-((xs - 0.3) ** 2 + ys ** 2) * 4), xs, ys)).unsqueeze(0).double() * 3
    sim = Similarity(angle=30.0, translate=(0.15, -0.1), scale=1.25)
    maps_t = m.forward_features(transform_images(x, sim))
    good = equivariance_loss(m.forward_features(x), maps_t, sim, image_size=(32, 48)).item()
    bad = equivariance_loss(m.forward_features(x), maps_t, Similarity(-30.0, (-0.15, 0.1), 0.8), (32, 48)).item()
    assert good < 0.01 and bad > 5 * good, (good, bad)


def test_random_similarity_ranges_and_seed():
    torch.manual_seed(3)
    a = [random_similarity() for _ in range(300)]
    torch.manual_seed(3)
    assert [random_similarity() for _ in range(300)] == a
    assert all(-90 <= s.angle < 90 and 0.8 <= s.scale < 1.4 for s in a)
    t = [abs(v) for s in a for v in s.translate]
    assert max(t) <= 50 / 224 and max(t) > 0.9 * 50 / 224  # ±50 px of a 448 px image, in half-sizes
    g = torch.Generator().manual_seed(1)
    assert random_similarity(g) == random_similarity(torch.Generator().manual_seed(1))


def test_criterion_is_deterministic_under_the_global_seed():
    m, x, y = small_model(parts=3).eval(), torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    crit = PartsCriterion()
    torch.manual_seed(5)
    a = crit(m, x, y)[0]
    torch.manual_seed(5)
    assert torch.equal(crit(m, x, y)[0], a)
    torch.manual_seed(5)  # a fixed target for the original pass: same value, less gradient
    assert torch.allclose(PartsCriterion(equiv_stop_grad=True)(m, x, y)[0], a)
    _, parts = PartsCriterion(equiv=0.0)(m, x, y)
    assert "equiv" not in parts


def test_criterion_weights_sum_the_terms():
    m, x, y = small_model(parts=3).eval(), torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    torch.manual_seed(1)
    total, p = PartsCriterion()(m, x, y)
    want = 2 * p["ce"] + 1000 * p["conc"] + p["orth"] + p["equiv"] + p["pres"]
    assert total.item() == pytest.approx(want.item(), rel=1e-5)
    total, p = PartsCriterion.pdiscoformer()(m, x, y)
    assert {"tv", "border", "entropy"} <= set(p)
    want = 2 * p["ce"] + p["orth"] + p["equiv"] + p["pres"] + p["tv"] + 2 * p["border"] + p["entropy"]
    assert total.item() == pytest.approx(want.item(), rel=1e-5)


def test_pdiscoformer_terms_by_hand():
    fg = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # one step down and one step right in the part map and in the background: 4 / (1 · 2 · 2) = 1
    assert total_variation_loss(fg_bg(fg)).item() == pytest.approx(1.0)
    assert pixel_entropy_loss(fg_bg(fg)).item() == pytest.approx(0.0)
    assert pixel_entropy_loss(torch.full((1, 2, 3, 3), 0.5)).item() == pytest.approx(math.log(2))
    bg_full = fg_bg(torch.zeros(2, 1, 5, 5))  # background 1 in the corners → −log 1 = 0
    assert border_background_loss(bg_full).item() == pytest.approx(0.0)
    assert border_background_loss(fg_bg(torch.full((2, 1, 5, 5), 0.5))).item() == pytest.approx(math.log(2))


def test_a_stopped_equivariance_pass_is_a_fixed_target():
    """``equiv_stop_grad``: the gradient is that of the equivariance loss with the transformed maps detached,
    and differs from the authors' (both passes back-propagated)."""
    m, x, y = small_model(parts=3).eval(), torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    only_equiv = {"ce": 0.0, "conc": 0.0, "orth": 0.0, "pres": 0.0, "equiv": 1.0}

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        params = [p for p in m.parameters() if p.requires_grad]
        return [g if g is not None else torch.zeros_like(p)
                for g, p in zip(torch.autograd.grad(loss, params, allow_unused=True), params)]

    torch.manual_seed(7)
    stopped = grads(PartsCriterion(**only_equiv, equiv_stop_grad=True)(m, x, y)[0])
    torch.manual_seed(7)
    both = grads(PartsCriterion(**only_equiv)(m, x, y)[0])
    torch.manual_seed(7)
    sim = random_similarity()  # the criterion's draw under the same seed
    target = m.forward_features(transform_images(x, sim)).detach()
    by_hand = grads(equivariance_loss(m.forward_parts(x).maps, target, sim, (64, 64)))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(stopped, by_hand))
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(stopped, both))
