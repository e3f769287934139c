"""Field-mark agreement (shared/ALGORITHMS.md §6) and on-bird shares, every number worked out by hand on a tiny
two-species attribute table and hand-placed centroids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.fieldmarks.agreement import (Attributes, expert_regions, field_mark_agreement, group_difference,
                                         keypoint_region, part_regions, read_attributes, region_differences)
from engine.fieldmarks.onbird import PartPlace, part_places, split_by_place
from engine.fieldmarks.separation import PartScores, Separation

# attribute columns: bill_color yellow/black, leg_color pink/black, wing_pattern solid/striped, throat_color
# white/red, shape (no region), crown_color (zero for species A: skipped)
GROUPS = ["bill_color", "bill_color", "leg_color", "leg_color", "wing_pattern", "wing_pattern", "throat_color",
          "throat_color", "shape", "crown_color", "crown_color"]
TABLE = np.array([
    # bill     leg       wing      throat   shape crown
    [80, 20, 50, 50, 30, 10, 10, 0, 90, 0, 0],  # species A
    [0, 50, 20, 20, 10, 30, 0, 10, 10, 40, 60],  # species B
], float)
KP_NAMES = ["beak", "left wing", "right wing", "throat", "left leg"]


def attrs() -> Attributes:
    return Attributes(list(GROUPS), TABLE.copy())


def test_group_difference_is_the_total_variation_of_the_normalised_shares():
    # bill: A (0.8, 0.2), B (0, 1): ½(0.8 + 0.8) = 0.8
    assert group_difference(np.array([80, 20]), np.array([0, 50])) == pytest.approx(0.8)
    assert group_difference(np.array([0, 0]), np.array([0, 50])) is None  # a group summing to 0 is skipped


def test_region_differences_take_the_largest_group_and_skip_empty_regions():
    d = region_differences(attrs(), 0, 1)
    assert d["beak"] == pytest.approx(0.8)
    assert d["leg"] == pytest.approx(0.0)  # (0.5, 0.5) against (0.5, 0.5)
    assert d["wing"] == pytest.approx(0.5)  # (0.75, 0.25) against (0.25, 0.75)
    assert d["throat"] == pytest.approx(1.0)
    assert d["crown"] is None  # crown_color sums to 0 for A: skipped; head_pattern absent
    assert d["back"] is None and d["tail"] is None


def test_expert_regions_are_the_top_three_and_every_region_within_a_tenth_of_the_largest():
    assert expert_regions(region_differences(attrs(), 0, 1)) == ["throat", "beak", "wing"]
    # ties go in region order (forehead before nape); nape is 4th but within 0.1 of the largest
    diff = {"beak": 0.5, "crown": 0.5, "forehead": 0.45, "nape": 0.45, "eye": 0.39, "leg": None}
    assert expert_regions(diff) == ["beak", "crown", "forehead", "nape"]
    assert expert_regions({"beak": None}) == []


def test_keypoint_regions_merge_left_and_right():
    assert [keypoint_region(n) for n in KP_NAMES] == ["beak", "wing", "wing", "throat", "leg"]
    assert keypoint_region("left antenna") is None


def scores_for(centres: np.ndarray, present: np.ndarray, keypoints: np.ndarray, labels, predictions,
               part_scores: np.ndarray | None = None) -> PartScores:
    n, k = present.shape
    s = part_scores if part_scores is not None else np.zeros((n, k, 2), np.float32)
    return PartScores(["A", "B"], np.array(labels), np.array(predictions), [f"{i}.jpg" for i in range(n)], s,
                      np.zeros((n, k, 4)), present, centres, np.full((n, 2), 0.5), keypoints, list(KP_NAMES))


def keypoints_grid(n: int) -> np.ndarray:
    """Every image: beak (10, 10), left wing (50, 50), right wing (60, 50), throat (20, 30), left leg (50, 90)."""
    kp = np.array([[10, 10, 1], [50, 50, 1], [60, 50, 1], [20, 30, 1], [50, 90, 1]], float)
    return np.repeat(kp[None], n, axis=0)


def test_a_part_takes_the_region_most_of_its_active_photos_vote_for():
    kp = keypoints_grid(4)
    kp[3, 1, 2] = 0  # image 3: the left wing is not visible
    centres = np.array([[[12, 11], [49, 52]], [[11, 9], [61, 49]], [[48, 88], [52, 52]], [[10, 12], [51, 50]]], float)
    present = np.array([[True, True], [True, True], [True, False], [False, True]])
    # part 0: beak, beak, leg (image 3 inactive) -> beak. part 1: wing (left), wing (right), -, and on image 3 the
    # nearest visible keypoint is the right wing (the left one is hidden) -> wing
    assert part_regions(centres, present, kp, KP_NAMES, np.arange(4)) == ["beak", "wing"]
    assert part_regions(centres, np.zeros_like(present), kp, KP_NAMES, np.arange(4)) == [None, None]
    # a tie of votes goes to the region that comes first in order (beak before leg)
    assert part_regions(centres[:, :1], np.array([[True], [False], [True], [False]]), kp, KP_NAMES,
                        np.arange(4)) == ["beak"]


def test_agreement_and_its_baselines_by_hand():
    # four photos, two per species; A photos 0, 1 predicted B, B photo 2 predicted A: 3 confusions (>= 2)
    kp = keypoints_grid(4)
    centres = np.array([[[50, 88], [50, 51]]] * 4, float)  # part 0 on the leg, part 1 on the wing
    present = np.ones((4, 2), bool)
    sc = scores_for(centres, present, kp, [0, 0, 1, 1], [1, 1, 0, 1])
    ag = field_mark_agreement(sc, attrs(), lambda a, b: [1, 0])  # the wing ranked first
    assert ag.n == 1 and ag.pairs[0].errors == 3
    assert ag.pairs[0].experts == ["throat", "beak", "wing"]
    f = ag.figures()
    assert f["agreement"] == pytest.approx(1.0)  # wing is an expert region
    assert f["d_ratio"] == pytest.approx(0.5)  # D_wing / D_throat = 0.5 / 1.0
    assert f["random_agreement"] == pytest.approx(0.5)  # leg no, wing yes
    assert f["random_d_ratio"] == pytest.approx(0.25)  # (0 + 0.5) / 2
    assert f["last_agreement"] == pytest.approx(0.0) and f["last_d_ratio"] == pytest.approx(0.0)
    doc = ag.to_dict()
    assert doc["pairs"][0]["ranked_parts"][0] == {"part": 2, "label": "part 2", "region": "wing", "agrees": True,
                                                  "d_ratio": 0.5}
    # the leg ranked first instead: no agreement
    assert field_mark_agreement(sc, attrs(), lambda a, b: [0, 1]).figures()["agreement"] == pytest.approx(0.0)


def test_no_figure_says_why():
    kp = keypoints_grid(4)
    sc = scores_for(np.zeros((4, 2, 2)), np.ones((4, 2), bool), kp, [0, 0, 1, 1], [0, 1, 1, 1])  # 1 confusion
    ag = field_mark_agreement(sc, attrs(), lambda a, b: [0, 1])
    assert ag.n == 0 and "confused at least 2 times" in ag.note
    assert field_mark_agreement(sc, "no attribute files here", lambda a, b: [0, 1]).note == "no attribute files here"


def cub_folder(root: Path, table_rows: list[str]) -> Path:
    (root / "attributes").mkdir(parents=True)
    for f in ("images.txt", "image_class_labels.txt"):
        (root / f).write_text("")
    (root / "classes.txt").write_text("2 002.Second\n1 001.First\n")  # not in id order
    (root / "attributes" / "attributes.txt").write_text(
        "1 has_bill_color::yellow\n2 has_bill_color::black\n3 has_shape::duck-like\n")
    (root / "attributes" / "class_attribute_labels_continuous.txt").write_text("\n".join(table_rows) + "\n")
    return root


def test_attribute_rows_are_read_in_class_id_order(tmp_path):
    root = cub_folder(tmp_path / "cub", ["1.0 2.0 3.0", "4.0 5.0 6.0"])  # row 1 = class id 1 (listed second)
    a = read_attributes(root, ["Second", "First"])
    assert isinstance(a, Attributes)
    assert a.groups == ["bill_color", "bill_color", "shape"]
    assert a.table.tolist() == [[4.0, 5.0, 6.0], [1.0, 2.0, 3.0]]


def test_missing_or_malformed_attribute_files_are_explained(tmp_path):
    assert "no species attributes" in read_attributes(cub_folder(tmp_path / "a", ["1 2 3", "4 5 6"]).parent /
                                                      "nowhere", ["x"])  # not a CUB folder at all
    bad = cub_folder(tmp_path / "b", ["1 2", "4 5 6"])
    msg = read_attributes(bad, ["Second", "First"])
    assert isinstance(msg, str) and "rows of" in msg and "fix the file" in msg
    (bad / "attributes" / "attributes.txt").unlink()
    assert "has no species attributes" in read_attributes(bad, ["Second", "First"])


def test_on_bird_share_counts_the_active_photos_whose_peak_is_in_the_box():
    n = 5
    peaks = np.zeros((n, 2, 2))
    peaks[:, 0] = [[15, 15], [18, 12], [19, 19], [40, 40], [15, 15]]  # part 0: in, in, in, out, (inactive)
    peaks[:, 1] = [[40, 40]] * n  # part 1 always outside
    centres = peaks.copy()
    centres[2, 0] = [30, 30]  # its centroid leaves the box on photo 2
    present = np.array([[1, 1], [1, 1], [1, 1], [1, 0], [0, 1]], bool)
    sc = PartScores(["A"], np.zeros(n, int), np.zeros(n, int), [""] * n, np.zeros((n, 2, 1), np.float32),
                    np.zeros((n, 2, 4)), present, centres, np.ones((n, 1)), peaks=peaks,
                    bird_boxes=np.array([[10, 10, 20, 20]] * n, float),
                    peak_on_foreground=np.array([[1, 0]] * n, bool))
    p0, p1 = part_places(sc)
    assert (p0.share, p0.centroid_share, p0.active, p0.source) == (pytest.approx(0.75), pytest.approx(0.5), 4, "box")
    assert p0.on_bird and not p1.on_bird and p1.share == 0.0
    # without boxes: the run's foreground at the peak decides, and there is no centroid share
    sc.bird_boxes = np.full((n, 4), np.nan)
    f0, f1 = part_places(sc)
    assert (f0.share, f0.centroid_share, f0.source) == (1.0, None, "foreground") and f1.share == 0.0


def test_ranked_parts_split_into_bird_and_background_keeping_their_order():
    ranked = [Separation(k, 1.0 - k / 10, 0, 0, [], []) for k in (2, 0, 1, 3)]
    places = [PartPlace(0, 0.9, None, 5, "box"), PartPlace(1, 0.2, None, 5, "box"),
              PartPlace(2, 0.1, None, 5, "box"), PartPlace(3, None, None, 0, "box")]
    bird, background = split_by_place(ranked, places)
    assert [s.part for s in bird] == [0] and [s.part for s in background] == [2, 1, 3]
    assert split_by_place(ranked, None) == (ranked, [])
