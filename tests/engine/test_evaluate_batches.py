"""Evaluation in batches (issue #24, item 4): the published protocol scores photos of one resized shape together,
each split read sorted by shape, and gives the figures of the one-at-a-time pass (``protocol_batch=1``).

Toy birds cropped to five shapes, four once resized (64×64 and 56×56 photos both give 32×32). The figures may differ only by
float rounding: a convolution's summation order can depend on how many images share the batch, so a photo's maps
can differ in the last bits; everything else (which photo gets which random point, the regression's rows, the
mark table) must be exactly the same, which the comparison of every figure checks."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import engine.evaluation.published as published
from engine.data import scan
from engine.data.imageio import load_image
from engine.data.transforms import Preprocessing
from engine.errors import ConfigError
from engine.evaluation.evaluate import evaluate_run
from engine.evaluation.protocol import protocol_input_size
from engine.evaluation.published import PublishedPass, decoded_size, shape_order
from engine.models import create_model
from engine.runs import LoadedRun

PP = Preprocessing.for_size(32)
CROPS = [(0, 0), (0, 16), (16, 0), (0, 16), (0, 0), (16, 0), (0, 8), (8, 8)]  # (rows, columns) cut off


@pytest.fixture(scope="module")
def shaped(tmp_path_factory) -> Path:
    """Toy birds, each photo cut at its bottom / right edge by ``CROPS`` in turn: keypoints left outside are made
    invisible and boxes clipped (nothing moves, the top-left corner stays)."""
    from engine.toybirds.dataset import generate

    root = tmp_path_factory.mktemp("shapes") / "toy"
    generate(root, classes=3, per_class=8, size=64, seed=3)
    names = dict(line.split() for line in (root / "images.txt").read_text().splitlines())
    size = {}
    for image_id, rel in names.items():
        dh, dw = CROPS[int(image_id) % len(CROPS)]
        img = cv2.imread(str(root / "images" / rel))
        cv2.imwrite(str(root / "images" / rel), img[:img.shape[0] - dh, :img.shape[1] - dw])
        size[image_id] = (img.shape[0] - dh, img.shape[1] - dw)
    locs = []
    for line in (root / "parts" / "part_locs.txt").read_text().splitlines():
        i, p, x, y, v = line.split()
        h, w = size[i]
        locs.append(f"{i} {p} {x} {y} {int(v == '1' and float(x) < w and float(y) < h)}")
    (root / "parts" / "part_locs.txt").write_text("\n".join(locs) + "\n")
    boxes = []
    for line in (root / "bounding_boxes.txt").read_text().splitlines():
        i, x, y, bw, bh = line.split()
        h, w = size[i]
        boxes.append(f"{i} {x} {y} {min(float(bw), w - float(x))} {min(float(bh), h - float(y))}")
    (root / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    return root


def loaded(model, tmp: Path, method: str, classes: list[str]) -> LoadedRun:
    return LoadedRun(tmp, model.eval(), {"classes": classes, "preprocessing": PP.to_dict(), "method": method})


def same(a, b, where: str = "") -> None:
    """Equal, floats up to rounding (relative 1e-4, absolute 1e-6)."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6), where
    else:
        assert a == b, where


@pytest.mark.parametrize("head", ["parts", "mcloss"])
def test_batches_of_one_shape_give_the_one_at_a_time_figures(shaped, tmp_path, monkeypatch, head):
    report = scan(shaped)
    torch.manual_seed(0)
    model = create_model("smallnet", 3, 2, head=head, **({"parts": 3} if head == "parts" else {}))
    run = loaded(model, tmp_path, head, report.classes)
    baseline = loaded(create_model("smallnet", 3, 2), tmp_path / "ce", "ce", report.classes)
    batches = []
    part_maps = published.part_maps
    monkeypatch.setattr(published, "part_maps", lambda m, x, y, maps: batches.append(tuple(x.shape)) or
                        part_maps(m, x, y, maps))
    ref = evaluate_run(run, report, baseline, batch_size=4, protocol_batch=1)
    assert batches and all(b[0] == 1 for b in batches)
    batches.clear()
    new = evaluate_run(run, report, baseline, batch_size=4)
    # 24 photos in four resized shapes: batches of up to 4 photos, one shape each (the input is (B, 3, H, W))
    assert sum(b[0] for b in batches) == 24 and max(b[0] for b in batches) == 4 and len(batches) < 12
    same(ref.to_dict(), new.to_dict())
    assert ref.protocol["own"]["n_images"] == new.protocol["own"]["n_images"] == {"train": 12, "test": 12}
    same(ref.info.get("marks"), new.info.get("marks"))
    assert new.baselines["gradcam"] is not None and new.protocol["gradcam"] is not None


def test_shapes_from_headers_and_the_pass_never_holds_more_than_a_batch(shaped, tmp_path, monkeypatch):
    report = scan(shaped)
    samples = report.split("test")
    decoded = [load_image(s.path).rgb.shape[:2] for s in samples]
    assert [decoded_size(s.path) for s in samples] == decoded
    order = shape_order(samples, 32)
    assert sorted(order) == list(range(len(samples)))
    resized = [protocol_input_size(*decoded[i], 32) for i in order]
    # photos of one shape side by side; 64×64 and 56×56 photos share 32×32
    assert resized == sorted(resized) and set(resized) == {(32, 32), (32, 43), (43, 32), (37, 32)}
    torch.manual_seed(0)
    run = loaded(create_model("smallnet", 3, 2), tmp_path, "mcloss", report.classes)
    pp = PublishedPass(run, batch_size=3)
    side = pp.sides[0]
    for n, s in enumerate(samples):  # the split's own order, shapes mixed: at most 3 photos ever wait
        img, info = load_image(s.path)
        pp.add("test", s, img, info)
        assert sum(len(v) for v in side.waiting.values()) <= 3
        assert len(side.done["test"]) + sum(len(v) for v in side.waiting.values()) == n + 1
    with pytest.raises(ConfigError, match=r"batch_size=0: the published protocol's batch must be a whole number"):
        PublishedPass(run, batch_size=0)


def test_the_benchmark_times_both_sides_on_a_saved_parts_run(shaped, tmp_path):
    from benchmarks.bench_evaluate import _agree, run
    from engine import runs

    torch.manual_seed(0)
    model = create_model("smallnet", 3, 2, head="parts", parts=3)
    runs.save_epoch(tmp_path / "run", model, {"arch": model.arch, "method": "parts", "classes": scan(shaped).classes,
                                              "preprocessing": PP.to_dict(), "epoch": 1}, [], None)
    rows = run(quick=True, run=str(tmp_path / "run"), data=str(shaped), every=2)
    assert [r["goal"] for r in rows] == [None, ">= 3", None] and rows[1]["ratio"] > 0
    n = {sp: len(scan(shaped).split(sp)) for sp in ("train", "test")}
    assert re.match(r"(\d+) train \+ (\d+) test photos \(1 in 2 of toy\), the run ", rows[0]["note"])
    assert sum(map(int, re.findall(r"\d+", rows[0]["note"])[:2])) == (n["train"] + n["test"]) // 2
    assert rows[1]["note"] == "figures agree with the reference"
    assert _agree({"a": 1.0, "b": [2]}, {"a": 1.0 + 1e-9, "b": [2]}) == []
    assert _agree({"a": 1.0, "b": [2]}, {"a": 1.1, "b": [3]}) == [".a 1 vs 1.1", ".b[0] 2 vs 3"]
    assert run(data=str(tmp_path / "none"))[0]["name"] == "evaluate: not run"
