"""Activation checkpointing of the backbone stages (engine.models.checkpoint): the same loss, gradients and
BatchNorm statistics as without it, the forward pass really run twice, the saved model unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from engine.losses.gain import GAINCriterion
from engine.losses.mcloss import CECriterion
from engine.losses.parts import PartsCriterion
from engine.models import create_model
from engine.models.checkpoint import CheckpointedSequential, is_checkpointed, segments, set_checkpointing
from engine.training.loop import LossModel



def _parts() -> PartsCriterion:
    """The training default: the equivariance pass a fixed target; a seeded draw of its transform."""
    return PartsCriterion(equiv_stop_grad=True, generator=torch.Generator().manual_seed(3))


CASES = [  # (model, kwargs, criterion, image side)
    ("smallnet", {"head": "parts", "parts": 3}, _parts, 40),
    ("mobilenet_v2", {"head": "parts", "parts": 2, "fine": True}, _parts, 64),
    ("resnet18", {}, CECriterion, 48),
    ("smallnet-gain", {}, lambda: GAINCriterion(CECriterion()), 40),  # Grad-CAM in the graph, an erased pass
]


def _step(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(11)  # part dropout draws the same masks in both runs
    loss, _ = net(x, y)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name,kwargs,criterion,side", CASES, ids=[c[0] for c in CASES])
def test_checkpointing_gives_the_same_gradients_and_statistics(name, kwargs, criterion, side):
    torch.manual_seed(0)
    model = create_model(name.split("-")[0], 3, 2, **kwargs).double().train()
    plain = LossModel(model, criterion())
    ckpt = copy.deepcopy(plain)
    ckpt.criterion = criterion()  # a fresh generator: the same similarity transform as the plain run draws
    assert set_checkpointing(ckpt, True) >= 2 and is_checkpointed(ckpt) and not is_checkpointed(plain)
    first_conv = lambda net: next(m for m in net.model.backbone.modules() if isinstance(m, nn.Conv2d))  # noqa: E731
    calls = {"plain": 0, "ckpt": 0}
    first_conv(plain).register_forward_hook(lambda *a: calls.__setitem__("plain", calls["plain"] + 1))
    first_conv(ckpt).register_forward_hook(lambda *a: calls.__setitem__("ckpt", calls["ckpt"] + 1))
    x = torch.randn(4, 3, side, side, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    loss_a, grads_a = _step(plain, x, y)
    passes = 2 if isinstance(plain.criterion, (PartsCriterion, GAINCriterion)) else 1  # + equivariance / erased
    assert calls["plain"] == passes
    loss_b, grads_b = _step(ckpt, x, y)
    recomputed = 2 if isinstance(plain.criterion, GAINCriterion) else 1  # the passes with a gradient
    assert calls["ckpt"] == passes + recomputed  # their first segment ran again in the backward pass
    assert loss_b == pytest.approx(loss_a, rel=1e-12)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 4
    for key, g in grads_a.items():
        assert torch.allclose(grads_b[key], g, rtol=1e-9, atol=1e-12), key
    buffers_a, buffers_b = dict(plain.named_buffers()), dict(ckpt.named_buffers())
    assert buffers_a.keys() == buffers_b.keys() and any("running_mean" in k for k in buffers_a)
    for key, b in buffers_a.items():  # BatchNorm updated once, not again by the recomputation
        assert torch.equal(buffers_b[key], b), key


def test_float32_gradients_match_to_float_tolerance():
    torch.manual_seed(1)
    model = create_model("mobilenet_v2", 3, 2, head="parts", parts=2, fine=True).train()
    plain = LossModel(model, PartsCriterion(generator=torch.Generator().manual_seed(5)))
    ckpt = copy.deepcopy(plain)
    ckpt.criterion = PartsCriterion(generator=torch.Generator().manual_seed(5))
    set_checkpointing(ckpt, True)
    x, y = torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 2])
    (_, a), (_, b) = _step(plain, x, y), _step(ckpt, x, y)
    for key, g in a.items():
        assert torch.allclose(b[key], g, rtol=1e-4, atol=1e-6), key


def test_the_saved_model_and_inference_are_unchanged():
    torch.manual_seed(2)
    model = create_model("mobilenet_v2", 4, 2, head="parts", parts=2, fine=True).eval()
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    assert set_checkpointing(model, True) == 19  # MobileNetV2's 14 + 5 blocks
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert set_checkpointing(model, False) == 0 and not is_checkpointed(model)
    assert type(model.backbone.early) is nn.Sequential


def test_segments_keep_norms_and_activations_with_their_layer():
    body = create_model("resnet18", 3).backbone  # conv1, bn1, relu, maxpool, layer1..4 of 2 blocks each
    cut = segments(body)
    assert [type(m).__name__ for m in cut[0]] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert len(cut) == 1 + 8 and all(len(s) == 1 for s in cut[1:])
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 1),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))
    assert [len(s) for s in segments(flat)] == [3, 3]


def test_other_models_are_left_alone():
    model = create_model("tasn_mobilenet_v2", 3, input_size=64, sample_size=64)
    assert set_checkpointing(model, True) == 0
    assert not any(isinstance(m, CheckpointedSequential) for m in model.modules())
