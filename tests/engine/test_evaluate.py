"""Part evaluation (engine.evaluation.evaluate) against hand-computed figures: a tiny CUB-layout folder with known keypoints
and a model whose part maps are set by hand (one hot cell per channel), plus toy birds' mark recall and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torch import nn

from engine import runs
from engine.cli import main
from engine.data import scan
from engine.data.transforms import Preprocessing
from engine.errors import DataError
from engine.evaluation.evaluate import KEYS, evaluate_run
from engine.evaluation import metrics
from engine.evaluation.metrics import CUB_PARTS
from engine.models.partnet import PartNet
from engine.runs import LoadedRun

PP = Preprocessing.for_size(64)
W, H, CELLS, V = 128, 64, 8, 4.0  # originals 128×64, maps 8×8 (a cell is 16×8 pixels), hot value V
BEAK, TAIL = CUB_PARTS.index("beak"), CUB_PARTS.index("tail")

# image id: (class, train?, {channel: (row, col, value)}, {keypoint: (x, y)})
IMAGES = {
    1: (0, True, {0: (1, 2, V), 1: (6, 5, 0.8 * V)}, {BEAK: (40, 12), TAIL: (88, 52)}),
    2: (0, True, {0: (2, 2, V), 1: (5, 6, 0.8 * V)}, {BEAK: (40, 20), TAIL: (100, 44)}),
    3: (0, False, {0: (2, 1, V), 1: (5, 6, 0.8 * V)}, {BEAK: (24, 20), TAIL: (60, 40)}),
    4: (0, False, {0: (3, 3, V), 1: (1, 7, 0.8 * V)}, {BEAK: (56, 28), TAIL: (119, 12)}),
    5: (1, True, {2: (4, 3, V), 3: (6, 1, 0.8 * V)}, {BEAK: (24, 52), TAIL: (56, 36)}),
    6: (1, True, {2: (3, 4, V), 3: (7, 0, 0.8 * V)}, {BEAK: (8, 60), TAIL: (72, 28)}),
    7: (1, False, {2: (4, 4, V), 3: (6, 0, 0.8 * V)}, {BEAK: (8, 52), TAIL: (72, 36)}),
    8: (1, False, {2: (0, 0, V), 3: (7, 7, 0.8 * V), 0: (3, 3, 2 * V)}, {BEAK: (64, 32)}),  # misclassified
}


def maps_of(image_id: int) -> np.ndarray:
    m = np.zeros((4, CELLS, CELLS), np.float32)
    for ch, (r, c, v) in IMAGES[image_id][2].items():
        m[ch, r, c] = v
    return m


def centre(r: float, c: float) -> tuple[float, float]:
    """A cell's centre in original pixels (pixel centres at integers)."""
    return (c + 0.5) * W / CELLS - 0.5, (r + 0.5) * H / CELLS - 0.5


