"""`fieldmark evaluate --maps` (which maps of a run are scored as its parts) and the box share above half maximum:
the share worked out by hand on tiny maps, Grad-CAM scored as the run's parts on the hand-made model of
test_evaluate, and a tiny CBAM run's attention maps through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.data import scan
from engine.data.imageio import load_image
from engine.data.transforms import Preprocessing
from engine.errors import ConfigError
from engine.evaluation.evaluate import _partset, evaluate_run
from engine.evaluation.metrics import box_share_above_half
from engine.evaluation.scores import PART_KEYS
from engine.maps.explain import prepare
from engine.models.attention import spatial_maps

from .test_evaluate import cub, hand_model, loaded  # noqa: F401  (cub: the fixture)


def test_box_share_above_half_by_hand():
    # 4×4 maps over 64×64 photos: cell centres at 7.5, 23.5, 39.5, 55.5 px
    m = np.zeros((5, 4, 4))
    m[0, :2, :2] = [[1.0, 0.5], [0.2, 0.6]]
    m[0, 2, 3] = 2.0  # the maximum, outside the box: half of it is 1, so 1 of the box's 4 cells
    m[1, :2, :2] = [[1.0, 0.5], [0.2, 0.6]]  # maximum 1 inside: 1, 0.5 and 0.6 reach 0.5: 3 of 4
    m[2, 0, 2], m[2, 3, 3] = 0.7, 1.0  # a box holding no cell centre: the cell of its centre (0, 2)
    m[3] = -1.0  # a map whose maximum is <= 0 attends nowhere
    m[4, :2, :2] = [[1.0, 0.5], [0.2, 0.6]]
    boxes = [(0, 0, 32, 32), (0, 0, 32, 32), (40, 10, 2, 2), (0, 0, 64, 64), (0, 0, 23.4, 23.4)]
    sizes = np.tile([64, 64], (5, 1))
    assert box_share_above_half(m, boxes, sizes).tolist() == pytest.approx([1 / 4, 3 / 4, 1.0, 0.0, 1.0])
    # edges count: a box ending at 23.5 holds the second row and column of centres, one ending at 23.4 does not
    assert box_share_above_half(m[4:], [(0, 0, 23.5, 23.5)], sizes[:1]).tolist() == pytest.approx([3 / 4])
    # a 32×128 photo under a 2×4 map: cells 32 px wide (centres x 15.5, 47.5, 79.5, 111.5), 16 px high; the box
    # x 40..90 holds columns 1 and 2 of both rows; the maximum 1 at (0, 1), 0.5 at (1, 2): 2 of 4
    wide = np.zeros((1, 2, 4))
    wide[0, 0, 1], wide[0, 1, 2], wide[0, 1, 0] = 1.0, 0.5, 0.9
    assert box_share_above_half(wide, [(40, 0, 50, 32)], [(32, 128)]).tolist() == pytest.approx([2 / 4])


def test_several_parts_count_by_their_per_cell_maximum_and_padding_is_left_out():
    maps = np.zeros((1, 3, 4, 4))
    maps[0, 0, 0, 0], maps[0, 1, 0, 1], maps[0, 1, 3, 3], maps[0, 2, 2, 2] = 1.0, 0.6, 0.4, 5.0
    kps, sizes, boxes = np.zeros((1, 15, 3)), np.array([[64.0, 64.0]]), np.array([[0.0, 0.0, 64.0, 64.0]])
    # parts 0 and 1: cells (0, 0) 1 and (0, 1) 0.6 reach half the maximum 1, (3, 3) 0.4 does not: 2 of 16
    two = _partset(maps, np.array([[True, True, False]]), sizes, kps, None, boxes)
    assert two.box_share.tolist() == pytest.approx([2 / 16])
    # with the third part valid its 5.0 is the maximum: only its own cell reaches 2.5
    three = _partset(maps, np.ones((1, 3), bool), sizes, kps, None, boxes)
    assert three.box_share.tolist() == pytest.approx([1 / 16])


def test_gradcam_maps_score_the_runs_own_grad_cam(cub, tmp_path):  # noqa: F811
    report = scan(cub)
    result = evaluate_run(loaded(hand_model(), tmp_path), report, baseline=loaded(hand_model(), tmp_path),
                          maps="gradcam")
    d = result.to_dict()
    # the run's Grad-CAM read as its parts gives the Grad-CAM baseline's figures (the baseline is the same model)
    base = d["baselines"]["gradcam"]
    for key in PART_KEYS:
        assert d[key] == pytest.approx(base[key], abs=1e-9), key
    assert d["part_hit_rate"] == pytest.approx(3 / 4) and d["box_share_above_half"] == pytest.approx(2 / 64)
    assert result.info["parts"] == 1 and result.info["maps"] == "gradcam"
    assert result.info["source"].startswith("Grad-CAM of the true class (this run)")
    assert d["top1"] == pytest.approx(3 / 4) and d["regions_per_class"] is None  # h is MC-Loss's, not Grad-CAM's
    own, gradcam = d["protocol"]["own"], d["protocol"]["gradcam"]
    for key in ("keypoint_error", "nmi", "ari", "n_keypoints"):
        assert own[key] == pytest.approx(gradcam[key], abs=1e-9), key
    assert own["protocol"]["maps"] == result.info["source"] and own["protocol"]["background"] is False
    default = evaluate_run(loaded(hand_model(), tmp_path), report)
    assert default.info["source"] == "channels of the true class" and default.info["parts"] == 2
    with pytest.raises(ConfigError, match=r"maps 'cams' is unknown: use one of own, gradcam, attention"):
        evaluate_run(loaded(hand_model(), tmp_path), report, maps="cams")


@pytest.fixture(scope="module")
def cbam_run(tmp_path_factory):
    from engine.events import drive
    from engine.toybirds.dataset import generate
    from engine.training.config import TrainConfig
    from engine.training.loop import train

    tmp = tmp_path_factory.mktemp("cbam")
    generate(tmp / "toy", classes=3, per_class=6, size=64, seed=1)
    cfg = TrainConfig(data=str(tmp / "toy"), out=str(tmp / "run"), model="smallnet", method="mcloss", epochs=1,
                      img_size=32, batch_size=6, attention="cbam", device="cpu")
    drive(train(cfg))
    return tmp / "toy", tmp / "run"


def test_attention_maps_of_a_cbam_run_through_the_cli(cbam_run, tmp_path, capsys):
    from engine.runs import load_run

    data, run = cbam_run
    assert main(["evaluate", str(run), str(data), "--maps", "attention", "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    source = "CBAM spatial maps of the 2 attention blocks, each min-max normalised, one part per block"
    assert out["maps"] == {"option": "attention", "source": source}
    assert out["protocol"]["own"]["protocol"]["maps"] == source and out["protocol"]["own"]["keypoint_error"] > 0
    assert out["field_marks"] == {"note": "--maps attention: field-mark agreement ranks the run's own shared parts"}
    # the box share by hand from the blocks' maps: each min-max normalised, their per-cell maximum, the test photos
    loaded_run = load_run(run, "cpu")
    pp = Preprocessing.from_dict(loaded_run.preprocessing)
    shares = []
    for s in scan(data).split("test"):
        img, info = load_image(s.path)
        m = spatial_maps(loaded_run.model.eval(), prepare([img], pp, "cpu"))[0]
        m = (m - m.amin(dim=(1, 2), keepdim=True)) / (m.amax(dim=(1, 2), keepdim=True) - m.amin(dim=(1, 2),
                                                                                                keepdim=True))
        shares.append(box_share_above_half(m.amax(dim=0)[None].numpy(), [info.xywh_to_image(s.bbox)],
                                           [img.shape[:2]])[0])
    assert 0 < out["box_share_above_half"] == pytest.approx(float(np.mean(shares)), abs=1e-6)
    assert main(["evaluate", str(run), str(data), "--maps", "attention", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "box share above half max (%)" in text and f"parts: {source}, 2 per image" in text


def test_attention_maps_of_a_run_without_blocks_are_refused(cbam_run, tmp_path, capsys):
    from engine import runs
    from engine.models import create_model

    data, _ = cbam_run
    torch.manual_seed(0)
    model = create_model("smallnet", 3, 3)
    run = tmp_path / "plain"
    runs.save_epoch(run, model, {"arch": model.arch, "method": "ce", "classes": scan(data).classes,
                                 "preprocessing": Preprocessing.for_size(32).to_dict(), "epoch": 1}, [], None)
    assert main(["evaluate", str(run), str(data), "--maps", "attention", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the run {str(run)!r} has no attention blocks (trained with --attention none)" in err[0]
