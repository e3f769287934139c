"""Attention blocks (``--attention``, docs/METHODS.md#attention-blocks): the identity at initialisation, hand-checked
gates on tiny tensors, the backbones they go on, their maps, runs that save and load them, and the option's checks."""

import math

import numpy as np
import pytest
import torch

from engine import runs
from engine.cli import main as cli
from engine.data.transforms import Preprocessing
from engine.errors import ConfigError
from engine.events import drive
from engine.maps.explain import explain, get_method
from engine.models import create_model
from engine.models.attention import CBAM, STAGE_ENDS, ResidualAttention, attention_blocks, spatial_maps
from engine.training.config import TrainConfig
from engine.training.loop import train

from ..conftest import make_class_folders


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


@pytest.mark.parametrize("block", [CBAM, ResidualAttention])
def test_each_block_is_the_identity_at_initialisation(block):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 5, 3)
    b = block(16)
    assert torch.equal(b(x), x)  # exactly: the gates are 2·sigmoid(0) = 1, M = tanh(0) = 0
    assert torch.equal(b.spatial_map(x), torch.ones(2, 5, 3))


def test_cbam_gates_by_hand():
    """The spatial logits (the centre tap of the channel-wise average: 2 and -1) through the GateNorm at weight 1:
    in training the batch's statistics (mean 0.5, sd 1.5) make them 1 and -1; in eval the running ones; a batch of
    one value per channel uses the running ones in training too, and leaves them."""
    b = CBAM(2)  # hidden width 8; the MLP's last layer is zero, so the channel gate is 1
    with torch.no_grad():
        b.spatial.weight.zero_()
        b.spatial.bias.zero_()
        b.spatial.weight[0, 0, 3, 3] = 1.0  # the centre tap of the channel-wise average
        b.norm.weight.fill_(1.0)
    x = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2): averages 2 and -1, maxima 3 and 0
    channel, spatial = b.gates(x)
    assert channel.flatten().tolist() == [1.0, 1.0]
    assert spatial.flatten().tolist() == pytest.approx([2 * sig(1.0), 2 * sig(-1.0)], abs=1e-5)
    assert b(x).flatten().tolist() == pytest.approx([1 * 2 * sig(1), -2 * 2 * sig(-1), 3 * 2 * sig(1), 0.0],
                                                    abs=1e-5)
    mean, var = float(b.norm.running_mean), float(b.norm.running_var)  # two passes moved them, momentum 0.01 each
    m1, v1 = 0.01 * 0.5, 0.99 * 1.0 + 0.01 * 4.5  # from (0, 1) towards the batch's (0.5, unbiased variance 4.5)
    assert (mean, var) == pytest.approx((0.99 * m1 + 0.01 * 0.5, 0.99 * v1 + 0.01 * 4.5))
    fresh = CBAM(2)
    fresh.load_state_dict(b.state_dict())
    fresh.eval()
    want = [2 * sig((z - mean) / math.sqrt(var + 1e-5)) for z in (2.0, -1.0)]
    assert fresh.gates(x)[1].flatten().tolist() == pytest.approx(want, abs=1e-6)
    one = x[:, :, :, :1]  # (1, 2, 1, 1): one logit, 2, in training: the running statistics, left as they were
    assert b.gates(one)[1].item() == pytest.approx(want[0], abs=1e-6)
    assert float(b.norm.running_mean) == mean


def test_a_cbam_run_saved_before_the_gate_norm_loads_as_it_was_trained():
    """A CBAM state dict without ``norm`` (saved before the GateNorm): the spatial logits go straight into the
    sigmoid, as they did; --freeze-bn leaves a new run's GateNorm learning (it is not an nn.BatchNorm2d)."""
    from engine.models.attention import GateNorm
    from engine.models.freeze import apply_freezing

    old = CBAM(2)
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("norm.")}
    state["spatial.weight"] = torch.zeros_like(state["spatial.weight"])
    state["spatial.weight"][0, 0, 3, 3] = 1.0
    state["spatial.bias"] = torch.zeros(1)
    loaded = CBAM(2)
    loaded.load_state_dict(state)
    assert isinstance(loaded.norm, torch.nn.Identity)
    x = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])
    assert loaded.gates(x)[1].flatten().tolist() == pytest.approx([2 * sig(2.0), 2 * sig(-1.0)], abs=1e-6)
    model = create_model("smallnet", 3, attention="cbam", pretrained=None)
    apply_freezing(model, True, 0)
    norms = [b.norm for b in attention_blocks(model)]
    assert len(norms) == 2 and all(isinstance(n, GateNorm) and n.weight.requires_grad for n in norms)