class MapTable(nn.Module):
    """Reads the image id from the centre pixel (every image has a flat centre block of grey 10·id) and returns
    that image's hand-made maps: the model's maps are exactly known."""

    def __init__(self, fifth: dict[int, tuple[int, int, float]] | None = None):
        super().__init__()
        maps = [np.zeros((4, CELLS, CELLS), np.float32)] + [maps_of(i) for i in sorted(IMAGES)]
        if fifth is not None:  # a fifth channel with one hot cell per image id
            for i, m in enumerate(maps):
                extra = np.zeros((1, CELLS, CELLS), np.float32)
                if i in fifth:
                    r, c, v = fifth[i]
                    extra[0, r, c] = v
                maps[i] = np.concatenate([m, extra])
        self.register_buffer("table", torch.from_numpy(np.stack(maps)))
        self.register_buffer("mean", torch.tensor(PP.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(PP.std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = (x * self.std + self.mean)[:, 0, x.shape[2] // 2, x.shape[3] // 2]
        return self.table[(grey * 255 / 10).round().long()]


def hand_model() -> PartNet:
    model = PartNet(MapTable(), 4, 8, 2, 2)  # groups [2, 2]: channels 0, 1 are class 0's; 2, 3 class 1's
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]))
        model.fc.bias.zero_()
    return model.eval()


@pytest.fixture(scope="module")
def cub(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cub") / "CUB_200_2011"
    (root / "images" / "001.A").mkdir(parents=True)
    (root / "images" / "002.B").mkdir(parents=True)
    (root / "parts").mkdir()
    lines = {k: [] for k in ("images", "labels", "split", "boxes", "locs")}
    for i, (cls, train, _, kps) in IMAGES.items():
        img = np.full((H, W, 3), 90, np.uint8)
        img[H // 2 - 12:H // 2 + 12, W // 2 - 24:W // 2 + 24] = 10 * i
        rel = f"{'001.A' if cls == 0 else '002.B'}/img_{i}.png"
        cv2.imwrite(str(root / "images" / rel), img)
        lines["images"].append(f"{i} {rel}")
        lines["labels"].append(f"{i} {cls + 1}")
        lines["split"].append(f"{i} {int(train)}")
        lines["boxes"].append(f"{i} 0 0 {W} {H}")
        for p in range(15):
            x, y = kps.get(p, (0, 0))
            lines["locs"].append(f"{i} {p + 1} {x} {y} {int(p in kps)}")
    for name, key in (("images.txt", "images"), ("image_class_labels.txt", "labels"),
                      ("train_test_split.txt", "split"), ("bounding_boxes.txt", "boxes"),
                      ("parts/part_locs.txt", "locs")):
        (root / name).write_text("\n".join(lines[key]) + "\n")
    (root / "classes.txt").write_text("1 001.A\n2 002.B\n")
    (root / "parts" / "parts.txt").write_text("".join(f"{i + 1} {p}\n" for i, p in enumerate(CUB_PARTS)))
    return root


def loaded(model: nn.Module, tmp: Path) -> LoadedRun:
    return LoadedRun(tmp, model, {"classes": ["A", "B"], "preprocessing": PP.to_dict(), "method": "mcloss"})


def truth_of(ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints (N, 15, 3) x, y, visible; boxes (N, 4)) of these images, from the table above."""
    kp = np.zeros((len(ids), 15, 3))
    for n, i in enumerate(ids):
        for p, (x, y) in IMAGES[i][3].items():
            kp[n, p] = (x, y, 1)
    return kp, np.tile([0.0, 0.0, W, H], (len(ids), 1))


class Recorder:
    """Wraps a metrics function: keeps each call's arguments and result (the figure passes through unchanged)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs)
        self.calls.append((args, out))
        return out


def test_each_figure_against_hand_computed_values(cub, tmp_path, monkeypatch):
    report = scan(cub)
    assert report.has_parts and report.classes == ["A", "B"]
    rec = Recorder(metrics.keypoint_regression_error)
    monkeypatch.setattr(metrics, "keypoint_regression_error", rec)
    result = evaluate_run(loaded(hand_model(), tmp_path), report, baseline=loaded(hand_model(), tmp_path))
    d = result.to_dict()
    assert tuple(d) == KEYS
    assert d["top1"] == pytest.approx(3 / 4)  # image 8 has class A's channel hotter

    # hits (radius 10 % of the 128×64 box diagonal = 14.3 px): image 3: 1 of 2, 4: 2, 7: 2, 8: 0
    assert d["part_hit_rate"] == pytest.approx(5 / 8)
    # the boxes are the whole 128×64 photo, so every peak is in its box; on the map's outer ring of cells (row or
    # column 0 or 7) of the true class's two peaks: image 3 (2,1) (5,6) none, 4 (3,3) (1,7) one, 7 (4,4) (6,0)
    # one, 8 (0,0) (7,7) both: 4 of 8
    assert d["peaks_in_box"] == 1.0
    assert d["peaks_on_border"] == pytest.approx(4 / 8)

    # keypoint regression: its formula is checked on examples worked out by hand in test_metrics.py; here, that
    # evaluate feeds it the hand-known parts. ξ parts of the true class: one hot cell each, so centroid = that
    # cell's centre and relative peaks (1, 0.8); fitted on train images 1, 2, 5, 6, scored on 3, 4, 7, 8
    train, test = [1, 2, 5, 6], [3, 4, 7, 8]
    own = {i: [centre(r, c) for ch, (r, c, _) in sorted(IMAGES[i][2].items())
               if ch in ((0, 1) if IMAGES[i][0] == 0 else (2, 3))] for i in IMAGES}
    # all 4 channels: an empty channel's centroid is the map centre, its relative peak 0
    every, vals = {}, {}
    for i in IMAGES:
        cells = [IMAGES[i][2].get(ch) for ch in range(4)]
        every[i] = [centre(c[0], c[1]) if c else centre(3.5, 3.5) for c in cells]
        vals[i] = [c[2] / max(v[2] for v in IMAGES[i][2].values()) if c else 0.0 for c in cells]

    def fed(parts: dict, values: dict) -> tuple:
        return (np.array([parts[i] for i in train]), np.array([values[i] for i in train]), *truth_of(train),
                np.array([parts[i] for i in test]), np.array([values[i] for i in test]), *truth_of(test))

    def figure_for(inputs: tuple) -> float:
        for args, out in rec.calls:
            if len(args) == len(inputs) and all(np.shape(a) == np.shape(b) and np.allclose(a, b, atol=1e-9)
                                               for a, b in zip(args, inputs)):
                return out
        raise AssertionError(f"keypoint_regression_error never got {inputs}")

    assert d["keypoint_error"] == figure_for(fed(own, {i: [1.0, 0.8] for i in IMAGES}))
    assert d["keypoint_error_all"] == figure_for(fed(every, vals))

    # labels at keypoints (nearest cell; ties of two empty channels go to the first):
    # 3: beak→0, tail→0; 4: beak→0, tail→1; 7: beak→1, tail→0; 8: beak→0 (tail not visible)
    truth = [BEAK, TAIL, BEAK, TAIL, BEAK, TAIL, BEAK]
    labels = [0, 0, 0, 1, 1, 0, 0]
    assert d["nmi"] == pytest.approx(normalized_mutual_info_score(truth, labels) * 100)
    assert d["ari"] == pytest.approx(adjusted_rand_score(truth, labels) * 100)

    # regions: mean over test images and classes of h_i = Σ_cells max_{j in group} softmax_cells(F_j)
    def h(group_maps: np.ndarray) -> float:
        flat = group_maps.reshape(len(group_maps), -1).astype(np.float64)
        soft = np.exp(flat) / np.exp(flat).sum(1, keepdims=True)
        return float(soft.max(0).sum())

    hs = [h(maps_of(i)[g]) for i in IMAGES if not IMAGES[i][1] for g in ([0, 1], [2, 3])]
    assert d["regions_per_class"] == pytest.approx(np.mean(hs), rel=1e-5)
    assert d["mark_recall"] is None  # not toy birds

    # Grad-CAM baseline: ReLU(Σ w F) peaks on the hotter of the class's two cells: 3 hit, 4 hit, 7 hit, 8 miss
    base = d["baselines"]["gradcam"]
    assert base["part_hit_rate"] == pytest.approx(3 / 4)
    assert base["nmi"] == pytest.approx(0.0) and base["keypoint_error"] == base["keypoint_error_all"]
    assert base["peaks_on_border"] == pytest.approx(1 / 4)  # image 8's peak, (0, 0)
    rnd = d["baselines"]["random"]
    assert set(rnd) == set(base) == {"part_hit_rate", "peaks_in_box", "peaks_on_border", "box_share_above_half",
                                     "keypoint_error", "keypoint_error_all", "nmi", "ari", "mark_recall"}
    # random points are drawn in the box and read from no map
    assert rnd["peaks_in_box"] == 1.0 and rnd["peaks_on_border"] is None and rnd["box_share_above_half"] is None
    # box share above half max: the box is the whole photo (64 cells); the true class's two maps are zero but for
    # one hot cell (V) and one at 0.8·V, both ≥ V/2: 2 of 64 cells in every test image; Grad-CAM's ReLU(Σ w F)
    # is the same two cells (weights 1): 2 of 64 as well
    assert d["box_share_above_half"] == pytest.approx(2 / 64) and base["box_share_above_half"] == pytest.approx(2 / 64)
    again = evaluate_run(loaded(hand_model(), tmp_path), report).to_dict()
    assert again["baselines"]["random"] == rnd and again["baselines"]["gradcam"] is None  # seeded

    # the random baseline with its points placed by hand: per box, the first at the box centre (64, 32), the
    # others at its corner (0, 0). Hit radius 14.3 px: the centre is 8.9 px from image 3's tail (60, 40), 4's beak
    # (56, 28), 7's tail (72, 36) and on 8's beak (64, 32); the corner is 31 px or more from every keypoint
    def placed(boxes, k, rng):
        pts = np.repeat(np.asarray(boxes, float)[:, None, :2], k, axis=1)
        pts[:, 0] += np.asarray(boxes, float)[:, 2:] / 2
        return pts

    monkeypatch.setattr(metrics, "random_peaks", placed)
    rnd = evaluate_run(loaded(hand_model(), tmp_path), report).to_dict()["baselines"]["random"]
    assert rnd["part_hit_rate"] == pytest.approx(4 / 8)  # ξ = 2 points in each of the 4 test images


def test_mark_recall_on_toy_birds(tmp_path):
    from .test_export import colour_run
    from engine.toybirds.dataset import generate

    root = tmp_path / "toy"
    generate(root, classes=4, per_class=8, size=64, seed=5)
    report = scan(root)
    result = evaluate_run(colour_run(root, report.classes, tmp_path), report)
    assert result.mark_recall == pytest.approx(1.0)
    assert result.baselines["random"]["mark_recall"] < result.mark_recall
    assert result.part_hit_rate > result.baselines["random"]["part_hit_rate"]
    assert result.info["parts"] == 3 and result.info["parts_all"] == 12
    # the table behind mark_recall: one row per (class, defining mark), names from the generator's truth
    from engine.evaluation.scores import format_marks
    from engine.toybirds.dataset import class_marks

    truth = class_marks(root)
    rows = result.info["marks"]
    assert [(r["class"], r["mark"]) for r in rows] == [(c, m) for c in report.classes for m, _ in truth[c]]
    assert all(r["recalled"] and r["hits"] == r["images"] > 0 for r in rows)
    assert result.saved()["marks"] == rows and "marks" not in result.to_dict()
    text = format_marks(rows)
    assert text.count("\n") == len(rows) and f"{rows[0]['hits']}/{rows[0]['images']}" in text


def test_refuses_data_without_parts_and_stops(cub, tmp_path, class_folders):
    with pytest.raises(DataError, match="part keypoints"):
        evaluate_run(loaded(hand_model(), tmp_path), scan(class_folders))
    from engine.errors import Cancelled

    with pytest.raises(Cancelled):
        evaluate_run(loaded(hand_model(), tmp_path), scan(cub), should_stop=lambda: True)


def test_cli_json_has_exactly_the_keys_and_the_table_reads(cub, tmp_path, capsys):
    from engine.models import create_model

    torch.manual_seed(0)
    model = create_model("smallnet", 2, 2)
    run = tmp_path / "run"
    runs.save_epoch(run, model, {"arch": model.arch, "method": "ce", "classes": ["A", "B"],
                                 "preprocessing": PP.to_dict(), "epoch": 1}, [], None)
    assert main(["evaluate", str(run), str(cub), "--json", "--baseline", str(run), "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["top1", "part_hit_rate", "peaks_in_box", "peaks_on_border", "box_share_above_half",
                         "keypoint_error", "keypoint_error_all", "nmi", "ari", "regions_per_class", "mark_recall",
                         "baselines", "protocol", "maps", "field_marks"]
    assert out["maps"] == {"option": "own", "source": "channels of the true class"}
    # a CE run has no shared parts to rank: the field-mark block says why instead of a figure
    assert out["field_marks"] == {"note": "a ce run: field-mark agreement ranks the shared parts of a `parts` run"}
    assert set(out["baselines"]) == {"random", "gradcam"} and out["mark_recall"] is None
    # the published protocol: the run, chance and Grad-CAM, each saying which maps it scored
    assert set(out["protocol"]) == {"own", "random", "gradcam"}
    assert out["protocol"]["own"]["protocol"]["maps"].startswith("MC-Loss channels of the true class (xi=2)")
    assert out["protocol"]["own"]["protocol"]["background"] is False
    assert out["protocol"]["gradcam"]["protocol"]["maps"].startswith("Grad-CAM")
    assert out["protocol"]["own"]["n_images"] == {"train": 4, "test": 4}
    assert main(["evaluate", str(run), str(cub), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "part hit rate" in text and "random" in text and "4 test / 4 train images" in text
    assert "published protocol" in text and "NMI (x100)" in text
    assert "field-mark agreement: none (a ce run" in text


def test_a_tasn_run_is_scored_by_its_structure_map(cub, tmp_path):
    from engine.models import create_model

    torch.manual_seed(0)
    model = create_model("tasn_mobilenet_v2", 2, input_size=64, sample_size=32).eval()
    result = evaluate_run(loaded(model, tmp_path), scan(cub))
    assert result.info["parts"] == 1 and result.info["source"] == "tasn structure map"
    # one part per test image: the hit rate counts 4 parts, whatever the random weights make of them
    assert result.regions_per_class is None and result.top1 is not None
    assert result.part_hit_rate * 4 == pytest.approx(round(result.part_hit_rate * 4), abs=1e-9)
    assert result.keypoint_error == result.keypoint_error_all


def test_uneven_channel_groups_are_padded(cub, tmp_path):
    # 5 channels split [2, 3]: class A owns channels 0, 1, class B channels 2, 3, 4 (4: a fifth hot cell)
    fifth = {i: (0, 0, 0.5 * V) for i in IMAGES} | {8: (3, 4, 0.5 * V)}
    model = PartNet(MapTable(fifth), 5, 8, 2, 2, part_channels="split").eval()
    assert model.groups == [2, 3]
    result = evaluate_run(loaded(model, tmp_path), scan(cub))
    assert result.info["parts"] == 3 and result.info["parts_all"] == 5
    # parts at cell centres, hit radius 14.3 px. Class A's images have 2 parts (the pad to 3 is no part), B's 3:
    # 3: (23.5, 19.5) on the beak (24, 20), (103.5, 43.5) misses: 1 of 2; 4: (55.5, 27.5) beak, (119.5, 11.5)
    # tail: 2 of 2; 7: (71.5, 35.5) tail, (7.5, 51.5) beak, (7.5, 3.5) misses: 2 of 3; 8: (7.5, 3.5) and
    # (119.5, 59.5) miss, (71.5, 27.5) is 8.7 px from the beak (64, 32): 1 of 3. 6 hits of 10 parts
    assert result.part_hit_rate == pytest.approx(6 / 10)
    assert result.keypoint_error is not None and result.regions_per_class is not None  # values: the test above
