"""TASN (engine.models.tasn) the timm way at tiny sizes: trilinear attention, shapes, gradients, the sampler
barrier, overfitting one batch, pretrained state dicts."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision import models as tvm

from engine.errors import ConfigError, WeightsError
from engine.models.tasn import (TASN, TASNCriterion, TASNOutputs, tasn_mobilenet_v2, tasn_resnet18, tasn_resnet50,
                                trilinear_attention)

BUILDERS = {"tasn_resnet18": tasn_resnet18, "tasn_resnet50": tasn_resnet50, "tasn_mobilenet_v2": tasn_mobilenet_v2}
INPUT, SAMPLE, CLASSES = 64, 48, 3


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _batch(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3, INPUT, INPUT), torch.arange(n) % CLASSES


# ----------------------------------------------------------------------------------- trilinear attention
def test_trilinear_attention_hand_computed():
    """X = [[1, 0], [0, 1]] (2 channels, 2 positions), τ = 1: N₁(X) = [[a, b], [b, a]], a = e/(e+1), b = 1-a;
    N₁Xᵀ is the same matrix; N₂ = [[σ, 1-σ], [1-σ, σ]], σ = e^a/(e^a+e^b); M = N₂X = N₂."""
    x = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    a = math.e / (math.e + 1)
    b = 1 - a
    sigma = math.exp(a) / (math.exp(a) + math.exp(b))
    expected = torch.tensor([[[[sigma, 1 - sigma]], [[1 - sigma, sigma]]]], dtype=torch.float64)
    assert torch.allclose(trilinear_attention(x, tau=1.0), expected, atol=1e-12)


def test_trilinear_attention_matches_the_formula_and_rows_sum_to_one():
    x = torch.rand(2, 4, 3, 5, dtype=torch.float64)
    f = x.reshape(2, 4, 15)
    n1 = torch.exp(7 * f) / torch.exp(7 * f).sum(dim=2, keepdim=True)
    rel = torch.einsum("bcp,bdp->bcd", n1, f)
    n2 = torch.exp(rel) / torch.exp(rel).sum(dim=2, keepdim=True)
    assert torch.allclose(n1.sum(2), torch.ones(2, 4, dtype=torch.float64))
    assert torch.allclose(n2.sum(2), torch.ones(2, 4, dtype=torch.float64))
    assert torch.allclose(trilinear_attention(x), torch.einsum("bcd,bdp->bcp", n2, f).reshape(2, 4, 3, 5))
    same = torch.rand(1, 1, 3, 5).expand(1, 6, 3, 5)  # identical channels: N₂'s rows sum to 1, so M = X
    assert torch.allclose(trilinear_attention(same), same, atol=1e-6)


# ------------------------------------------------------------------------------------------ the models
@pytest.mark.parametrize("name", list(BUILDERS))
def test_shapes_and_finite(name):
    m = BUILDERS[name](CLASSES, input_size=INPUT, sample_size=SAMPLE).eval()
    x, _ = _batch()
    with torch.no_grad():
        logits = m(x)
        out = m.tasn_outputs(x)
        feats = m.forward_features(x)
        maps = m.attention_maps(x)
    assert logits.shape == (2, CLASSES) and torch.isfinite(logits).all()
    assert isinstance(out, TASNOutputs)
    for t in (out.att_logits, out.part_logits, out.master_logits, out.shared_part_logits, out.shared_master_logits):
        assert t.shape == (2, CLASSES) and torch.isfinite(t).all()
    assert torch.allclose(out.master_logits, logits, atol=1e-5)  # eval: forward is the master net on I_s
    assert out.structure_images.shape == out.detail_images.shape == (2, 3, SAMPLE, SAMPLE)
    assert out.structure_grid.shape == (2, SAMPLE, SAMPLE, 2)
    assert feats.shape == (2, m.attention_width, SAMPLE // 8, SAMPLE // 8) and feats.min() >= 0
    assert torch.allclose(m.forward_head(feats), out.att_logits, atol=1e-5)
    assert maps["trilinear"].shape == feats.shape
    assert maps["structure"].shape == maps["detail"].shape == (2, INPUT, INPUT)
    assert torch.allclose(maps["structure"], maps["detail"] ** 2, rtol=1e-4, atol=1e-6)  # eval: both the sum
    backbone, head = m.param_groups()
    assert len(backbone) + len(head) == len(list(m.parameters()))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_parameter_gets_a_gradient(name):
    m = BUILDERS[name](CLASSES, input_size=INPUT, sample_size=SAMPLE).train()
    loss, parts = TASNCriterion()(m, *_batch())
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reaches {missing[:5]}"
    assert set(parts) == {"att", "part", "master", "shared", "distill"}
    total = parts["att"] + 0.5 * (parts["part"] + parts["master"] + parts["shared"]) + parts["distill"]
    assert torch.isfinite(loss) and torch.allclose(loss.detach(), total)


def test_no_gradient_through_the_sampler():
    """The maps are constants to the sampler: the part/master/distillation terms give the attention network
    no gradient at all, while its own CE does train it."""
    m = tasn_resnet18(CLASSES, input_size=INPUT, sample_size=SAMPLE).train()
    x, y = _batch()
    seen: list[torch.Tensor] = []
    hook = m.attention_backbone.register_forward_hook(lambda mod, inp, out: seen.append(out))
    out = m.tasn_outputs(x)
    hook.remove()
    ce = torch.nn.functional.cross_entropy
    others = (ce(out.part_logits, y) + ce(out.master_logits, y) + ce(out.shared_part_logits, y)
              + ce(out.shared_master_logits, y)
              - (torch.softmax(out.part_logits / 10, 1) * torch.log_softmax(out.master_logits / 10, 1)).sum(1).mean())
    att_params = list(m.attention_backbone.parameters())
    grads = torch.autograd.grad(others, [seen[0], *att_params], allow_unused=True, retain_graph=True)
    assert all(g is None or not g.abs().sum() > 0 for g in grads)
    assert not out.structure_grid.requires_grad and not out.detail_grid.requires_grad
    att_grads = torch.autograd.grad(ce(out.att_logits, y), att_params, allow_unused=True)
    assert all(g is not None for g in att_grads) and sum(float(g.abs().sum()) for g in att_grads) > 0


def test_detail_map_is_random_in_training_and_the_sum_in_eval():
    m = tasn_mobilenet_v2(CLASSES, input_size=INPUT, sample_size=SAMPLE)
    x, _ = _batch()
    m.eval()
    a, b = m.attention_maps(x)["detail"], m.attention_maps(x)["detail"]
    assert torch.equal(a, b)
    m.train()
    torch.manual_seed(1)
    c = m.attention_maps(x)["detail"]
    assert not torch.allclose(c, a)


def test_resnet18_overfits_one_batch():
    m = tasn_resnet18(CLASSES, input_size=INPUT, sample_size=SAMPLE).train()
    x, y = torch.randn(4, 3, INPUT, INPUT), torch.tensor([0, 1, 2, 0])
    crit = TASNCriterion()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    history = []
    for _ in range(20):
        loss, parts = crit(m, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ce = float(parts["att"] + parts["part"] + parts["master"] + parts["shared"])
        history.append((loss.item(), ce, float(parts["distill"])))
    # the detail channel is drawn at random each step, so judge the best of the last steps
    best = min(history[-5:], key=lambda h: h[0])
    assert best[1] < 0.1 * history[0][1], history
    assert best[0] < 0.5 * history[0][0], history  # total: the distillation term stays near the part net's entropy


# ------------------------------------------------------------------------------------ weights and errors
def test_pretrained_state_dict_initialises_both_networks():
    state = tvm.mobilenet_v2().state_dict()
    m = tasn_mobilenet_v2(CLASSES, pretrained_backbone=state, input_size=INPUT, sample_size=SAMPLE)
    assert torch.equal(m.attention_backbone.body[0][0].weight, state["features.0.0.weight"])
    assert torch.equal(m.backbone[0][0].weight, state["features.0.0.weight"])
    state18 = tvm.resnet18().state_dict()
    r = tasn_resnet18(CLASSES, pretrained_backbone=state18, input_size=INPUT, sample_size=SAMPLE)
    assert torch.equal(r.attention_backbone.body[6][0].conv1.weight, state18["layer3.0.conv1.weight"])
    assert torch.equal(r.backbone[7][1].conv2.weight, state18["layer4.1.conv2.weight"])
    assert r.attention_backbone.body[5][0].conv1.stride == (1, 1)  # layer2 at stride 1 (authors)
    with pytest.raises(WeightsError, match="do not fit"):
        tasn_resnet18(CLASSES, pretrained_backbone=state, input_size=INPUT, sample_size=SAMPLE)


def test_bad_values():
    with pytest.raises(ConfigError, match="num_classes=1"):
        tasn_mobilenet_v2(1, input_size=INPUT, sample_size=SAMPLE)
    with pytest.raises(ConfigError, match="temperature"):
        TASNCriterion(temperature=0)
    assert isinstance(tasn_mobilenet_v2(2, input_size=INPUT, sample_size=SAMPLE), TASN)