def test_residual_attention_output_by_hand():
    b = ResidualAttention(2)
    with torch.no_grad():
        b.up[-1].bias.fill_(math.atanh(0.5))  # the last layer's weights stay 0: M = tanh(atanh 0.5) = 0.5
    x = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])
    assert b(x).flatten().tolist() == pytest.approx([1.5, -3.0, 4.5, 0.0], abs=1e-6)  # (1 + M) ⊙ T
    assert b.spatial_map(x).flatten().tolist() == pytest.approx([1.5, 1.5], abs=1e-6)


def without_blocks(state: dict) -> dict:
    """An attended model's weights under the plain model's names."""
    return {k.replace(".stage.", "."): v for k, v in state.items() if ".block." not in k}


@pytest.mark.parametrize("name", list(STAGE_ENDS))
@pytest.mark.parametrize("kind", ["cbam", "residual"])
def test_a_backbone_with_blocks_starts_as_the_plain_one(name, kind):
    for fine, head in ((False, {}), (True, {"head": "parts", "parts": 2})):
        if name in ("resnet50", "vgg16_bn") and fine:
            continue  # the same slots as without fine maps; kept short
        torch.manual_seed(0)
        attended = create_model(name, 3, fine=fine, attention=kind, **head).eval()
        plain = create_model(name, 3, fine=fine, **head).eval()
        plain.load_state_dict(without_blocks(attended.state_dict()))  # strict: only the blocks are new
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.allclose(attended(x), plain(x), atol=1e-6, rtol=0)
        assert [type(b) for b in attention_blocks(attended)] == [CBAM if kind == "cbam" else ResidualAttention] * 2
        assert "attention" not in plain.arch and attended.arch["attention"] == kind


def test_blocks_learn_with_the_head_and_their_maps_are_a_map_method():
    model = create_model("smallnet", 3, attention="cbam")
    backbone, head = model.param_groups()
    fresh = {id(p) for b in attention_blocks(model) for p in b.parameters()}
    assert fresh <= {id(p) for p in head} and not fresh & {id(p) for p in backbone}
    assert len(backbone) + len(head) == len(list(model.parameters()))
    maps = spatial_maps(model.eval(), torch.randn(2, 3, 64, 64))
    assert maps.shape == (2, 2, 16, 16)  # both blocks on the finer (next-to-last stage's) grid
    with pytest.raises(ConfigError, match="method 'attention' needs a model trained with --attention"):
        get_method("attention").check(create_model("smallnet", 3))
    sets = explain(model, [np.zeros((20, 30, 3), np.uint8)], "attention", preprocessing=Preprocessing.for_size(64))
    assert sets[0][0].names == ["CBAM, next-to-last stage", "CBAM, last stage"] and sets[0][0].maps.shape == (2, 20, 30)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp("att"), classes=3, per_class=6, size=(36, 36))


def test_a_run_with_blocks_saves_them_in_its_arch_and_loads(data, tmp_path):
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), model="smallnet", method="mcloss", epochs=1,
                      img_size=32, batch_size=6, attention="residual")
    drive(train(cfg))
    meta = runs.read_meta(tmp_path / "run")
    assert meta["arch"]["attention"] == "residual" and meta["config"]["attention"] == "residual"
    loaded = runs.load_run(tmp_path / "run").model
    assert len(attention_blocks(loaded)) == 2
    get_method("attention").check(loaded)


def test_attention_settings_are_checked(data, tmp_path, capsys):
    base = dict(data="d", out="o", model="smallnet", method="ce")
    with pytest.raises(ConfigError, match=r"attention='se': use one of none, cbam, residual"):
        TrainConfig(**base, attention="se")
    with pytest.raises(ConfigError, match=r"attention='cbam': .*tasn_resnet18 is a TASN model: leave --attention out"):
        TrainConfig(**{**base, "model": "tasn_resnet18", "method": "tasn"}, attention="cbam")
    assert TrainConfig(**base).attention == "none"
    assert cli(["train", str(data), "--out", str(tmp_path / "x"), "--method", "tasn", "--model", "tasn_resnet18",
                "--attention", "cbam"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "attention='cbam'" in err[0] and "TASN model" in err[0], err
