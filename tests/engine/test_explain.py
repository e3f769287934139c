"""Explanation maps (engine.maps.explain): every method on every registered model gives the documented shape, dtype
and range; CAM and Grad-CAM agree as the algebra says; hooks and gradient state never leak."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from engine.data.transforms import Preprocessing
from engine.errors import ConfigError, EngineError
from engine.maps.explain import (METHODS, MapSet, explain, low_res_maps, predict_probs, prepare, resolve_class,
                                 session)
from engine.maps.methods import GuidedGradCAM
from engine.models import create_model, get_spec, list_models

SIZE = 64  # small inputs: vgg16_bn and resnet50 (and their TASN forms) are the slow ones
PP = Preprocessing.for_size(SIZE)
CLASSES, XI = 3, 2
_CACHE: dict[str, nn.Module] = {}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def model(name: str) -> nn.Module:
    if name not in _CACHE:
        torch.manual_seed(0)
        kw = {"input_size": SIZE, "sample_size": 32} if get_spec(name).family == "tasn" else {}
        _CACHE[name] = create_model(name, CLASSES, XI, **kw).eval()
    return _CACHE[name]


def images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (50, 70, 3), dtype=np.uint8), rng.integers(0, 255, (90, 40, 3), dtype=np.uint8)]


def supports(name: str, method: str) -> bool:
    family = get_spec(name).family
    tasn, racnn = family == "tasn", family == "racnn"
    # the registry's models have no attention blocks (test_attention_blocks.py explains models that have them)
    return not ((method in ("channels", "ccmp") and (tasn or racnn)) or (method == "tasn" and not tasn)
                or (method == "racnn" and not racnn) or method == "attention")


@pytest.mark.parametrize("name", list_models())
def test_every_method_on_every_model_shape_dtype_range(name):
    """All methods a model supports in one call (they share one forward pass); the others refuse clearly."""
    m = model(name)
    imgs = images()
    ok = [meth for meth in METHODS if supports(name, meth)]
    for meth in set(METHODS) - set(ok):
        with pytest.raises(ConfigError, match=meth):
            explain(m, imgs, meth, preprocessing=PP)
    out = explain(m, imgs, ok, preprocessing=PP)
    assert len(out) == 2 and all([s.method for s in sets] == ok for sets in out)
    for img, sets in zip(imgs, out):
        for ms in sets:
            k = {"channels": XI, "tasn": 2, "racnn": 2}.get(ms.method, 1)
            assert isinstance(ms, MapSet)
            assert ms.maps.shape == (k, *img.shape[:2]) and ms.maps.dtype == np.float32, ms.method
            assert ms.image_size == img.shape[:2]
            assert np.isfinite(ms.maps).all() and ms.maps.min() >= 0.0 and ms.maps.max() <= 1.0
            assert len(ms.names) == len(ms.raw_ranges) == len(ms.channels) == k
            assert all(lo <= hi for lo, hi in ms.raw_ranges)
            assert ms.low_res.shape[0] == k and ms.low_res.ndim == 3
            assert 0.0 <= ms.probability <= 1.0 and 0 <= ms.predicted < CLASSES
            raw = ms.raw()
            for j, (lo, hi) in enumerate(ms.raw_ranges):  # the normalisation is the raw range
                if hi - lo > 1e-9:
                    assert raw[j].min() >= lo - 1e-4 * (hi - lo) and raw[j].max() <= hi + 1e-4 * (hi - lo)
            if ms.method == "channels":
                assert ms.channels == list(m.class_channels(ms.class_index))
    assert all(p.grad is None for p in m.parameters())


def test_channel_maps_are_the_features_of_the_class():
    m = model("smallnet")
    img = images()[0]
    (ms,) = explain(m, [img], "channels", 2, PP)[0]
    with torch.no_grad():
        f = m.forward_features(prepare([img], PP, "cpu"))[0, list(m.class_channels(2))]
    assert np.allclose(ms.low_res, f.numpy(), atol=1e-6)
    assert ms.raw_ranges[0] == pytest.approx((float(f[0].min()), float(f[0].max())), rel=1e-6)
    (cc,) = explain(m, [img], "ccmp", 2, PP)[0]
    assert np.allclose(cc.low_res[0], f.max(dim=0).values.numpy(), atol=1e-6)


def test_cam_equals_gradcam_for_a_gap_linear_head():
    """∂y_c/∂F_k(i, j) = w_ck/(h·w) for GAP + linear, so Grad-CAM = ReLU(CAM)/(h·w) exactly at the model's own
    resolution. Min-max normalisation is scale-free, so when CAM ≥ 0 everywhere (all weights of the class
    positive, features non-negative) the normalised full-resolution maps are equal; otherwise only where
    ReLU leaves CAM unchanged, which the raw comparison covers."""
    img = images(1)[0]
    for seed in range(50):  # a random model whose CAM takes both signs on this image (the first of a few seeds)
        torch.manual_seed(seed)
        m = create_model("smallnet", CLASSES, XI).eval()
        cam, gc = explain(m, [img], ["cam", "gradcam"], 1, PP)[0]
        if cam.low_res.min() < 0 < cam.low_res.max():
            break
    h, w = cam.low_res.shape[-2:]
    assert cam.low_res.min() < 0 < cam.low_res.max(), "no seed gave a CAM of both signs"
    assert np.allclose(gc.low_res, np.maximum(cam.low_res, 0) / (h * w), rtol=1e-4, atol=1e-9)
    with torch.no_grad():
        m.fc.weight[1].abs_()
    both = explain(m, [img], ["cam", "gradcam"], 1, PP)[0]
    assert [s.method for s in both] == ["cam", "gradcam"]
    assert both[0].low_res.min() >= 0
    assert np.allclose(both[0].maps, both[1].maps, atol=1e-5)


def test_hooks_removed_and_state_restored_after_an_exception():
    m = create_model("smallnet", CLASSES, XI)
    m.train()
    m.fc.weight.requires_grad_(False)
    relus = [mod for mod in m.modules() if isinstance(mod, (nn.ReLU, nn.ReLU6))]
    inplace = [r.inplace for r in relus]
    with pytest.raises(RuntimeError, match="boom"):
        with session(m, guided=True):
            assert any(r._backward_hooks for r in relus) and not any(r.inplace for r in relus)
            assert not m.training and not any(p.requires_grad for p in m.parameters())
            raise RuntimeError("boom")
    assert all(not mod._forward_hooks and not mod._backward_hooks and not mod._forward_pre_hooks
               for mod in m.modules())
    assert [r.inplace for r in relus] == inplace
    assert m.training and not m.fc.weight.requires_grad
    assert all(p.requires_grad for n, p in m.named_parameters() if n != "fc.weight")


def test_hooks_removed_when_a_method_fails_midway(monkeypatch):
    m = create_model("smallnet", CLASSES, XI).eval()

    def fail(self, p, targets):
        raise ValueError("method failed")

    monkeypatch.setattr(GuidedGradCAM, "maps", fail)
    with pytest.raises(ValueError):
        explain(m, images(), "guided-gradcam", preprocessing=PP)
    assert all(not mod._forward_hooks and not mod._backward_hooks for mod in m.modules())
    assert not m.training and all(p.requires_grad and p.grad is None for p in m.parameters())


def test_no_gradient_state_leaks_between_calls():
    m = create_model("resnet18", CLASSES, XI)
    m.eval()
    first = explain(m, images(), ["gradcam", "guided-gradcam"], 0, PP)
    assert all(p.grad is None and p.requires_grad for p in m.parameters())
    assert not m.training
    second = explain(m, images(), ["gradcam", "guided-gradcam"], 0, PP)
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            assert np.array_equal(x.maps, y.maps)


def test_guided_backprop_changes_the_saliency_and_stays_non_negative():
    m = create_model("smallnet", CLASSES, XI).eval()
    img = images()[0]
    (g,) = explain(m, [img], "guided-gradcam", 0, PP)[0]
    assert g.low_res.shape == (1, SIZE, SIZE) and g.low_res.min() >= 0
    x = prepare([img], PP, "cpu").requires_grad_(True)
    with session(m):
        plain = torch.autograd.grad(m(x)[0, 0], x)[0].abs().amax(1)[0]
    gc = explain(m, [img], "gradcam", 0, PP)[0][0].low_res
    up = torch.nn.functional.interpolate(torch.from_numpy(gc)[None], size=(SIZE, SIZE), mode="bilinear",
                                         align_corners=False)[0, 0]
    plain_gc = (up * plain).numpy()
    assert not np.allclose(g.low_res[0] / g.low_res.max(), plain_gc / plain_gc.max(), atol=1e-3), \
        "the ReLU hooks had no effect"


# ------------------------------------------------------------------ deconvnet and guided backpropagation
X3, G3 = [-1.0, 2.0, 3.0], [1.0, -1.0, 2.0]  # forward input, incoming gradient
X4, G4 = [-1.0, 2.0, 7.0, 5.0], [1.0, -1.0, 2.0, 3.0]  # ReLU6: 7 is above the upper clip


def _relu_backward(module: nn.Module, x: list[float], g: list[float], rule: str | None) -> tuple[list, list]:
    net = nn.Sequential(module)
    xt = torch.tensor(x, requires_grad=True)
    with session(net, rule=rule):
        y = net(xt * 1.0)
        (gx,) = torch.autograd.grad(y, xt, torch.tensor(g))
    return y.tolist(), gx.tolist()


@pytest.mark.parametrize("rule, passed", [(None, [0.0, -1.0, 2.0]),  # plain ReLU: where x > 0
                                          ("guided", [0.0, 0.0, 2.0]),  # where x > 0 and g > 0
                                          ("deconvnet", [1.0, 0.0, 2.0])])  # where g > 0, whatever x
@pytest.mark.parametrize("inplace", [False, True])
def test_relu_backward_rules_by_hand(rule, passed, inplace):
    relu = nn.ReLU(inplace=inplace)
    y, gx = _relu_backward(relu, X3, G3, rule)
    assert y == [0.0, 2.0, 3.0]  # the forward values never change
    assert gx == passed
    assert relu.inplace is inplace and not relu._forward_hooks and not relu._backward_hooks


@pytest.mark.parametrize("rule, passed", [(None, [0.0, -1.0, 0.0, 3.0]),  # where 0 < x < 6
                                          ("guided", [0.0, 0.0, 0.0, 3.0]),  # and g > 0
                                          ("deconvnet", [1.0, 0.0, 0.0, 3.0])])  # g > 0 and x < 6 (the clip)
def test_relu6_backward_rules_by_hand(rule, passed):
    relu6 = nn.ReLU6(inplace=True)
    y, gx = _relu_backward(relu6, X4, G4, rule)
    assert y == [0.0, 2.0, 6.0, 5.0]
    assert gx == passed
    assert relu6.inplace and not relu6._forward_hooks and not relu6._backward_hooks


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
def test_each_rule_hooks_every_relu_and_restores_the_model(rule):
    m = create_model("mobilenet_v2", CLASSES, XI)  # ReLU6(inplace=True) throughout
    m.train()
    relus = [mod for mod in m.modules() if isinstance(mod, (nn.ReLU, nn.ReLU6))]
    assert relus and any(isinstance(r, nn.ReLU6) for r in relus)
    inplace = [r.inplace for r in relus]
    assert any(inplace)
    with pytest.raises(RuntimeError, match="boom"):
        with session(m, rule=rule):
            hooks = [r._backward_hooks if rule == "guided" else r._forward_hooks for r in relus]
            assert all(hooks) and not any(r.inplace for r in relus)
            assert not m.training and not any(p.requires_grad for p in m.parameters())
            raise RuntimeError("boom")
    assert all(not mod._forward_hooks and not mod._backward_hooks and not mod._forward_pre_hooks
               for mod in m.modules())
    assert [r.inplace for r in relus] == inplace
    assert m.training and all(p.requires_grad and p.grad is None for p in m.parameters())
    with pytest.raises(ConfigError, match="'lrp'.*guided, deconvnet"):
        with session(m, rule="lrp"):
            pass
    assert m.training


class _TinyNet(nn.Module):
    """conv → ReLU → 1×1 conv → ReLU6 (the features), then GAP + linear: small enough to backpropagate by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True)
        self.conv2, self.relu6 = nn.Conv2d(4, 3, 1), nn.ReLU6(inplace=True)
        self.fc = nn.Linear(3, CLASSES)
        with torch.no_grad():  # features of both signs and some above ReLU6's clip; class 1's weights of both signs
            self.conv2.weight.mul_(8.0)
            self.conv2.bias.zero_()
            self.fc.weight[1] = torch.tensor([0.5, 0.4, -0.3])

    def forward_features(self, x):
        return self.relu6(self.conv2(self.relu(self.conv1(x))))

    def forward_head(self, f):
        return self.fc(f.mean(dim=(2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _by_hand(m: _TinyNet, x: torch.Tensor, cls: int, rule: str) -> torch.Tensor:
    """∂y_cls/∂x under ``rule``, written out layer by layer: the linear layers' transposes (autograd of each
    linear layer alone, no ReLU in it), the ReLU rules with explicit masks."""
    with torch.no_grad():
        a1 = m.conv1(x)
        a2 = m.conv2(a1.clamp(min=0))
    h, w = a2.shape[-2:]
    g = m.fc.weight[cls].detach().view(1, -1, 1, 1).expand_as(a2) / (h * w)  # through GAP + linear
    if rule == "guided":
        g = g * ((a2 > 0) & (a2 < 6)) * (g > 0)
    else:
        g = g.clamp(min=0) * (a2 < 6)
    a1_ = a1.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m.conv2(a1_), a1_, g)
    g = g * (a1 > 0) * (g > 0) if rule == "guided" else g.clamp(min=0)
    x_ = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m.conv1(x_), x_, g)
    return g.abs().amax(dim=1)  # max over colour of the absolute value


def test_deconvnet_and_guided_backprop_maps_by_hand():
    torch.manual_seed(3)
    m = _TinyNet().eval()
    img = images(4)[0]  # 50 × 70: the maps come back at the photo's size
    x = prepare([img], PP, "cpu")
    with torch.no_grad():
        a2 = m.conv2(m.relu(m.conv1(x)))
    up = m.fc.weight[1] > 0  # where the deconvnet passes at the features: ranges its rule must tell apart
    assert (a2[:, up] > 6).any() and (a2[:, up] < 0).any() and ((a2[:, up] > 0) & (a2[:, up] < 6)).any()
    got = {}
    for rule, meth, label in (("guided", "guided-backprop", "Guided backprop"), ("deconvnet", "deconvnet", "Deconvnet")):
        (ms,) = explain(m, [img], meth, 1, PP)[0]
        assert ms.method == meth and ms.maps.shape == (1, *img.shape[:2]) and ms.maps.dtype == np.float32
        assert ms.low_res.shape == (1, SIZE, SIZE) and ms.names == [label]
        np.testing.assert_allclose(ms.low_res[0], _by_hand(m, x, 1, rule)[0].numpy(), rtol=1e-5, atol=1e-7)
        got[meth] = ms.low_res[0]
    x_ = x.clone().requires_grad_(True)
    with session(m):
        plain = torch.autograd.grad(m(x_)[0, 1], x_)[0].abs().amax(1)[0].numpy()
    assert not np.allclose(got["deconvnet"], got["guided-backprop"], rtol=1e-2)
    assert not np.allclose(got["deconvnet"], plain, rtol=1e-2) and not np.allclose(got["guided-backprop"], plain,
                                                                                    rtol=1e-2)
    assert m.relu.inplace and m.relu6.inplace and all(p.grad is None and p.requires_grad for p in m.parameters())


def test_methods_under_different_rules_each_get_their_own_pass():
    """One call asking for all the gradient maps gives what each gives alone, in the order asked, per class."""
    m = model("resnet18")  # each block uses its nn.ReLU twice
    imgs = images(5)
    asked = ["deconvnet", "gradcam", "guided-gradcam", "guided-backprop"]
    together = explain(m, imgs, asked, None, PP, top_k=2)
    for b, sets in enumerate(together):
        assert [s.method for s in sets] == asked * 2
        assert len({s.class_index for s in sets[:4]}) == 1 and sets[0].class_index != sets[4].class_index
        for s in sets:
            (alone,) = explain(m, [imgs[b]], s.method, s.class_index, PP)[0]
            np.testing.assert_allclose(s.maps, alone.maps, atol=1e-5, err_msg=s.method)
            assert s.probability == pytest.approx(alone.probability, rel=1e-5)
    assert all(not mod._forward_hooks and not mod._backward_hooks for mod in m.modules())


def test_pixel_maps_of_a_shared_parts_run():
    m = create_model("smallnet", 4, head="parts", fine=True, parts=3).eval()
    img = images(6)[1]
    x = prepare([img], PP, "cpu")
    for meth in ("deconvnet", "guided-backprop"):
        (ms,) = explain(m, [img], meth, 2, PP)[0]
        assert ms.maps.shape == (1, *img.shape[:2]) and np.isfinite(ms.maps).all()
        assert ms.low_res.shape == (1, SIZE, SIZE) and ms.low_res.min() >= 0 and ms.low_res.max() > 0
        (low,) = low_res_maps(m, x, meth, torch.tensor([2]))
        np.testing.assert_allclose(low.numpy(), ms.low_res, atol=1e-7)


def test_batch_equals_one_by_one_and_classes_select():
    m = model("mobilenet_v2")
    imgs = images(2)
    together = explain(m, imgs, "channels", [0, 2], PP)
    alone = [explain(m, [img], "channels", c, PP)[0] for img, c in zip(imgs, (0, 2))]
    for a, b in zip(together, alone):
        assert a[0].class_index == b[0].class_index
        assert np.allclose(a[0].maps, b[0].maps, atol=1e-4)
    top = explain(m, imgs, "ccmp", None, PP, top_k=2)
    probs = predict_probs(m, imgs, PP)
    for b, sets in enumerate(top):
        assert [s.class_index for s in sets] == list(np.argsort(-probs[b])[:2])
        assert sets[0].probability == pytest.approx(probs[b].max(), rel=1e-5)
    assert [s[0].class_index for s in explain(m, imgs, "ccmp", [None, 1], PP)] == [int(probs[0].argmax()), 1]
    with pytest.raises(ConfigError, match="out of range"):
        explain(m, imgs, "ccmp", 7, PP)
    with pytest.raises(ConfigError, match="one per image"):
        explain(m, imgs, "ccmp", [0], PP)
    with pytest.raises(ConfigError, match="unknown"):
        explain(m, imgs, "lime", 0, PP)


def test_resolve_class_names_the_bad_value_and_the_valid_ones():
    assert resolve_class("Wren", ["Finch", "Wren"]) == 1
    assert resolve_class("wren", ["Finch", "Wren"]) == 1
    with pytest.raises(EngineError, match="'Robin'.*Finch, Wren"):
        resolve_class("Robin", ["Finch", "Wren"])


def test_low_res_maps_match_explain():
    m = model("smallnet")
    imgs = images()
    x = prepare(imgs, PP, "cpu")
    raw = low_res_maps(m, x, "gradcam", torch.tensor([1, 1]))
    full = explain(m, imgs, "gradcam", 1, PP)
    for r, (ms,) in zip(raw, full):
        assert np.allclose(r.numpy(), ms.low_res, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (the tensors-follow-the-model check)")
def test_maps_on_the_gpu_match_the_cpu():
    m = create_model("resnet18", CLASSES, XI).eval()
    imgs = images()
    every = ["channels", "cam", "gradcam", "guided-gradcam", "guided-backprop", "deconvnet"]
    cpu = explain(m, imgs, every, 1, PP)
    m.cuda()
    try:
        gpu = explain(m, imgs, every, 1, PP)
    finally:
        m.cpu()
    for a, b in zip(cpu, gpu):
        for x, y in zip(a, b):
            assert x.maps.dtype == y.maps.dtype == np.float32
            assert np.allclose(x.maps, y.maps, atol=2e-3), x.method


def test_cli_writes_overlays_maps_and_peaks(tmp_path, capsys):
    import cv2

    from engine import runs
    from engine.cli import main

    m = create_model("smallnet", CLASSES, XI)
    run = tmp_path / "run"
    runs.save_epoch(run, m, {"arch": m.arch, "method": "mcloss", "classes": ["Finch", "Wren", "Vireo"],
                             "preprocessing": PP.to_dict(), "epoch": 1}, [], None)
    paths = []
    for i, img in enumerate(images()):
        paths.append(tmp_path / f"bird{i}.png")
        cv2.imwrite(str(paths[-1]), img)
    out = tmp_path / "maps"
    assert main(["explain", str(run), *map(str, paths), "--out", str(out), "--top-k", "2", "--device", "cpu"]) == 0
    for i, img in enumerate(images()):
        record = json.loads((out / f"bird{i}.channels.json").read_text())
        assert [m["class"] for m in record["maps"]] != [] and len(record["maps"]) == 2
        for entry in record["maps"]:
            raw = np.load(out / entry["npy"])
            assert raw.shape == (XI, *img.shape[:2]) and raw.dtype == np.float32
            strip = cv2.imread(str(out / entry["png"]))
            assert strip.shape[1] > strip.shape[0] > 0
            assert len(entry["parts"]) == XI
            for part in entry["parts"]:
                assert -0.5 <= part["peak"][0] <= img.shape[1] and -0.5 <= part["peak"][1] <= img.shape[0]
    assert main(["explain", str(run), str(paths[0]), "--out", str(out), "--class", "Wren", "--method", "gradcam",
                 "--resample", "detail", "--device", "cpu"]) == 0
    assert (out / "bird0.detail-view.png").is_file() and (out / "bird0.gradcam.detail.json").is_file()
    assert (out / "bird0.gradcam.Wren.detail.png").is_file()
    for meth in ("deconvnet", "guided-backprop"):
        assert main(["explain", str(run), str(paths[1]), "--out", str(out), "--class", "Vireo", "--method", meth,
                     "--device", "cpu"]) == 0
        record = json.loads((out / f"bird1.{meth}.json").read_text())
        (entry,) = record["maps"]
        assert record["method"] == meth and entry["class"] == "Vireo" and len(entry["parts"]) == 1
        assert np.load(out / entry["npy"]).shape == (1, *images()[1].shape[:2])
        assert (out / f"bird1.{meth}.Vireo.png").is_file()
    capsys.readouterr()
    assert main(["explain", str(run), str(paths[0]), "--out", str(out), "--class", "Robin"]) == 2
    err = capsys.readouterr().err
    assert "'Robin'" in err and "Finch, Wren, Vireo" in err
