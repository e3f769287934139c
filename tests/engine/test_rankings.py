"""The rankings of separating parts (engine.fieldmarks.separation.RANKINGS), checked by hand on tiny scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.fieldmarks.separation import PartScores, part_scale, rank_parts, separation_values
from engine.models.shared_parts import SharedPartsNet


def three_species() -> PartScores:
    """3 species x 2 photos, K = 2 parts. Part 0 is large for every species' own class; part 1 only tells
    species 0 from species 1."""
    labels = np.array([0, 0, 1, 1, 2, 2])
    s = np.zeros((6, 2, 3), np.float32)
    for i, c in enumerate(labels):
        s[i, 0, c] = 10.0 + (i % 2)  # 10 or 11 on the own class
    s[0, 1, 0], s[1, 1, 0] = 2.0, 3.0  # part 1 says "0" on species 0's photos
    s[2, 1, 1], s[3, 1, 1] = 2.0, 3.0  # and "1" on species 1's photos
    return PartScores(["a", "b", "c"], labels, labels.copy(), [""] * 6, s, np.zeros((6, 2, 4)), np.ones((6, 2), bool),
                      np.zeros((6, 2, 2)), np.full((6, 3), 1 / 3), vectors=np.zeros((6, 2, 4), np.float32))


def test_dprime_by_hand():
    sc = three_species()
    # species 0 vs 1, part 0: margins s[0] - s[1] on 0-photos (10, 11), on 1-photos (-10, -11): means 10.5 and
    # -10.5, variances 0.5 each, pooled sd sqrt(0.5): d' = 21 / sqrt(0.5)
    d = separation_values(sc, 0, 1, "dprime")
    assert d[0] == pytest.approx(21 / np.sqrt(0.5))
    assert d[1] == pytest.approx(5 / np.sqrt(0.5))  # (2, 3) against (-2, -3)


def test_normalised_divides_by_the_parts_usual_separation():
    sc = three_species()
    rms = part_scale(sc)
    # part 0 separates every pair by 21 / sqrt(.5). Part 1 separates (0, 1) by 5 / sqrt(.5) = sqrt(50); (0, 2):
    # margins (2, 3) against (0, 0), pooled sd sqrt((0.5 + 0) / 2) = 0.5, so 2.5 / 0.5 = 5; (1, 2) the same.
    # RMS over the 3 pairs: sqrt((50 + 25 + 25) / 3)
    assert rms[0] == pytest.approx(21 / np.sqrt(0.5))
    assert rms[1] == pytest.approx(np.sqrt(100 / 3))
    d = separation_values(sc, 0, 1, "normalised")
    assert d[0] == pytest.approx(1.0)
    assert d[1] == pytest.approx(np.sqrt(50) / np.sqrt(100 / 3))
    # part 0 comes first by d', part 1 (the one specific to this pair) when normalised
    assert [s.part for s in rank_parts(sc, 0, 1, ranking="dprime")] == [0, 1]
    assert [s.part for s in rank_parts(sc, 0, 1, ranking="normalised")] == [1, 0]


def test_probe_ranks_the_part_whose_vector_tells_the_pair_apart():
    sc = three_species()
    rng = np.random.default_rng(0)
    v = rng.normal(size=(6, 2, 4)).astype(np.float32) * 0.1
    v[[0, 1], 1, 0] += 3.0  # part 1's first feature is high on species 0's photos only
    sc.vectors = v
    assert rank_parts(sc, 0, 1, ranking="probe")[0].part == 1


def test_unknown_ranking_is_refused_by_name():
    with pytest.raises(Exception, match="ranking='best'"):
        separation_values(three_species(), 0, 1, "best")


def test_dropping_a_part_moves_the_pair_margin_by_its_margin_over_k():
    """Why an ablation ranking is not a separate option: the image logits are the mean of the K parts' scores, so
    zeroing part k's vector (what part dropout does) moves logit_a - logit_b by exactly (s_k[a] - s_k[b]) / K."""
    torch.manual_seed(0)
    model = SharedPartsNet.__new__(SharedPartsNet)
    torch.nn.Module.__init__(model)
    model.parts, model.part_dropout = 4, 0.0
    model.modulation = torch.nn.Parameter(torch.rand(6, 5) + 0.5)
    model.fc = torch.nn.Linear(6, 3, bias=False)
    model.eval()
    v = torch.randn(2, 5, 6)
    s = model.score_parts(v)  # (2, K, 3)
    full = s.mean(1)
    for k in range(4):
        dropped = v.clone()
        dropped[:, k] = 0
        part = model.score_parts(dropped).mean(1)
        change = (full[:, 0] - full[:, 1]) - (part[:, 0] - part[:, 1])
        assert torch.allclose(change, (s[:, k, 0] - s[:, k, 1]) / 4, atol=1e-6)


def test_the_probe_needs_the_part_vectors_and_says_so():
    sc = three_species()
    sc.vectors = None
    with pytest.raises(Exception, match="part vectors"):
        separation_values(sc, 0, 1, "probe")
