"""The speed options of a training run (engine.training.speed): their checks and defaults, the size schedule,
torch.compile's fallback to eager, the command line and a resume; a tiny run with them all."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from torch import nn

import engine.training.speed as speed
from engine import runs
from engine.cli.train import config_from_args, register, worker_argv
from engine.data.loader import ImageCache, ImageDataset
from engine.data.transforms import Preprocessing
from engine.errors import ConfigError
from engine.events import Message, drive
from engine.models.backbones import SmallNet
from engine.toybirds.dataset import generate
from engine.training.config import TrainConfig
from engine.training.loop import train
from engine.training.resume import RUN_KEYS


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy") / "birds"
    generate(root, classes=3, per_class=8, size=64, seed=0)
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A smallnet's weights, as a file to fine-tune from (freezing needs pretrained weights)."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("w") / "smallnet.safetensors"
    save_file({k: v.contiguous() for k, v in SmallNet().state_dict().items()}, str(path))
    return path


def cfg_of(**kw) -> TrainConfig:
    return TrainConfig(**{"data": "d", "out": "o", "method": "parts", "pretrained": "x.pth", **kw})


# -- the config ------------------------------------------------------------------------------------------------
def test_parts_fine_tuning_defaults_and_older_configs_load_unchanged():
    cfg = cfg_of()  # parts, 448 px, 14 epochs, pretrained
    assert (cfg.freeze_bn, cfg.freeze_stages, cfg.compile, cfg.size_schedule, cfg.test_every) == \
        (False, 2, False, "0.5:320", 7)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert "test_every" not in RUN_KEYS  # a resume may test more or less often
    assert {"freeze_bn", "freeze_stages", "size_schedule"} <= set(RUN_KEYS) and "compile" not in RUN_KEYS
    off = cfg_of(freeze_stages=0, size_schedule="none", test_every=1)
    assert (off.freeze_stages, off.size_schedule, off.test_every) == (0, "none", 1)
    # saved before the options, or with None for one (before parts had defaults of its own): all off, as trained
    older = {k: v for k, v in cfg.to_dict().items() if k not in speed.SPEED_DEFAULTS}
    assert TrainConfig.from_dict(older) == off
    assert TrainConfig.from_dict({**older, "freeze_stages": 0, "size_schedule": None, "test_every": 1}) == off


@pytest.mark.parametrize("kw, expected", [
    (dict(img_size=320), (2, "none", 7)),  # the schedule only above its 320 px
    (dict(epochs=5), (2, "0.5:320", 3)),  # the test pass after half the epochs, rounded up, and the last
    (dict(pretrained=None), (0, "none", 7)),  # from scratch: nothing frozen, no schedule (not measured)
    (dict(method="ce"), (0, "none", 1)),  # other methods: all off
    (dict(method="mcloss"), (0, "none", 1)),
    (dict(size_schedule="0.3:256,0.6:352", freeze_stages=1, test_every=2), (1, "0.3:256,0.6:352", 2)),
    (dict(size_schedule=" NONE "), (2, "none", 7)),
])
def test_defaults_depend_on_method_weights_and_size(kw, expected):
    cfg = cfg_of(**kw)
    assert (cfg.freeze_stages, cfg.size_schedule, cfg.test_every) == expected
    assert not cfg.freeze_bn and not cfg.compile


@pytest.mark.parametrize("kw, message", [
    (dict(freeze_bn=True, pretrained=None), "freeze_bn=True: freezing keeps the pretrained weights"),
    (dict(freeze_stages=2, pretrained="none"), "freeze_stages=2: freezing keeps the pretrained weights"),
    (dict(freeze_stages=6), r"freeze_stages=6: mobilenet_v2 has 5 stages .*give 0 to 5"),
    (dict(freeze_stages=-1), "freeze_stages=-1: give a whole number of stages"),
    (dict(method="tasn", model="tasn_resnet18", freeze_bn=True), "freezing is for the partnet backbones"),
    (dict(compile="yes"), "compile='yes': give true or false"),
    (dict(size_schedule="0.5:448"), r"size_schedule='0.5:448': sizes go from 32 px up to below --img-size 448"),
    (dict(size_schedule="0.5"), r"size_schedule='0.5': write SHARE:SIZE"),
    (dict(size_schedule="1.5:320"), "the shares of the epochs must increase from above 0 to below 1"),
    (dict(size_schedule="0.6:320,0.4:400"), "the shares of the epochs must increase"),
    (dict(size_schedule="0.3:400,0.6:320"), "without shrinking"),
    (dict(test_every=0), r"test_every=0: give a whole number of epochs, 1 \(a test pass after each epoch\) or more"),
    (dict(test_every=2.5), r"test_every=2.5: give a whole number of epochs"),
])
def test_bad_values_are_one_line_errors_naming_them(kw, message):
    with pytest.raises(ConfigError, match=message) as info:
        cfg_of(**kw)
    assert "\n" not in str(info.value)


def test_size_schedule_canonical_text_and_sizes_per_epoch():
    assert cfg_of(size_schedule=" 0.50:320 ").size_schedule == "0.5:320"
    assert speed.epoch_sizes("0.5:320", 448, 14) == (320,) * 7 + (448,) * 7
    assert speed.epoch_sizes("0.25:224,0.5:320", 448, 8) == (224, 224, 320, 320, 448, 448, 448, 448)
    assert speed.epoch_sizes(None, 448, 3) == (448, 448, 448)


def test_the_dataset_crops_an_epochs_images_at_its_size(toy):
    from engine.data import scan

    samples = scan(str(toy)).split("train")[:2]
    cache = ImageCache(samples, Preprocessing.for_size(48), 64)
    list(cache.iter_load())
    ds = ImageDataset(cache, train=True, seed=0, sizes=(24, 48))
    small, full = ds[(0, 0)][0], ds[(0, 1)][0]
    assert small.shape == (24, 24, 3) and full.shape == (48, 48, 3)
    assert ds[(0, 5)][0].shape == (48, 48, 3)  # past the schedule: the cache's size


# -- torch.compile's fallback ----------------------------------------------------------------------------------
class _Fails(torch.autograd.Function):
    """The identity whose backward raises, as a backward compiled lazily at its first use can."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("C++ compile error: no compiler\nmore lines")


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_failing_compile_falls_back_to_eager_with_one_line(monkeypatch, where):
    def fake_compile(fn, **kw):
        if where == "forward":
            def compiled(*a, **k):
                raise RuntimeError("InductorError: no C++ compiler found")
            return compiled
        return lambda *a, **k: _Fails.apply(fn(*a, **k))

    monkeypatch.setattr(speed.torch, "compile", fake_compile)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).train()
    eager_net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    eager_net.load_state_dict(net.state_dict())
    compiled = speed.Compiled(net)
    x = torch.randn(2, 3, 8, 8)

    def step():
        net.zero_grad()
        loss = net(x).sum()
        loss.backward()
        return float(loss.detach())

    assert compiled.step(step) == pytest.approx(float(eager_net(x).sum().detach()))
    assert compiled.failed and "forward" not in net.__dict__  # eager for good, its own forward back
    assert compiled.notice.startswith("--compile: compiling failed (RuntimeError: ") and "\n" not in compiled.notice
    eager_net(x).sum().backward()
    assert torch.allclose(net[0].weight.grad, eager_net[0].weight.grad)


