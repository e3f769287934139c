"""Models the timm way, parametrised over the registry: shapes, no NaN, gradients everywhere, overfit one batch."""

import pytest
import torch

from engine.errors import ConfigError, WeightsError
from engine.losses.mcloss import MCLossCriterion
from engine.models import create_model, get_spec, list_models

from ..conftest import MOBILENET_WEIGHTS, fit_one_batch, need

PARTNETS = list_models("partnet")
SIZE = 64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", PARTNETS)
def test_forward_shapes_and_finite(name):
    m = create_model(name, num_classes=4, xi=3).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        f = m.forward_features(x)
        logits = m.forward_head(f)
    assert f.shape[:2] == (2, sum(m.groups)) and f.shape[1] == 12
    assert f.min() >= 0, "part channels are taken after a ReLU"
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    assert torch.equal(m(x), logits)
    assert m.groups == [3] * 4 and list(m.class_channels(2)) == [6, 7, 8]


@pytest.mark.parametrize("name", PARTNETS)
def test_every_parameter_gets_a_gradient(name):
    m = create_model(name, num_classes=3, xi=2).train()
    crit = MCLossCriterion(m.groups, mu=1.0, lam=1.0)
    loss, parts = crit(m, torch.randn(3, 3, SIZE, SIZE), torch.tensor([0, 1, 2]))
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reaches {missing[:5]}"
    assert torch.isfinite(loss)


def test_small_model_overfits_one_batch():
    m = create_model("smallnet", num_classes=3, xi=2).train()
    crit = MCLossCriterion(m.groups, mu=0.1, lam=1.0)
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    backbone, head = m.param_groups()
    opt = torch.optim.Adam([{"params": backbone, "lr": 3e-3}, {"params": head, "lr": 2e-2}])
    (_, first), (_, last) = fit_one_batch(crit, m, x, y, opt, 60)
    m.eval()
    assert last["ce"] < first["ce"] * 0.2
    assert (m(x).argmax(1) == y).all()


@pytest.mark.parametrize("name", [n for n in PARTNETS if n not in ("smallnet",)])
def test_each_backbone_overfits_one_batch(name):
    """Adam moves each head weight by at most its learning rate per step, and the two pooled part channels (BN +
    ReLU of a 2×2 map at 64 px) are about 0.4: at the old head rate 2e-2 the loss could fall only ~0.02 a step,
    so 15 steps ended near 0.35 from ~0.7, on the 0.5× line itself (resnet50 missed it by 0.002 with one thread
    and passed with two). At the training default head rate 0.05 and 20 steps, the worst ratio over 3 seeds × 4
    backbones was 0.20 (resnet18, seed 1), 2.5× inside the limit; a head or backbone that cannot learn stays
    near 1."""
    m = create_model(name, num_classes=2, xi=1).train()
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    backbone, head = m.param_groups()  # the new head learns at a higher rate, as in training (lr_head 0.05)
    opt = torch.optim.Adam([{"params": backbone, "lr": 1e-3}, {"params": head, "lr": 5e-2}])
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert min(losses[-3:]) < 0.5 * losses[0], losses


def test_split_part_channels_are_uneven_groups():
    m = create_model("smallnet", num_classes=5, part_channels="split")
    assert sum(m.groups) == 128 and m.groups[0] <= m.groups[-1] and isinstance(m.proj, torch.nn.Identity)


def test_bad_names_and_values():
    with pytest.raises(ConfigError, match="'nope'"):
        create_model("nope", 3)
    with pytest.raises(ConfigError, match="num_classes=1"):
        create_model("smallnet", 1)
    with pytest.raises(WeightsError, match="IMAGENET9"):
        create_model("resnet18", 3, pretrained="IMAGENET9")
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("resnet18", 3, pretrained="/no/such/file.pth")


def test_offline_torchvision_name_says_how_to_pass_a_file(monkeypatch, tmp_path):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(WeightsError, match="--pretrained /path/to/weights.pth"):
        create_model("mobilenet_v2", 3, pretrained="DEFAULT")
    assert get_spec("mobilenet_v2").default_pretrained == "IMAGENET1K_V1"


def test_local_pth_and_safetensors_weights(tmp_path):
    from safetensors.torch import save_file

    src = need(MOBILENET_WEIGHTS)
    m = create_model("mobilenet_v2", 3, pretrained=str(src))
    state = torch.load(src, weights_only=True)
    assert torch.equal(m.backbone[0][0].weight, state["features.0.0.weight"])
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    m2 = create_model("mobilenet_v2", 3, pretrained=str(st))
    assert torch.equal(m2.backbone[0][0].weight, state["features.0.0.weight"])
    with pytest.raises(WeightsError, match="do not fit"):
        create_model("resnet18", 3, pretrained=str(st))
