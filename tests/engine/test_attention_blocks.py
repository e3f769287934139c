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
    b = CBAM(2)  # hidden width 8; the MLP's last layer is zero, so the channel gate is 1
    with torch.no_grad():
        b.spatial.weight.zero_()
        b.spatial.weight[0, 0, 3, 3] = 1.0  # the centre tap of the channel-wise average
    x = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2): averages 2 and -1, maxima 3 and 0
    channel, spatial = b.gates(x)
    assert channel.flatten().tolist() == [1.0, 1.0]
    assert spatial.flatten().tolist() == pytest.approx([2 * sig(2.0), 2 * sig(-1.0)], abs=1e-6)
    assert b(x).flatten().tolist() == pytest.approx([1 * 2 * sig(2), -2 * 2 * sig(-1), 3 * 2 * sig(2), 0.0],
                                                    abs=1e-6)


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
