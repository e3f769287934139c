"""The backbones' padding option (docs/METHODS.md#mc-loss-border): replicate padding hides the frame's edge from
the convolutions, MC-Loss runs default to it, and runs saved before the option load and resume as they were built."""

import json

import pytest
import torch

from engine.cli import main
from engine.errors import ConfigError
from engine.events import drive
from engine.models import create_model, list_models
from engine.runs import load_run
from engine.toybirds.dataset import generate
from engine.training.config import MC_CONC_PRETRAINED, TrainConfig
from engine.training.loop import train

PARTNETS = list_models("partnet")


def _spread(features: torch.Tensor) -> float:
    """Largest difference between any cell and the map's mean, over channels: 0 for spatially uniform maps."""
    return float((features - features.mean(dim=(2, 3), keepdim=True)).abs().max())


@pytest.mark.parametrize("name", PARTNETS)
def test_a_uniform_photo_gives_uniform_maps_only_with_replicate_padding(name):
    # A convolution that pads by repeating the edge sees the same window everywhere on a uniform image, so every
    # layer's output stays uniform and no cell can tell it lies on the border. Zero padding darkens the border
    # windows: the maps vary from edge to centre although the photo does not.
    torch.manual_seed(0)
    x = torch.full((1, 3, 64, 64), 0.7)
    spreads = {}
    for padding in ("zeros", "replicate"):
        torch.manual_seed(0)
        m = create_model(name, num_classes=3, xi=2, padding=padding).eval()
        with torch.no_grad():
            f = m.backbone(x)
        spreads[padding] = _spread(f) / (float(f.abs().max()) + 1e-12)
    assert spreads["replicate"] < 1e-4, f"{name}: replicate-padded maps of a uniform photo vary by {spreads}"
    assert spreads["zeros"] > 1e-2, f"{name}: zero padding should mark the border ({spreads})"


def test_padding_is_part_of_the_architecture_and_checked():
    m = create_model("smallnet", num_classes=3, xi=2, padding="reflect")
    assert m.arch["padding"] == "reflect"
    convs = [c for c in m.backbone.modules() if isinstance(c, torch.nn.Conv2d) and any(c.padding)]
    assert convs and all(c.padding_mode == "reflect" for c in convs)
    with pytest.raises(ConfigError, match="padding='circle'.*zeros, replicate, reflect"):
        create_model("smallnet", num_classes=3, padding="circle")


def test_config_defaults_by_method_and_refusals():
    base = dict(data="d", out="o", model="smallnet")
    assert TrainConfig(**base).padding == "replicate"  # mcloss
    assert TrainConfig(**base, method="ce").padding == "zeros"
    assert TrainConfig(**base, method="parts").padding == "zeros"
    assert TrainConfig(**base, method="ce", padding="replicate").padding == "replicate"
    with pytest.raises(ConfigError, match="padding='same'.*zeros, replicate, reflect"):
        TrainConfig(**base, padding="same")
    with pytest.raises(ConfigError, match="padding='replicate'.*TASN"):
        TrainConfig(data="d", out="o", model="tasn_mobilenet_v2", method="tasn", padding="replicate")
    # a config saved before the option was trained with zeros, whatever its method
    saved = TrainConfig(**base).to_dict()
    del saved["padding"]
    assert TrainConfig.from_dict(saved).padding == "zeros"
    # stride-16 maps: on for MC-Loss and parts, off for the CE baseline; a config saved before the option had 7 x 7
    # maps unless it was a parts run
    assert [TrainConfig(**base, method=m).fine for m in ("mcloss", "ce", "parts")] == [True, False, True]
    assert TrainConfig(**base, fine=False).fine is False
    for method, fine in (("mcloss", False), ("parts", True)):
        saved = TrainConfig(**base, method=method).to_dict()
        del saved["fine"]
        assert TrainConfig.from_dict(saved).fine is fine
    # MC-Loss's concentration term: on when fine-tuning, off from scratch, off for configs saved before it
    assert TrainConfig(**base, pretrained="DEFAULT").mc_conc == MC_CONC_PRETRAINED > 0
    assert TrainConfig(**base).mc_conc == 0.0 and TrainConfig(**base, mc_conc=5).mc_conc == 5.0
    saved = TrainConfig(**base, pretrained="DEFAULT").to_dict()
    del saved["mc_conc"]
    assert TrainConfig.from_dict(saved).mc_conc == 0.0
    with pytest.raises(ConfigError, match="mc_conc=-1.*from 0 \\(off\\)"):
        TrainConfig(**base, mc_conc=-1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("pad") / "birds"
    generate(root, classes=3, per_class=6, size=64, seed=0)
    return root


def test_a_run_saved_before_the_option_loads_and_resumes_with_zero_padding(toy, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(toy), out=str(out), model="smallnet", method="mcloss", epochs=1, img_size=64,
                      batch_size=6, device="cpu", cache_mb=16, padding="zeros", fine=False)
    drive(train(cfg))
    meta = json.loads((out / "model.json").read_text())
    assert "padding" not in meta["arch"], "zeros (torchvision's) is not written, as runs before the option"
    assert "fine" not in meta["arch"] and meta["config"]["fine"] is False
    # make it exactly a run of the version before: no padding, fine or mc_conc key in its config either, and
    # μ = 0.005 (that version's fine-tuning default, now 0.5)
    del meta["config"]["padding"], meta["config"]["fine"], meta["config"]["mc_conc"]
    meta["config"]["mu"] = 0.005
    (out / "model.json").write_text(json.dumps(meta))
    state = torch.load(out / "resume.pt", weights_only=True)
    del state["config"]["padding"], state["config"]["fine"], state["config"]["mc_conc"]
    state["config"]["mu"] = 0.005
    torch.save(state, out / "resume.pt")
    run = load_run(out)
    assert all(c.padding_mode == "zeros" for c in run.model.backbone.modules() if isinstance(c, torch.nn.Conv2d))
    # the CLI resume takes the run's padding, maps and μ, not today's defaults (replicate, stride 16, 0.5), so the
    # run goes on unchanged
    assert main(["train", str(toy), "--out", str(out), "--model", "smallnet", "--epochs", "2", "--device", "cpu",
                 "--resume"]) == 0
    config = json.loads((out / "model.json").read_text())["config"]
    assert (config["padding"], config["fine"], config["mu"], config["epochs"]) == ("zeros", False, 0.005, 2)
    assert config["mc_conc"] == 0.0  # the version before had no concentration term


def test_replicate_run_round_trips(toy, tmp_path):
    out = tmp_path / "rep"
    drive(train(TrainConfig(data=str(toy), out=str(out), model="smallnet", method="mcloss", epochs=1, img_size=64,
                            batch_size=6, device="cpu", cache_mb=16)))
    meta = json.loads((out / "model.json").read_text())
    assert meta["arch"]["padding"] == "replicate" and meta["config"]["padding"] == "replicate"
    run = load_run(out)
    padded = [c for c in run.model.backbone.modules() if isinstance(c, torch.nn.Conv2d) and any(c.padding)]
    assert padded and all(c.padding_mode == "replicate" for c in padded)