def test_an_error_that_is_not_the_compilers_is_raised(monkeypatch):
    monkeypatch.setattr(speed.torch, "compile", lambda fn, **kw: fn)
    compiled = speed.Compiled(nn.Identity())

    def step():
        raise ValueError("a real bug")

    with pytest.raises(ValueError, match="a real bug"):
        compiled.step(step)


def test_no_cpp_compiler_means_eager_and_a_warning(monkeypatch):
    import torch._inductor.cpp_builder as builder

    def missing():
        raise RuntimeError("Failed to find a working C++ compiler")

    monkeypatch.setattr(builder, "get_cpp_compiler", missing)
    compiled, line = speed.compile_backbone(nn.Module(), torch.device("cpu"))
    assert compiled is None and line.startswith("--compile: no C++ compiler for inductor (RuntimeError")


# -- the command line and a run ---------------------------------------------------------------------------------
def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    register(ap.add_subparsers())
    return ap.parse_args(argv)


def test_flags_reach_the_config_and_the_workers_of_nproc():
    args = parse(["train", "d", "--out", "o", "--method", "parts", "--pretrained", "x.pth", "--freeze-bn",
                  "--freeze-stages", "2", "--compile", "--size-schedule", "0.5:320", "--nproc", "2"])
    cfg = config_from_args(args)
    assert (cfg.freeze_bn, cfg.freeze_stages, cfg.compile, cfg.size_schedule) == (True, 2, True, "0.5:320")
    argv = worker_argv(args)
    for flag in (["--freeze-bn"], ["--freeze-stages", "2"], ["--compile"], ["--size-schedule", "0.5:320"]):
        assert any(argv[i:i + len(flag)] == flag for i in range(len(argv))), flag


