"""Frozen BatchNorm and frozen stages of a partnet backbone (engine.models.freeze, ``--freeze-bn``,
``--freeze-stages``): the same function as eval-mode BatchNorm, statistics and frozen weights unchanged by a
training step, the state dict of the plain model, the stages of every backbone."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from engine.losses.parts import PartsCriterion
from engine.models import create_model
from engine.models.attention import attention_blocks
from engine.models.freeze import (STAGES, FoldedConv2d, FrozenBatchNorm2d, apply_freezing, body_layers,
                                  describe_frozen, freeze_batchnorm, freeze_stages)
from engine.errors import ConfigError


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def trained_stats(model: nn.Module, size: int = 48) -> nn.Module:
    """``model`` with BatchNorm statistics that are not the initial 0 / 1 (two training-mode passes)."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, size, size) * 2 + 0.5)
    return model


def parts_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """One training step of the parts method (Adam with weight decay over the trainable parameters)."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=1e-2)
    model.train()
    loss, _ = PartsCriterion(equiv_stop_grad=True)(model, x, y)
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "smallnet"])
def test_frozen_batchnorm_in_training_is_eval_mode_batchnorm(name):
    model = trained_stats(create_model(name, 3, head="parts", fine=True))
    ref = copy.deepcopy(model).eval()
    count = freeze_batchnorm(model.backbone)
    assert count == sum(isinstance(m, nn.BatchNorm2d) for m in ref.backbone.modules()) > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    folded = [m for m in model.backbone.modules() if isinstance(m, FoldedConv2d)]
    assert len(folded) == count  # every BatchNorm of these bodies follows its convolution
    model.train()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model.backbone(x), ref.backbone(x), atol=1e-5, rtol=1e-4)


def test_unfolded_frozen_batchnorm_is_the_affine_map():
    bn = nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    frozen = FrozenBatchNorm2d.from_batchnorm(bn).train()
    x = torch.randn(3, 4, 5, 5)
    assert torch.allclose(frozen(x), bn(x), atol=1e-6)
    assert not list(frozen.parameters())  # nothing for an optimizer


def test_a_training_step_leaves_statistics_and_frozen_stages_unchanged():
    model = trained_stats(create_model("mobilenet_v2", 3, head="parts", fine=True))
    apply_freezing(model, freeze_bn=True, stages=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = body_layers(model)
    frozen = {id(p) for layer in layers[:STAGES["mobilenet_v2"][1][1]] for p in layer.parameters()}
    parts_step(model, torch.randn(2, 3, 48, 48), torch.tensor([0, 1]))
    after = model.state_dict()
    stats = [k for k in before if k.startswith("backbone") and ("running_" in k or "num_batches" in k)]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)  # no BatchNorm statistic moved
    named = dict(model.named_parameters())
    for k, p in named.items():
        if id(p) in frozen:
            assert not p.requires_grad and torch.equal(before[k], after[k]), k
    later = [k for k, p in named.items() if k.startswith("backbone") and id(p) not in frozen]
    assert later and all(not torch.equal(before[k], after[k]) for k in later if ".weight" in k)


def test_the_frozen_model_saves_the_plain_models_state():
    model = trained_stats(create_model("resnet18", 3, head="parts", fine=True))
    plain = copy.deepcopy(model)
    apply_freezing(model, freeze_bn=True, stages=1)
    own, frozen = plain.state_dict(), model.state_dict()
    assert list(own) == list(frozen)
    assert all(own[k].shape == frozen[k].shape and own[k].dtype == frozen[k].dtype for k in own)


def test_a_saved_frozen_run_loads_into_the_plain_model(tmp_path):
    from engine.runs.files import save_state_dict
    from engine.runs.load import load_weights

    model = trained_stats(create_model("mobilenet_v2", 3, head="parts", fine=True))
    apply_freezing(model, freeze_bn=True, stages=3)
    parts_step(model, torch.randn(2, 3, 48, 48), torch.tensor([0, 2]))
    save_state_dict(tmp_path / "model.safetensors", model)
    plain = create_model("mobilenet_v2", 3, head="parts", fine=True)
    load_weights(plain, tmp_path / "model.safetensors")
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x), model.eval()(x), atol=1e-5)


@pytest.mark.parametrize("name", sorted(STAGES))
@pytest.mark.parametrize("fine", [False, True])
def test_every_backbones_stages_cover_its_body(name, fine):
    model = create_model(name, 3, fine=fine)
    layers = body_layers(model)
    assert len(layers) == STAGES[name][-1][1]
    assert [a for a, _ in STAGES[name]] == [0] + [b for _, b in STAGES[name][:-1]]  # contiguous, in order
    n = len(STAGES[name])
    freeze_stages(model, n)  # the whole body
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())  # also the body's own children
    assert all(p.requires_grad for p in model.fc.parameters())


def test_attention_blocks_after_a_frozen_stage_still_learn():
    model = create_model("mobilenet_v2", 3, fine=True, attention="cbam")
    freeze_stages(model, 5)
    blocks = attention_blocks(model)
    assert len(blocks) == 2 and all(p.requires_grad for b in blocks for p in b.parameters())
    assert "frozen: " in describe_frozen(model)


def test_frozen_stages_keep_eval_statistics_in_training_mode():
    model = trained_stats(create_model("vgg16_bn", 3))
    ref = copy.deepcopy(model).eval()
    freeze_stages(model, 2)
    first = nn.Sequential(*body_layers(model)[:STAGES["vgg16_bn"][1][1]]).train()
    ref_first = nn.Sequential(*body_layers(ref)[:STAGES["vgg16_bn"][1][1]])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(first(x), ref_first(x), atol=1e-5)


def test_stage_counts_out_of_range_are_refused():
    model = create_model("smallnet", 3)
    with pytest.raises(ConfigError, match=r"freeze_stages=4: smallnet has 3 stages; give 0 to 3"):
        freeze_stages(model, 4)
    assert describe_frozen(model) is None


def test_channels_last_on_the_cpu_for_mobilenet_v2_only_and_folding_works_in_it():
    from engine.device import uses_channels_last

    cpu = torch.device("cpu")
    assert uses_channels_last(cpu, "mobilenet_v2") and not uses_channels_last(cpu, "resnet18")
    assert not uses_channels_last(cpu, "tasn_mobilenet_v2") and not uses_channels_last(cpu)
    model = trained_stats(create_model("mobilenet_v2", 3, head="parts", fine=True))
    apply_freezing(model, freeze_bn=True, stages=1)
    twin = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()  # eval: no part dropout
    model.eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(twin(x.contiguous(memory_format=torch.channels_last)), model(x), atol=1e-5)
