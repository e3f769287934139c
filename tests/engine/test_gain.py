"""GAIN's attention mining (docs/METHODS.md#gain) against hand-computed tiny cases, its training runs, and the
option's checks."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.cli import build_parser, main as cli
from engine.cli.train import config_from_args, worker_argv
from engine.errors import ConfigError
from engine.events import EpochEnd, drive
from engine.losses.gain import GAINCriterion, erase, gradcam_attention, mining_loss, scaled, soft_mask
from engine.losses.mcloss import CECriterion, MCLossCriterion
from engine.losses.parts import PartsCriterion
from engine.models import create_model
from engine.training.config import TrainConfig
from engine.training.loop import train
from engine import runs

from ..conftest import make_class_folders


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_soft_mask_erase_and_scaling_by_hand():
    a = torch.tensor([0.0, 0.5, 1.0, 0.6])
    # sigmoid(10 (A - 0.5)): -5, 0, 5, 1
    assert soft_mask(a).tolist() == pytest.approx([sig(-5), 0.5, sig(5), sig(1)], abs=1e-7)
    assert soft_mask(a, sigma=0.25, omega=4).tolist() == pytest.approx([sig(-1), sig(1), sig(3), sig(1.4)], abs=1e-7)
    images = torch.tensor([2.0, -1.0, 4.0]).view(1, 3, 1, 1).expand(1, 3, 1, 2)
    mask = torch.tensor([0.0, 0.5]).view(1, 1, 1, 2)  # over the colours
    assert erase(images, mask)[0, :, 0].tolist() == [[2.0, 1.0], [-1.0, -0.5], [4.0, 2.0]]
    assert scaled(torch.tensor([1.0, 3.0, 5.0]).view(1, 1, 1, 3)).flatten().tolist() == [0.0, 0.5, 1.0]
    assert scaled(torch.full((1, 1, 2, 2), 7.0)).flatten().tolist() == [0.0] * 4  # a constant map: no attention


def test_mining_loss_is_the_true_class_probability_on_the_erased_photos():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    assert mining_loss(logits, torch.tensor([1, 1])).item() == pytest.approx(0.75)
    assert mining_loss(logits, torch.tensor([1, 0])).item() == pytest.approx((0.75 + 0.25) / 2)


class Tiny(nn.Module):
    """Features = the input times a weight 1; head = spatial mean + linear: every number of GAIN by hand."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.fc = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0, 0.0], [0.5, 2.0, 0.0]]))

    def forward_features(self, x):
        return x * self.scale

    def forward_head(self, f):
        return self.fc(f.mean(dim=(2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def tiny_image() -> torch.Tensor:
    return torch.tensor([[[1.0, 3.0]], [[2.0, 0.0]], [[0.0, 0.0]]]).unsqueeze(0)  # (1, 3, 1, 2)


def test_gradcam_attention_by_hand():
    model = Tiny()
    x = tiny_image()
    f = model.forward_features(x)
    # ∂y_0/∂F_k = w_0k / (h·w): α = (0.5, -0.5, 0); CAM = ReLU(0.5·[1, 3] - 0.5·[2, 0]) = [0, 1.5] -> scaled [0, 1]
    a = gradcam_attention(f, model.forward_head(f), torch.tensor([0]), (1, 2))
    assert a.flatten().tolist() == pytest.approx([0.0, 1.0])
    # class 1: α = (0.25, 1, 0): CAM = [2.25, 0.75] -> [1, 0]
    a1 = gradcam_attention(f, model.forward_head(f), torch.tensor([1]), (1, 2))
    assert a1.flatten().tolist() == pytest.approx([1.0, 0.0])
    assert a.requires_grad  # kept in the graph: L_am reaches the weights through A


def test_gain_criterion_total_by_hand():
    model = Tiny()
    x, y = tiny_image(), torch.tensor([0])
    total, parts = GAINCriterion(CECriterion(), alpha=2.0)(model, x, y)
    # L_cls: pooled (2, 1, 0) -> logits (1, 3)
    ce = -math.log(math.exp(1) / (math.exp(1) + math.exp(3)))
    # A = [0, 1]: keep 1 - T = (1 - sig(-5), 1 - sig(5)) of each pixel
    keep = [1 - sig(-5), 1 - sig(5)]
    pooled = [(1 * keep[0] + 3 * keep[1]) / 2, (2 * keep[0] + 0 * keep[1]) / 2, 0.0]
    logits = [pooled[0] - pooled[1], 0.5 * pooled[0] + 2 * pooled[1]]
    am = math.exp(logits[0]) / (math.exp(logits[0]) + math.exp(logits[1]))
    assert parts["ce"].item() == pytest.approx(ce, abs=1e-6)
    assert parts["am"].item() == pytest.approx(am, abs=1e-6)
    assert total.item() == pytest.approx(ce + 2.0 * am, abs=1e-6)
    total.backward()
    assert torch.isfinite(model.fc.weight.grad).all() and model.fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("head", ["mcloss", "parts"])
def test_gain_wraps_every_method_and_logs_am(head):
    torch.manual_seed(0)
    kwargs = {"head": "parts", "parts": 3} if head == "parts" else {}
    model = create_model("smallnet", 3, **kwargs).train()
    base = PartsCriterion() if head == "parts" else MCLossCriterion(model.groups, 1.5, 10.0)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    plain_total, plain = base(model, x, y)
    total, parts = GAINCriterion(base)(model, x, y)
    assert set(parts) == set(plain) | {"am"} and 0 < parts["am"].item() < 1
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad
               and p is not getattr(model, "modulation", None))


def test_gain_on_a_zooming_parts_model_uses_the_zoomed_batch():
    torch.manual_seed(0)
    model = create_model("smallnet", 3, head="parts", parts=2, zoom=0.2).train()
    total, parts = GAINCriterion(PartsCriterion(equiv=0.0))(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    total.backward()
    assert "am" in parts and torch.isfinite(total)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp("gain"), classes=3, per_class=6, size=(36, 36))


def cfg(data, out, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(data=str(data), out=str(out), model="smallnet", method="ce", epochs=1, img_size=32,
                                 batch_size=6, seed=1), **kw})


def test_a_gain_run_logs_its_term_and_saves_its_settings(data, tmp_path):
    events = []
    drive(train(cfg(data, tmp_path / "run", gain=True, gain_alpha=0.5)), events.append)
    end = [e for e in events if isinstance(e, EpochEnd)][-1]
    assert 0 < end.train["am"] < 1 and end.train["loss"] == pytest.approx(end.train["ce"] + 0.5 * end.train["am"],
                                                                        rel=1e-5)
    saved = runs.read_meta(tmp_path / "run")["config"]
    assert (saved["gain"], saved["gain_alpha"], saved["gain_sigma"], saved["gain_omega"]) == (True, 0.5, 0.5, 10.0)
    # the CLI's resume keeps the run's GAIN settings when the flags are left out, and --nproc forwards them
    args = build_parser().parse_args(["train", str(data), "--out", str(tmp_path / "run"), "--resume"])
    resumed = config_from_args(args)
    assert (resumed.gain, resumed.gain_alpha) == (True, 0.5)
    argv = worker_argv(build_parser().parse_args(["train", "d", "--out", "o", "--gain", "--gain-sigma", "0.4",
                                                  "--attention", "cbam"]))
    assert "--gain" in argv and argv[argv.index("--gain-sigma") + 1] == "0.4" and "cbam" in argv


def test_gain_settings_are_checked_and_older_configs_load():
    with pytest.raises(ConfigError, match=r"gain=True: .*TASN.*--method ce, mcloss or parts, or leave --gain out"):
        cfg("d", "o", method="tasn", model="tasn_resnet18", gain=True)
    with pytest.raises(ConfigError, match=r"gain_alpha=2\.0: is a GAIN setting: add --gain"):
        cfg("d", "o", gain_alpha=2.0)
    with pytest.raises(ConfigError, match=r"gain_sigma=1\.5: .*between 0 and 1"):
        cfg("d", "o", gain=True, gain_sigma=1.5)
    with pytest.raises(ConfigError, match=r"gain_omega=0\.0: .*above 0"):
        cfg("d", "o", gain=True, gain_omega=0.0)
    on = cfg("d", "o", gain=True)
    assert (on.gain_alpha, on.gain_sigma, on.gain_omega) == (1.0, 0.5, 10.0)
    off = cfg("d", "o")
    assert off.gain is False and off.gain_alpha is None and TrainConfig.from_dict(on.to_dict()) == on
    old = {k: v for k, v in off.to_dict().items() if not k.startswith("gain") and k != "attention"}
    assert TrainConfig.from_dict(old) == off and TrainConfig.upgrade_dict(old)["gain"] is False


def test_cli_gain_with_tasn_is_one_line(data, tmp_path, capsys):
    assert cli(["train", str(data), "--out", str(tmp_path / "x"), "--method", "tasn", "--model", "tasn_resnet18",
                "--gain"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gain=True" in err[0] and "leave --gain out" in err[0], err