def test_a_tiny_run_with_every_option_resumes_with_them_and_loads_plain(toy, weights, tmp_path, monkeypatch):
    import engine.training.memory as memory

    monkeypatch.setattr(speed, "compiler_missing", lambda device: "no C++ compiler for inductor (test)")
    monkeypatch.setattr(memory, "available_mb", lambda: 8000)  # whatever else the machine runs: room for a tiny run
    monkeypatch.setattr(memory, "total_mb", lambda: 16000)
    out = tmp_path / "run"
    base = ["train", str(toy), "--out", str(out), "--model", "smallnet", "--method", "parts", "--img-size", "48",
            "--batch-size", "4", "--device", "cpu", "--pretrained", str(weights)]
    cfg = config_from_args(parse(base + ["--epochs", "1", "--freeze-bn", "--freeze-stages", "1", "--compile",
                                         "--size-schedule", "0.5:32"]))
    events: list = []
    drive(train(cfg), events.append)
    lines = [e.text for e in events if isinstance(e, Message)]
    assert any(t.startswith("frozen: ") for t in lines) and any(t.startswith("--compile: no C++") for t in lines)
    resumed = config_from_args(parse(base + ["--epochs", "2", "--resume"]))  # the flags left out: the run's
    assert (resumed.freeze_bn, resumed.freeze_stages, resumed.compile, resumed.size_schedule) == (True, 1, True,
                                                                                                  "0.5:32")
    drive(train(resumed, resume=True))
    with pytest.raises(ConfigError, match="--resume with freeze_stages=2, but the run was started with "
                                          "freeze_stages=1"):
        drive(train(resumed.replace(freeze_stages=2), resume=True))
    loaded = runs.load_run(out)
    assert loaded.meta["config"]["size_schedule"] == "0.5:32" and loaded.meta["epoch"] == 2
    assert not any("Frozen" in type(m).__name__ for m in loaded.model.modules())  # the plain model


def test_tests_after_every_nth_epoch_and_the_last():
    assert [e for e in range(7) if speed.tests_after(e, 7, 3)] == [2, 5, 6]
    assert [e for e in range(4) if speed.tests_after(e, 4, 1)] == [0, 1, 2, 3]
    assert [e for e in range(4) if speed.tests_after(e, 4, 9)] == [3]


