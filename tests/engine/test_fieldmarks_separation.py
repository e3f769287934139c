"""The parts that separate two species (issue 13, item 3): d' worked out by hand on a tiny example; confused pairs
and nearest species from the confusion counts; the name proposals' vote by hand; and on toy birds, whose pairs
differ in one known mark, the top-ranked part of each pair is the part that sits on that mark."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from engine.errors import ConfigError, DataError
from engine.events import Progress, drive
from engine.fieldmarks import (PartScores, collect_part_scores, confused_pairs, nearest_species, propose_names,
                               rank_parts)
from engine.fieldmarks.names import proposals_from
from engine.toybirds.dataset import load_truth

from tests.app.toyrun import mark_part, toy_parts_run


def hand_scores() -> PartScores:
    """4 images, 2 parts, 3 classes. Images 0, 1 are class 0; images 2, 3 class 1.

    Part 0 scores (class 0, class 1): image 0 (3, 1), image 1 (5, 1), image 2 (1, 2), image 3 (1, 4).
    Margins m = s[0] − s[1]: a-images 2, 4 (mean 3, variance (ddof 1) 2); b-images −1, −3 (mean −2, variance 2).
    Pooled sd = sqrt((1·2 + 1·2) / 2) = sqrt(2); d' = (3 − (−2)) / sqrt(2) = 5 / sqrt(2) ≈ 3.536.
    Part 1: margins a: 1, 1 (mean 1, variance 0); b: 0, 2 (mean 1, variance 2); pooled sd = 1; d' = 0.
    """
    scores = np.zeros((4, 2, 3), np.float32)
    scores[:, 0, :2] = [[3, 1], [5, 1], [1, 2], [1, 4]]
    scores[:, 1, :2] = [[2, 1], [2, 1], [1, 1], [3, 1]]
    probs = np.array([[.7, .2, .1], [.3, .6, .1], [.2, .7, .1], [.1, .8, .1]])
    present = np.array([[True, True], [True, False], [True, True], [False, True]])
    return PartScores(["a", "b", "c"], np.array([0, 0, 1, 1]), probs.argmax(1), [f"{i}.jpg" for i in range(4)],
                      scores, np.zeros((4, 2, 4)), present, np.zeros((4, 2, 2)), probs)


def test_separation_is_cohens_d_of_the_margin_worked_by_hand():
    ranked = rank_parts(hand_scores(), 0, 1, crops=2)
    assert [r.part for r in ranked] == [0, 1]
    assert ranked[0].separation == pytest.approx(5 / math.sqrt(2))
    assert (ranked[0].mean_a, ranked[0].mean_b) == (pytest.approx(3.0), pytest.approx(-2.0))
    assert ranked[1].separation == pytest.approx(0.0)
    # strongest crops: a-images with the largest margin (image 1: 4 > image 0: 2), b-images with the smallest
    # (image 3: −3 < image 2: −1), but images where the part is active come first (part 0 is absent on image 3)
    assert ranked[0].examples_a == [1, 0]
    assert ranked[0].examples_b == [2, 3]
    # swapping the species flips both the margin and the groups: the same d', the crops swap sides
    swapped = rank_parts(hand_scores(), 1, 0, crops=2)[0]
    assert swapped.separation == pytest.approx(5 / math.sqrt(2))
    assert (swapped.examples_a, swapped.examples_b) == ([2, 3], [1, 0])


def test_bad_pairs_are_refused():
    with pytest.raises(ConfigError, match="same species"):
        rank_parts(hand_scores(), 1, 1)
    with pytest.raises(ConfigError, match="b=5"):
        rank_parts(hand_scores(), 0, 5)
    with pytest.raises(DataError, match="'c' has no image"):
        rank_parts(hand_scores(), 0, 2)


def test_confusions_and_nearest_species():
    s = hand_scores()  # predictions: 0, 1, 1, 1: one a-image taken for b
    assert confused_pairs(s) == [(0, 1, 1)]
    # b: one error; c has no images, so its similarity to a is the mean probability a-images give c (0.1)
    assert nearest_species(s, 0, 2) == [(1, 1, pytest.approx((0.2 + 0.6) / 2 + (0.2 + 0.1) / 2)),
                                        (2, 0, pytest.approx(0.1))]


def test_name_proposals_vote_by_hand():
    """Two keypoints: "crown" at (10, 10) and "tail" at (50, 50); "tail" hidden on image 3.

    Part 0 centres: (12, 11), (14, 9), (45, 52), (11, 10); active on all: nearest crown, crown, tail, crown
    → crown, 3 of 4. Part 1: centres (49, 49) everywhere but active only on images 0 and 3: image 0 → tail; image 3
    → the only visible keypoint, crown → a tie 1 : 1, broken by keypoint order (crown first) → crown, 1 of 2.
    """
    s = hand_scores()
    s.keypoints = np.array([[[10, 10, 1], [50, 50, 1]]] * 3 + [[[10, 10, 1], [50, 50, 0]]], float)
    s.keypoint_names = ["crown", "tail"]
    s.centres = np.array([[[12, 11], [49, 49]], [[14, 9], [49, 49]], [[45, 52], [49, 49]], [[11, 10], [49, 49]]],
                         float)
    s.present = np.array([[True, True], [True, False], [True, False], [True, True]])
    got = proposals_from(s)
    assert [(p.part, p.keypoint, p.count, p.images) for p in got] == [(0, "crown", 3, 4), (1, "crown", 1, 2)]
    assert got[0].share == pytest.approx(0.75)


# ----------------------------------------------------------------------------------------- on toy birds
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    t = toy_parts_run(tmp_path_factory.getbasetemp())
    events = []
    scores = drive(collect_part_scores(t.run, t.data), events.append)
    assert isinstance(events[-1], Progress) and events[-1].done == events[-1].total == len(scores.labels)
    assert scores.vectors is None  # kept only when asked for (the probe ranking): (N, K, D) is large
    return t, scores, load_truth(t.data)


def test_the_top_separating_part_is_the_differing_marks_part(toy):
    _, scores, truth = toy
    assert len(truth.pairs) == 4
    found = []
    for a, b, mark in truth.pairs:
        ranked = rank_parts(scores, a, b)
        want, medians = mark_part(scores, truth, a, b, mark)
        found.append((mark, ranked[0].part, want, round(ranked[0].separation, 2), [round(m, 1) for m in medians]))
        assert ranked[0].separation > 0
    assert sum(top == want for _, top, want, _, _ in found) >= 3, found


def test_names_are_proposed_from_the_keypoints_and_a_plain_folder_is_refused(toy, tmp_path):
    t, scores, truth = toy
    proposals = drive(propose_names(t.run, t.data))
    assert len(proposals) == scores.parts
    # the tail pair's top part sits on the tail: it is proposed as "tail"
    a, b, mark = next(p for p in truth.pairs if p[2] == "tail_tip")
    top = rank_parts(scores, a, b)[0].part
    assert proposals[top].keypoint == "tail" and proposals[top].share > 0.5, proposals


def test_a_run_without_shared_parts_is_refused(tmp_path_factory):
    from tests.app.toyrun import toy_run

    t = toy_run(tmp_path_factory.getbasetemp())
    with pytest.raises(ConfigError, match="separating parts need a `parts` run"):
        drive(collect_part_scores(t.run, t.data))
    with pytest.raises(ConfigError, match="name proposals need a `parts` run"):
        drive(propose_names(t.run, t.data))


def test_the_pass_stops_when_closed(toy):
    t, scores, _ = toy
    job = collect_part_scores(t.run, t.data, batch_size=4)
    seen: list[Progress] = []
    while len(seen) < 3:
        event = next(job)
        if isinstance(event, Progress):
            seen.append(event)
    job.close()  # the consumer's cancel: no more batches are read
    assert inspect.getgeneratorstate(job) == inspect.GEN_CLOSED
    assert [e.done for e in seen] == [0, 4, 8] and seen[-1].total == len(scores.labels)
