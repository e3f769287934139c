"""engine.evaluation.protocol: tiny cases whose every expected number is worked out by hand in the comments."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from engine.errors import ConfigError, DataError
from engine.evaluation import protocol as P


# ---------------------------------------------------------------- input size

def test_input_size_shorter_side_no_crop():
    # 375 x 500, shorter side 375 → 448: scale 448/375 = 1.19467, long side 500 · 1.19467 = 597.33 → 597.
    assert P.protocol_input_size(375, 500, 448) == (448, 597)
    assert P.protocol_input_size(500, 375, 448) == (597, 448)
    # 2 x 3 → shorter side 3: scale 1.5, long side 4.5 → Python round (half to even) → 4.
    assert P.protocol_input_size(2, 3, 3) == (3, 4)
    # already the right size: unchanged.
    assert P.protocol_input_size(224, 300, 224) == (224, 300)
    with pytest.raises(ConfigError, match="0"):
        P.protocol_input_size(10, 10, 0)


@pytest.mark.parametrize("hw", [(375, 500), (2, 3), (333, 250), (17, 41)])
def test_input_size_agrees_with_resize_shorter(hw):
    from engine.data.transforms import resize_shorter

    img = np.zeros((*hw, 3), np.uint8)
    assert P.protocol_input_size(*hw, 3) == resize_shorter(img, 3).shape[:2]


# ---------------------------------------------------------------- centres

def test_centroid_on_a_2x2_grid_and_box_units():
    maps = np.array([[[1.0, 0.0], [0.0, 3.0]],   # part 0
                     [[0.2, 0.2], [0.2, 0.2]],   # part 1: flat, max 0.2
                     [[0.0, 0.0], [0.0, 0.0]]])  # part 2: empty
    centres, maxima = P.part_centres(maps, (20, 40))  # input H' = 20, W' = 40: a cell is 20 px wide, 10 px tall
    # part 0: column sums (1, 3), cell centres 0.5 and 1.5 → (0.5·1 + 1.5·3)/4 = 1.25 cells → x = 1.25 · 20 = 25;
    #         row sums (1, 3) → 1.25 cells → y = 1.25 · 10 = 12.5.
    # part 1: flat → 1.0 cell → x = 20, y = 10.  part 2: no weight → NaN.
    np.testing.assert_allclose(centres[:2], [[25.0, 12.5], [20.0, 10.0]])
    assert np.isnan(centres[2]).all()
    np.testing.assert_allclose(maxima, [3.0, 0.2, 0.0])  # active (> 0.5): part 0 only
    # Original image 40 x 80 (H, W) → input 20 x 40: original = input · 2. Box (x0, y0, w, h) = (10, 5, 50, 40).
    # part 0: (50, 25) px → ((50 − 10)/50, (25 − 5)/40) = (0.8, 0.5); part 1: (40, 20) → (0.6, 0.375).
    box_units = P.centres_to_box_units(centres, (20, 40), (40, 80), (10, 5, 50, 40))
    np.testing.assert_allclose(box_units[:2], [[0.8, 0.5], [0.6, 0.375]])


def test_centres_reject_negative_or_misshapen_maps():
    with pytest.raises(DataError, match="-0.5"):
        P.part_centres(np.full((1, 2, 2), -0.5), (4, 4))
    with pytest.raises(DataError, match="shape"):
        P.part_centres(np.ones((2, 2)), (4, 4))
    with pytest.raises(DataError, match="w > 0"):
        P.to_box_units(np.zeros((1, 2)), (0, 0, 0, 5))


# ---------------------------------------------------------------- keypoint regression

# Box units throughout. 2 parts, 2 keypoints; fit set 3 images, evaluation set 2 images.
FIT_CENTRES = np.array([[[0.2, 0.5], [0.9, 0.1]],
                        [[0.4, 0.5], [0.3, 0.3]],
                        [[0.6, 0.5], [0.5, 0.8]]])
FIT_ACTIVE = np.array([[True, False], [True, False], [True, False]])  # part 1 never active in the fit set
FIT_KP = np.array([[[0.3, 0.4], [0.8, 0.9]],
                   [[0.5, 0.4], [0.6, 0.9]],
                   [[0.7, 0.4], [5.0, 5.0]]])   # kp 1 of image 2 is invisible: its (5, 5) must not count
FIT_VIS = np.array([[True, True], [True, True], [True, False]])
EVAL_CENTRES = np.array([[[0.3, 0.5], [0.2, 0.2]],
                         [[0.9, 0.9], [0.2, 0.2]]])
EVAL_ACTIVE = np.array([[True, False], [False, False]])  # image B: part 0 inactive → imputed 0, its (0.9, 0.9) unused
EVAL_KP = np.array([[[0.4, 0.6], [0.7, 0.6]],
                    [[0.8, 0.8], [0.1, 0.1]]])
EVAL_VIS = np.array([[True, True], [True, False]])  # kp 1 invisible in image B: not in the denominator
# By hand. Standardised features: part 0's y is 0.5 on every fit row → scale 1, z = 0; part 1 inactive → 0.
# So only part 0's x (z_x) carries information.
# kp 0 (fit rows 0, 1, 2): part 0 x = 0.2, 0.4, 0.6 (mean 0.4, std s); kp x = part x + 0.1 (mean 0.5, same std s)
#   → standardised target = z_x, slope 1 → x̂ = 0.5 + (x − 0.4) = x + 0.1; kp y = 0.4 constant → ŷ = 0.4.
#   Inactive part 0 → z = 0 → the fit mean (0.5, 0.4).
# kp 1 (fit rows 0, 1 only; the scalers are fitted on these rows): part 0 x = 0.2, 0.4 (mean 0.3, std 0.1),
#   kp x = 0.8, 0.6 (mean 0.7, std 0.1) → slope −1 → x̂ = 0.7 − (x − 0.3) = 1.0 − x; ŷ = 0.9 (constant).
# Image A (part 0 active at x = 0.3): kp 0 → (0.4, 0.4) vs (0.4, 0.6): 0.2; kp 1 → (0.7, 0.9) vs (0.7, 0.6): 0.3.
# Image B (part 0 inactive): kp 0 → (0.5, 0.4) vs (0.8, 0.8): √(0.3² + 0.4²) = 0.5; kp 1 invisible.
# Pooled: 100 · (0.2 + 0.3 + 0.5) / 3 = 33.333...; per keypoint: kp 0 100 · 0.7/2 = 35.0 (2), kp 1 30.0 (1).
# (With one scaler fitted on all 3 fit rows, kp 1 would give x̂(0.3) = 0.75 and distance 0.304 instead.)


def _regress(**change):
    args = dict(fit_centres=FIT_CENTRES, fit_active=FIT_ACTIVE, fit_kp=FIT_KP, fit_vis=FIT_VIS,
                eval_centres=EVAL_CENTRES, eval_active=EVAL_ACTIVE, eval_kp=EVAL_KP, eval_vis=EVAL_VIS)
    args.update(change)
    return P.keypoint_regression_error(**args)


def test_regression_by_hand():
    r = _regress()
    assert r.error == pytest.approx(100 / 3)
    assert r.n_keypoints == 3 and r.unscored == 0
    assert [(s.index, s.count, s.n_fit, s.fitted) for s in r.per_keypoint] == [(0, 2, 3, True), (1, 1, 2, True)]
    assert [s.mean_error for s in r.per_keypoint] == pytest.approx([35.0, 30.0])


def test_pooled_error_is_not_the_mean_of_per_keypoint_means():
    r = _regress()
    mean_of_means = (35.0 + 30.0) / 2  # 32.5, by hand from the case above
    assert r.error == pytest.approx(33.3333333)
    assert r.error != pytest.approx(mean_of_means)


def test_all_parts_inactive_predicts_the_fit_mean():
    # No active part: every standardised feature is 0 → prediction = fit rows' mean keypoint.
    # kp 0 mean (0.5, 0.4): A (0.4, 0.6) → √(0.1² + 0.2²) = √0.05 = 0.2236068; B (0.8, 0.8) → 0.5.
    # kp 1 mean over rows 0, 1: (0.7, 0.9): A (0.7, 0.6) → 0.3.   100 · (0.2236068 + 0.5 + 0.3)/3 = 34.12023.
    r = _regress(fit_active=np.zeros((3, 2), bool), eval_active=np.zeros((2, 2), bool))
    assert r.error == pytest.approx(34.12023, abs=1e-4)


def test_keypoint_never_visible_in_fit_set_is_left_out(caplog):
    # kp 1 invisible on every fit row: its one evaluation instance (image A) cannot be scored.
    # Left: kp 0 only, 100 · (0.2 + 0.5)/2 = 35.0 over 2 instances.
    vis = FIT_VIS.copy()
    vis[:, 1] = False
    with caplog.at_level(logging.WARNING):
        r = _regress(fit_vis=vis)
    assert r.error == pytest.approx(35.0) and r.n_keypoints == 2 and r.unscored == 1
    assert not r.per_keypoint[1].fitted and r.per_keypoint[1].count == 1
    assert "never visible" in caplog.text


def test_single_fit_image_predicts_its_keypoint():
    # One fit row: every coordinate is constant → scale 1, z = 0 → prediction = that row's keypoint.
    # kp 0 from fit image 0: (0.3, 0.4). Evaluation image A kp 0 (0.4, 0.6): √(0.1² + 0.2²) = 0.2236068 → 22.3607;
    # kp 1 from fit image 0: (0.8, 0.9) vs A (0.7, 0.6): √(0.1² + 0.3²) = 0.3162278 → 31.62278. Pooled 26.99173.
    r = _regress(fit_centres=FIT_CENTRES[:1], fit_active=FIT_ACTIVE[:1], fit_kp=FIT_KP[:1], fit_vis=FIT_VIS[:1],
                 eval_centres=EVAL_CENTRES[:1], eval_active=EVAL_ACTIVE[:1], eval_kp=EVAL_KP[:1],
                 eval_vis=EVAL_VIS[:1])
    assert r.error == pytest.approx(26.99173, abs=1e-4)


def test_no_evaluation_keypoint_gives_nan(caplog):
    with caplog.at_level(logging.WARNING):
        r = _regress(eval_vis=np.zeros((2, 2), bool))
    assert math.isnan(r.error) and r.n_keypoints == 0


def test_regression_rejects_mismatched_shapes():
    with pytest.raises(DataError, match="fit_active"):
        _regress(fit_active=np.ones((3, 3), bool))
    with pytest.raises(DataError, match="parts"):
        _regress(eval_centres=np.zeros((2, 3, 2)), eval_active=np.zeros((2, 3), bool))


# ---------------------------------------------------------------- NMI / ARI

def test_nmi_ari_perfect_labelling():
    # Label names do not matter, only the grouping.
    assert P.nmi_ari([5, 5, 3, 3, 9], [0, 0, 1, 1, 2]) == pytest.approx((100.0, 100.0))


def test_nmi_ari_by_hand():
    # truth 0 0 0 1 1 1, labels 7 7 3 3 3 3. Contingency: t0 → {7: 2, 3: 1}, t1 → {3: 3}.
    # H(T) = ln 2; H(L) = H(1/3, 2/3) = ln 3 − (2/3) ln 2 = 0.6365142; H(L|T) = ½ · H(2/3, 1/3) = 0.3182571;
    # MI = 0.3182571; NMI (arithmetic) = MI / ((ln 2 + 0.6365142)/2) = 0.6365142/(0.6931472 + 0.6365142) = 0.478704.
    # ARI: Σ C(n_ij, 2) = 1 + 0 + 3 = 4; rows C(3,2)+C(3,2) = 6; cols C(2,2)+C(4,2) = 7; C(6,2) = 15;
    # expected 6·7/15 = 2.8; max (6 + 7)/2 = 6.5 → (4 − 2.8)/(6.5 − 2.8) = 1.2/3.7 = 0.3243243.
    nmi, ari = P.nmi_ari([7, 7, 3, 3, 3, 3], [0, 0, 0, 1, 1, 1])
    assert nmi == pytest.approx(47.8704, abs=1e-3)
    assert ari == pytest.approx(32.43243, abs=1e-4)


def test_nmi_ari_empty_and_mismatch(caplog):
    with caplog.at_level(logging.WARNING):
        assert all(math.isnan(v) for v in P.nmi_ari([], []))
    with pytest.raises(DataError, match="2 part labels for 3"):
        P.nmi_ari([0, 1], [0, 1, 2])


def test_labels_at_keypoints_bilinear_nearest_pixel():
    # map 0 = [[1, 0], [0, 0]], map 1 = 0.3 everywhere, upsampled 2 → 4 (align_corners=False): output pixel i reads
    # source (i + 0.5)/2 − 0.5 = −0.25, 0.25, 0.75, 1.25 → weight on cell 0: a = 1, 0.75, 0.25, 0 (clamped at the
    # borders). map 0 at (row r, col c) = a_r · a_c; label 0 where it exceeds 0.3.
    maps = np.stack([np.array([[1.0, 0.0], [0.0, 0.0]]), np.full((2, 2), 0.3)])
    kps = np.array([[1.9, 1.2],     # pixel (row 1, col 1): 0.75 · 0.75 = 0.5625 > 0.3 → 0 (rounding: col 2 → 1)
                    [2.1, 0.5],     # pixel (0, 2): 1 · 0.25 = 0.25 < 0.3 → 1
                    [4.0, 0.0],     # x = 4 clipped to col 3: 0 < 0.3 → 1
                    [0.2, 0.2],     # pixel (0, 0): 1 → 0
                    [np.nan, 1.0]])  # not finite → -1
    assert P.labels_at_keypoints(maps, (4, 4), kps).tolist() == [0, 1, 1, 0, -1]


# ---------------------------------------------------------------- accumulator

def _maps(cell, value=1.0):
    """Part map (one-hot ``value`` at ``cell`` of a 2x2 grid) and background 1 − part (last)."""
    part = np.zeros((2, 2))
    part[cell] = value
    return np.stack([part, 1.0 - part if value == 1.0 else np.full((2, 2), 0.6)])


def test_accumulator_by_hand():
    # Images 20 x 20, img_size 20 → input 20 x 20; box (0, 0, 20, 20): box units = pixels / 20. Cells are 10 px:
    # one-hot cell (r, c): centre ((c + 0.5)·10, (r + 0.5)·10) px → ((c + 0.5)/2, (r + 0.5)/2) box units.
    acc = P.ProtocolAccumulator("softmax part maps (K=1) + background")
    box, size = (0, 0, 20, 20), (20, 20)
    # Train: part at (0,0), (0,1), (1,0) → centres (.25,.25), (.75,.25), (.25,.75); kp 0 on the centre,
    # kp 1 fixed at (2, 18) px = (0.1, 0.9).
    for cell, kp0 in (((0, 0), (5, 5)), ((0, 1), (15, 5)), ((1, 0), (5, 15))):
        acc.add("train", _maps(cell), True, size, box, [kp0, (2, 18)], [1, 1], size)
    # Test A: part at (1, 1), centre (.75,.75); kp 0 at (15, 15), kp 1 at (2, 18).
    # Test B: part map 0.4 at (0, 0) → max 0.4: inactive; background 0.6 everywhere; kp 0 at (5, 5); kp 1 invisible.
    acc.add("test", _maps((1, 1)), True, size, box, [(15, 15), (2, 18)], [1, 1], size)
    acc.add("test", _maps((0, 0), 0.4), True, size, box, [(5, 5), (0, 0)], [1, 0], size)
    r = acc.result()
    # Regression. kp 0 = part centre on all fit rows (features independent) → identity map: A exact (0).
    # kp 1 constant → always (0.1, 0.9): A exact (0). B inactive → fit mean of kp 0 = (5/12, 5/12) vs (0.25, 0.25):
    # √2 · (5/12 − 3/12) = √2/6 = 0.2357023. Pooled 100 · 0.2357023 / 3 = 7.85674.
    assert r["keypoint_error"] == pytest.approx(7.85674, abs=1e-4)
    assert r["n_keypoints"] == 3 and r["n_images"] == {"train": 3, "test": 2}
    # NMI / ARI on the 2 maps (background = label 1), upsampled 2 → 20 (source (i + 0.5)/10 − 0.5):
    # A kp 0 at pixel (15, 15): source 1.05 → cell 1 on both axes → part 1, background 0 → label 0.
    # A kp 1 at pixel (col 2, row 18): column source −0.25 → cell 0 → part 0, background 1 → label 1.
    # B kp 0: part ≤ 0.4 < background 0.6 → label 1.
    # truth (0, 1, 0), labels (0, 1, 1). H(T) = H(L) = H(2/3, 1/3) = ln 3 − (2/3) ln 2 = 0.6365142;
    # H(L|T) = (2/3) ln 2 = 0.4620981 → MI = 0.1744161; NMI = 0.1744161/0.6365142 = 0.274016.
    # ARI: Σ C(n_ij, 2) = 0; rows C(2,2) + 0 = 1; cols 0 + C(2,2) = 1; C(3,2) = 3 → expected 1/3, max 1
    # → (0 − 1/3)/(1 − 1/3) = −0.5.
    assert r["nmi"] == pytest.approx(27.4016, abs=1e-3)
    assert r["ari"] == pytest.approx(-50.0)
    assert r["protocol"] == {"name": "huang2020/pdisconet", "maps": "softmax part maps (K=1) + background",
                             "background": True, "active_threshold": 0.5}


def test_accumulator_rejects_inconsistent_images():
    acc = P.ProtocolAccumulator("maps")
    acc.add("train", _maps((0, 0)), True, (20, 20), (0, 0, 20, 20), [(5, 5)], [1], (20, 20))
    with pytest.raises(DataError, match="background"):
        acc.add("train", _maps((0, 0)), False, (20, 20), (0, 0, 20, 20), [(5, 5)], [1], (20, 20))
    with pytest.raises(ConfigError, match="'val'"):
        acc.add("val", _maps((0, 0)), True, (20, 20), (0, 0, 20, 20), [(5, 5)], [1], (20, 20))


def test_random_helpers_and_baseline_are_seeded():
    c, a = P.random_centres(4, 3, 0)
    assert c.shape == (4, 3, 2) and a.all() and (0 <= c).all() and (c < 1).all()
    labels = P.random_labels(1000, 3, 0)
    assert set(labels.tolist()) == {0, 1, 2, 3}  # K + 1 = 4 labels: the parts and the background
    assert (P.random_labels(50, 3, 7) == P.random_labels(50, 3, 7)).all()
    acc = P.ProtocolAccumulator("maps")
    for split, cell in (("train", (0, 0)), ("train", (0, 1)), ("train", (1, 1)), ("test", (1, 0))):
        acc.add(split, _maps(cell), True, (20, 20), (0, 0, 20, 20), [(5, 5), (15, 15)], [1, 1], (20, 20))
    one, two = acc.random_baseline(seed=3), acc.random_baseline(seed=3)
    assert one["keypoint_error"] == two["keypoint_error"] and math.isfinite(one["keypoint_error"])
    assert one["protocol"]["maps"] == "random (seed 3)" and one["n_keypoints"] == 2


def test_empty_part_maps_give_nan_centres_that_are_imputed():
    # Part 1 had an all-zero map everywhere (NaN centre, never active): its coordinates standardise to 0 exactly as
    # when inactive, so the by-hand answer of test_regression_by_hand (100/3) is unchanged.
    fit, ev = FIT_CENTRES.copy(), EVAL_CENTRES.copy()
    fit[:, 1], ev[:, 1] = np.nan, np.nan
    assert _regress(fit_centres=fit, eval_centres=ev).error == pytest.approx(100 / 3)