def test_testing_less_often_trains_the_same_weights(toy, tmp_path, monkeypatch):
    # the test pass draws from no random stream the training uses: the same run with --test-every 2 ends with the
    # same weights, and its history has no test figures after epoch 1 (only after 2 and 3, the last)
    import engine.training.memory as memory

    monkeypatch.setattr(memory, "available_mb", lambda: 8000)
    monkeypatch.setattr(memory, "total_mb", lambda: 16000)
    histories, weights = [], []
    for every in (1, 2):
        out = tmp_path / f"every{every}"
        cfg = config_from_args(parse(["train", str(toy), "--out", str(out), "--model", "smallnet", "--method",
                                      "parts", "--img-size", "48", "--batch-size", "4", "--device", "cpu",
                                      "--epochs", "3", "--test-every", str(every)]))
        assert cfg.test_every == every
        drive(train(cfg))
        histories.append([r["test_top1"] for r in runs.read_history(out)])
        weights.append(runs.load_run(out).model.state_dict())
    assert all(v is not None for v in histories[0])
    assert histories[1][0] is None and histories[1][1] == histories[0][1] and histories[1][2] == histories[0][2]
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_the_command_line_says_when_the_test_pass_comes(toy, tmp_path, capsys):
    from engine.cli import main

    out = tmp_path / "run"
    assert main(["train", str(toy), "--out", str(out), "--model", "smallnet", "--method", "ce", "--img-size", "48",
                 "--batch-size", "4", "--device", "cpu", "--epochs", "3", "--test-every", "2"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 3
    assert "test_top1=- (tested every 2 epochs and after the last)" in lines[0]
    assert "test_top1=-" not in lines[1] and "test_top1=-" not in lines[2] and "%" in lines[2]
    assert main(["train", str(toy), "--out", str(out), "--model", "smallnet", "--method", "ce", "--device", "cpu",
                 "--epochs", "4", "--resume", "--test-every", "9"]) == 0
    assert "test_top1=" in capsys.readouterr().err  # the resumed epoch 4 is the last: tested
    assert runs.read_meta(out)["config"]["test_every"] == 9
    assert main(["train", str(toy), "--out", str(tmp_path / "bad"), "--test-every", "0"]) == 2
    err = capsys.readouterr().err
    assert "test_every=0: give a whole number of epochs" in err and len(err.strip().splitlines()) == 1


def test_the_eta_follows_the_size_schedule_and_the_test_passes():
    """A default parts run's shape (7 epochs at 320 px, 7 at 448, tests after the 7th and 14th): after the first
    epoch the time left counts the larger epochs by their area and an estimated test pass, then what was timed."""
    sizes = speed.epoch_sizes("0.5:320", 448, 14)
    tests = tuple(speed.tests_after(e, 14, 7) for e in range(14))
    clock = speed.EpochClock(sizes, tests, train_images=750, test_images=737)
    clock.record(0, 80.0, None)
    big = 80.0 * 448 ** 2 / 320 ** 2  # 156.8 s
    assert clock.eta(0) == pytest.approx(6 * 80 + 7 * big + 2 * 0.2 * big / 750 * 737)
    for e in range(1, 7):
        clock.record(e, 80.0, 45.0 if tests[e] else None)
    clock.record(7, 150.0, None)
    assert clock.eta(7) == pytest.approx(6 * 150 + 45)  # the 448 px epochs as timed, the test pass as timed
    assert clock.eta(13) == 0


def test_the_run_log_says_which_epochs_are_smaller_and_tested():
    assert speed.describe_schedule(cfg_of()) == \
        "epochs 1-7 at 320 px, 8-14 at 448 px; a test pass after epochs 7 and 14"
    assert speed.describe_schedule(cfg_of(epochs=3, size_schedule="0.3:256,0.6:352", test_every=1)) == \
        "epochs 1 at 256 px, 2 at 352 px, 3 at 448 px"
    assert speed.describe_schedule(cfg_of(epochs=30, size_schedule="none", test_every=3)) == \
        "a test pass after every 3 epochs and after the last"
    assert speed.describe_schedule(cfg_of(method="ce")) is None
