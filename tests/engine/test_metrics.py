"""Hand-built cases with known answers for engine.evaluation.metrics."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from engine.evaluation import metrics as M


def _kp(points, visible):
    """(N, P, 3) from (N, P, 2) points and (N, P) visibility."""
    pts = np.asarray(points, dtype=float)
    return np.concatenate([pts, np.asarray(visible, dtype=float)[..., None]], axis=-1)


# ---------------------------------------------------------------- part hit rate

def _hit_case():
    # Boxes 100 x 100: diagonal 141.42, radius at 0.1 = 14.142.
    bboxes = np.array([[0, 0, 100, 100], [100, 200, 100, 100], [0, 0, 100, 100]], float)
    keypoints = _kp([[[50, 50], [20, 20]],           # image 0: kp1 invisible
                     [[150, 250], [0, 0]],           # image 1: kp1 invisible
                     [[50, 50], [60, 60]]],          # image 2: nothing visible
                    [[1, 0], [1, 0], [0, 0]])
    peaks = np.array([[[60, 50], [70, 50], [20, 30]],     # d=10 hit; d=20 miss; d=10 from invisible only: miss
                      [[150, 260], [164, 250], [165, 250]],  # d=10 hit; d=14 hit; d=15 miss
                      [[50, 50], [60, 60], [0, 0]]], float)  # excluded: no visible keypoint
    return peaks, keypoints, bboxes


def test_hit_rate_by_hand():
    peaks, keypoints, bboxes = _hit_case()
    assert M.part_hit_rate(peaks, keypoints, bboxes) == pytest.approx(3 / 6)


def test_hit_rate_valid_mask_and_threshold():
    peaks, keypoints, bboxes = _hit_case()
    valid = np.ones((3, 3), bool)
    valid[0, 1] = False                                   # drop one miss
    assert M.part_hit_rate(peaks, keypoints, bboxes, valid=valid) == pytest.approx(3 / 5)
    # radius 28.28: image 0 (70,50) d=20 now hits, (20,30) d=36.06 from kp0 still misses; image 1 all hit.
    assert M.part_hit_rate(peaks, keypoints, bboxes, threshold=0.2) == pytest.approx(5 / 6)


def test_hit_rate_uses_diagonal_not_side():
    # Box 300 x 400: diagonal 500, radius 50 (a side-based radius would be 30 or 40).
    bboxes = np.array([[0, 0, 300, 400]], float)
    keypoints = _kp([[[100, 100]]], [[1]])
    peaks = np.array([[[149, 100], [151, 100], [100, 145], [np.nan, np.nan]]])
    assert M.part_hit_rate(peaks, keypoints, bboxes) == pytest.approx(2 / 4)   # NaN part is a miss


def test_hit_rate_nothing_to_score_is_nan(caplog):
    keypoints = _kp([[[1, 1]]], [[0]])
    with caplog.at_level(logging.WARNING, logger="engine.evaluation.metrics"):
        assert math.isnan(M.part_hit_rate(np.zeros((1, 2, 2)), keypoints, np.array([[0, 0, 10, 10.]])))
    assert "no part to score" in caplog.text


# ---------------------------------------------------------------- keypoint regression

def test_peaks_in_box_by_hand():
    peaks = np.array([[[5.0, 5.0], [20.0, 5.0]], [[0.0, 0.0], [np.nan, np.nan]]])
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0]])
    # image 0: (5, 5) inside, (20, 5) right of the box; image 1: (0, 0) on the corner counts as inside, and a part
    # with no peak is a miss unless left out by ``valid``
    assert M.peaks_in_box(peaks, boxes) == pytest.approx(2 / 4)
    assert M.peaks_in_box(peaks, boxes, valid=np.array([[True, True], [True, False]])) == pytest.approx(2 / 3)


def test_part_features_normalise_and_zero_below_threshold():
    bboxes = np.array([[10, 20, 100, 50]], float)
    centroids = np.array([[[60, 45], [35, 30], [110, 70]]], float)
    peak_values = np.array([[0.49, 0.5, 1.0]])
    feats = M.part_features(centroids, peak_values, bboxes)
    # part 0 below 0.5 -> (0, 0); part 1 (35-10)/100, (30-20)/50; part 2 (110-10)/100, (70-20)/50.
    np.testing.assert_allclose(feats, [[0.0, 0.0, 0.25, 0.2, 1.0, 1.0]])
    feats = M.part_features(centroids, peak_values, bboxes, peak_threshold=0.4)
    np.testing.assert_allclose(feats[0, :2], [0.5, 0.5])


def _to_pixels(norm, bboxes):
    return bboxes[:, None, :2] + norm * bboxes[:, None, 2:]


def test_regression_exact_linear_map_gives_zero_error():
    rng = np.random.default_rng(0)
    n_tr, n_te, k, p = 30, 7, 3, 4

    def boxes(n):
        return np.column_stack([rng.uniform(0, 50, (n, 2)), rng.uniform(50, 200, (n, 2))])

    bb_tr, bb_te = boxes(n_tr), boxes(n_te)
    c_tr, c_te = rng.uniform(0, 1, (n_tr, k, 2)), rng.uniform(0, 1, (n_te, k, 2))
    mean = c_tr.reshape(n_tr, -1).mean(0)
    std = c_tr.reshape(n_tr, -1).std(0)
    w = rng.normal(size=(p, 2 * k, 2))

    def target(c):                                # normalised keypoints = standardised features @ w[p]
        return np.einsum("nf,pfd->npd", (c.reshape(len(c), -1) - mean) / std, w)

    vis_tr = np.ones((n_tr, p))
    vis_tr[::3, 1] = 0
    vis_te = np.ones((n_te, p))
    vis_te[0, 2] = 0
    kp_tr = _kp(_to_pixels(target(c_tr), bb_tr), vis_tr)
    kp_te = _kp(_to_pixels(target(c_te), bb_te), vis_te)
    kp_tr[vis_tr == 0, :2] = 1e6                  # garbage at invisible keypoints must not matter
    kp_te[vis_te == 0, :2] = -1e6
    err = M.keypoint_regression_error(_to_pixels(c_tr, bb_tr), np.ones((n_tr, k)), kp_tr, bb_tr,
                                      _to_pixels(c_te, bb_te), np.ones((n_te, k)), kp_te, bb_te)
    assert err == pytest.approx(0.0, abs=1e-8)


def _one_feature_case():
    # K=1; the y centroid is 0.5 (normalised) everywhere, so its std is 0: the guard keeps std=1 and its
    # standardised value is 0. Only the x centroid is a real feature.
    # Train normalised x centroids 0.1, 0.3 -> mean 0.2, population std 0.1 -> z = -1, +1.
    # Keypoint targets (normalised): (0.3, 0.5), (0.5, 0.5).
    # Least squares with intercept on (1, z): x: intercept 0.4, slope 0.1; y: intercept 0.5, slope 0 (the zero
    # column gets 0 in the minimum-norm solution).
    # Test normalised x centroid 0.4 -> z = (0.4 - 0.2) / 0.1 = 2 -> prediction (0.6, 0.5).
    # Test keypoint (0.5, 0.4): error = sqrt(0.1^2 + 0.1^2) = 0.14142 -> x 100 = 14.142.
    bb_tr = np.array([[0, 0, 100, 100], [50, 20, 200, 50]], float)
    c_tr = np.array([[[10, 50]], [[110, 45]]], float)          # normalised (0.1, 0.5), (0.3, 0.5)
    kp_tr = _kp([[[30, 50]], [[150, 45]]], [[1], [1]])          # normalised (0.3, 0.5), (0.5, 0.5)
    bb_te = np.array([[10, 10, 50, 50]], float)
    c_te = np.array([[[30, 35]]], float)                         # normalised (0.4, 0.5)
    kp_te = _kp([[[35, 30]]], [[1]])                             # normalised (0.5, 0.4)
    return c_tr, kp_tr, bb_tr, c_te, kp_te, bb_te


def test_regression_by_hand_one_feature():
    c_tr, kp_tr, bb_tr, c_te, kp_te, bb_te = _one_feature_case()
    err = M.keypoint_regression_error(c_tr, np.ones((2, 1)), kp_tr, bb_tr, c_te, np.ones((1, 1)), kp_te, bb_te)
    assert err == pytest.approx(100 * math.hypot(0.1, 0.1), abs=1e-9)


def test_regression_error_is_pooled_over_visible_test_keypoints():
    c_tr, kp_tr, bb_tr, c_te, kp_te, bb_te = _one_feature_case()
    kp_tr = np.concatenate([kp_tr, kp_tr], axis=1)              # keypoint 1 has the same targets: same fit
    # Test image A: as before, kp0 error e1 = hypot(0.1, 0.1), kp1 invisible. Test image B (box 0,0,100,100):
    # centroid x 0.2 -> z = 0 -> prediction (0.4, 0.5); kp0 at (0, 0): error e2 = hypot(0.4, 0.5); kp1 at
    # (0.3, 0.4): error e1. Pooled mean over the 3 visible test keypoints: (2 e1 + e2) / 3 x 100 = 30.77 (a mean
    # of per-keypoint means would give ((e1 + e2) / 2 + e1) / 2 x 100 = 26.61).
    c_te = np.concatenate([c_te, [[[20, 50]]]])
    bb_te = np.concatenate([bb_te, [[0, 0, 100, 100]]])
    kp_te = _kp([[[35, 30], [0, 0]], [[0, 0], [30, 40]]], [[1, 0], [1, 1]])
    err = M.keypoint_regression_error(c_tr, np.ones((2, 1)), kp_tr, bb_tr, c_te, np.ones((2, 1)), kp_te, bb_te)
    e1, e2 = math.hypot(0.1, 0.1), math.hypot(0.4, 0.5)
    assert err == pytest.approx(100 * (2 * e1 + e2) / 3, abs=1e-9)


def test_regression_peak_threshold_zeroes_parts():
    c_tr, kp_tr, bb_tr, c_te, kp_te, bb_te = _one_feature_case()
    # Add a second part whose peak is always below 0.5: its wild centroids become (0, 0), a constant column,
    # so the answer stays 14.142 whatever they are.
    wild_tr = np.concatenate([c_tr, [[[999, -5]], [[-300, 7]]]], axis=1)
    wild_te = np.concatenate([c_te, [[[123, 456]]]], axis=1)
    pv_tr, pv_te = np.array([[1, 0.3], [1, 0.49]]), np.array([[1, 0.1]])
    err = M.keypoint_regression_error(wild_tr, pv_tr, kp_tr, bb_tr, wild_te, pv_te, kp_te, bb_te)
    assert err == pytest.approx(100 * math.hypot(0.1, 0.1), abs=1e-9)
    # With the real part's test peak below 0.5 its x feature is 0 -> z = (0 - 0.2) / 0.1 = -2 -> prediction
    # (0.4 - 0.2, 0.5) = (0.2, 0.5); target (0.5, 0.4): error sqrt(0.3^2 + 0.1^2) x 100 = 31.62.
    err = M.keypoint_regression_error(wild_tr, pv_tr, kp_tr, bb_tr, wild_te, np.array([[0.4, 0.1]]), kp_te, bb_te)
    assert err == pytest.approx(100 * math.hypot(0.3, 0.1), abs=1e-9)


def test_regression_nothing_to_fit_is_nan(caplog):
    c_tr, kp_tr, bb_tr, c_te, kp_te, bb_te = _one_feature_case()
    kp_tr[:, :, 2] = 0
    with caplog.at_level(logging.WARNING, logger="engine.evaluation.metrics"):
        err = M.keypoint_regression_error(c_tr, np.ones((2, 1)), kp_tr, bb_tr, c_te, np.ones((1, 1)), kp_te, bb_te)
    assert math.isnan(err)
    assert "never visible in training" in caplog.text and "error is NaN" in caplog.text


# ---------------------------------------------------------------- NMI / ARI

def test_nmi_ari_perfect_and_constant():
    n, p = 4, 15
    keypoints = _kp(np.zeros((n, p, 2)), np.ones((n, p)))
    perfect = np.tile((np.arange(p) * 7 + 3)[None], (n, 1))          # any one-to-one relabelling
    assert M.nmi_ari(perfect, keypoints) == pytest.approx((100.0, 100.0))
    nmi, ari = M.nmi_ari(np.zeros((n, p), int), keypoints)
    assert nmi == pytest.approx(0.0, abs=1e-12) and ari == pytest.approx(0.0, abs=1e-12)


def test_nmi_ari_small_case_by_formula():
    # Visible pairs (keypoint id, label): (0,0) x2, (0,1), (1,1), (1,2) x2; image 3 is invisible and ignored.
    labels = np.array([[0, 1], [0, 2], [1, 2], [5, 5]])
    keypoints = _kp(np.zeros((4, 2, 2)), [[1, 1], [1, 1], [1, 1], [0, 0]])
    # MI = 2 * (1/3) ln((1/3) / (1/2 * 1/3)) + 2 * (1/6) ln((1/6) / (1/2 * 1/3)) = (2/3) ln 2.
    # H(true) = ln 2, H(labels) = ln 3; arithmetic NMI = MI / ((ln 2 + ln 3) / 2) = (4/3) ln 2 / ln 6.
    nmi_expected = 100 * (4 / 3) * math.log(2) / math.log(6)
    # ARI: sum C(n_ij, 2) = 1 + 1 = 2; rows (3, 3) -> 6; columns (2, 2, 2) -> 3; C(6, 2) = 15.
    # expected = 6 * 3 / 15 = 1.2; max = (6 + 3) / 2 = 4.5; ARI = (2 - 1.2) / (4.5 - 1.2) = 8 / 33.
    ari_expected = 100 * 8 / 33
    nmi, ari = M.nmi_ari(labels, keypoints)
    assert nmi == pytest.approx(nmi_expected, abs=1e-9)
    assert ari == pytest.approx(ari_expected, abs=1e-9)


def test_nmi_ari_no_visible_is_nan():
    nmi, ari = M.nmi_ari(np.zeros((1, 2), int), _kp(np.zeros((1, 2, 2)), [[0, 0]]))
    assert math.isnan(nmi) and math.isnan(ari)


def test_labels_at_keypoints_rounds_and_clips():
    lab = np.arange(4 * 5).reshape(4, 5)           # H=4, W=5: value = 5 * row + col
    keypoints = _kp([[[1.4, 2.6], [-3, 1], [9.0, 9.0], [2, 2]]], [[1, 1, 1, 0]])
    out = M.labels_at_keypoints([lab], keypoints)
    # (1.4, 2.6) -> col 1, row 3 -> 16; (-3, 1) -> col 0, row 1 -> 5; (9, 9) -> col 4, row 3 -> 19; invisible -1.
    np.testing.assert_array_equal(out, [[16, 5, 19, -1]])
    np.testing.assert_array_equal(M.labels_at_keypoints(lab[None], keypoints), out)


# ---------------------------------------------------------------- mark recall

def test_mark_recall_two_classes():
    # Class 0's mark: beak (1), hit in 2 of 3 judged images -> recalled. Class 1's mark: crown (4), hit in 1 of 3
    # -> not recalled. Recall = 1 / 2. Boxes 100 x 100: radius 14.14.
    p = 15
    pts = np.zeros((8, p, 2))
    vis = np.zeros((8, p))
    pts[:, 1] = [50, 50]
    pts[:, 4] = [20, 20]
    vis[:, [1, 4]] = 1
    vis[3, 1] = 0                                    # class 0 image whose beak is hidden: not judged
    classes = [0, 0, 0, 0, 1, 1, 1, 1]
    far = [90, 90]
    peaks = [np.array([[55, 50], far]), np.array([far, [50, 60]]), np.array([far]), np.array([[50, 50]]),
             np.array([[20, 25]]), np.array([far, far]), np.array([far]),
             np.array([[50, 50]])]                   # class 1 on class 0's beak: does not count for class 1
    keypoints = _kp(pts, vis)
    bboxes = np.tile([0, 0, 100, 100.0], (8, 1))
    marks = {0: [1], 1: [4]}
    table = M.mark_recall_table(peaks, classes, marks, keypoints, bboxes)
    assert [(r.class_index, r.mark, r.part_name, r.images, r.hits, r.recalled) for r in table] == [
        (0, 1, "beak", 3, 2, True), (1, 4, "crown", 4, 1, False)]
    assert table[0].fraction == pytest.approx(2 / 3) and table[1].fraction == pytest.approx(1 / 4)
    # Make class 1 have exactly 3 judged images (1/3 as in the brief) by hiding image 7's crown.
    vis[7, 4] = 0
    keypoints = _kp(pts, vis)
    assert M.mark_recall_table(peaks, classes, marks, keypoints, bboxes)[1].fraction == pytest.approx(1 / 3)
    assert M.mark_recall(peaks, classes, marks, keypoints, bboxes) == pytest.approx(0.5)
    assert M.mark_recall(peaks, classes, marks, keypoints, bboxes, min_fraction=0.3) == pytest.approx(1.0)
    assert M.mark_recall(peaks, classes, marks, keypoints, bboxes, min_fraction=0.7) == pytest.approx(0.0)
    # A mark never visible for its class is left out, not counted as a miss.
    table = M.mark_recall_table(peaks, classes, {0: [1, 13], 1: [4]}, keypoints, bboxes)
    assert table[1].images == 0 and math.isnan(table[1].fraction) and not table[1].recalled
    assert M.mark_recall(peaks, classes, {0: [1, 13], 1: [4]}, keypoints, bboxes) == pytest.approx(0.5)


# ---------------------------------------------------------------- baselines and trivia

def test_random_peaks_inside_boxes_and_seeded():
    bboxes = np.array([[0, 0, 10, 20], [100, 50, 5, 5], [-20, 3, 40, 1]], float)
    a = M.random_peaks(bboxes, 6, np.random.default_rng(3))
    assert a.shape == (3, 6, 2)
    assert (a[..., 0] >= bboxes[:, None, 0]).all() and (a[..., 0] < (bboxes[:, 0] + bboxes[:, 2])[:, None]).all()
    assert (a[..., 1] >= bboxes[:, None, 1]).all() and (a[..., 1] < (bboxes[:, 1] + bboxes[:, 3])[:, None]).all()
    np.testing.assert_array_equal(a, M.random_peaks(bboxes, 6, np.random.default_rng(3)))
    np.testing.assert_array_equal(a, M.random_peaks(bboxes, 6, 3))
    assert not np.array_equal(a, M.random_peaks(bboxes, 6, 4))
    # Spread over the box, not clumped: over many draws the mean sits at the box centre.
    many = M.random_peaks(np.array([[0, 0, 10, 20.0]]), 20000, 0)
    np.testing.assert_allclose(many[0].mean(0), [5, 10], atol=0.15)


def test_regions_per_class():
    assert M.regions_per_class([1, 2, 2, 3]) == pytest.approx(2.0)
    assert math.isnan(M.regions_per_class([]))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="bboxes"):
        M.part_hit_rate(np.zeros((2, 1, 2)), np.zeros((2, 1, 3)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="w > 0"):
        M.part_hit_rate(np.zeros((1, 1, 2)), np.zeros((1, 1, 3)), np.array([[0, 0, 0, 5.0]]))
