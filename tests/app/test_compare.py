"""The Compare workspace on a tiny toy-birds run: the confusion over the test split suggests pairs, and each
class gets one row of its strongest crops per part channel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine.data import scan
from engine.data.transforms import Preprocessing
from engine.maps.explain import explain, predict_probs
from engine.data.imageio import read_image
from engine.maps.parts import find_parts
from engine.runs import load_run

from app.compare.compute import rank_pairs, labelled_test_samples
from toyrun import open_toy

pytestmark = pytest.mark.timeout(240)

SLOW = 60_000


def test_rank_pairs_orders_by_errors_then_probability():
    m = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 4]])
    p = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.05, 0.4, 0.55]])
    pairs = rank_pairs(m, p)
    assert [(q.a, q.b, q.errors) for q in pairs] == [(0, 1, 3), (1, 2, 0), (0, 2, 0)]
    assert pairs[1].soft == pytest.approx(0.5)


def test_confusable_pairs_and_part_rows(window, qtbot, toy):
    open_toy(window, qtbot, toy)
    page = window.workspaces.compare
    assert page.confusion is None  # nothing is computed before the page is shown
    window.set_workspace("Compare")
    qtbot.waitUntil(lambda: page.confusion is not None, timeout=SLOW)
    # the same matrix as the engine's predictions give
    run = load_run(toy.run)
    report = scan(str(toy.data))
    pp = Preprocessing.from_dict(run.preprocessing)
    samples = labelled_test_samples(report)
    images = [read_image(s.path) for s in samples]
    pred = predict_probs(run.model, images, pp).argmax(1)
    expected = np.zeros((4, 4), int)
    for s, p in zip(samples, pred):
        expected[s.label, p] += 1
    np.testing.assert_array_equal(page.confusion.matrix, expected)
    assert page.pairs.count() == 6  # every pair of 4 classes, most confused first
    errors = [page.pairs.item(i).data(Qt.ItemDataRole.UserRole).errors for i in range(6)]
    assert errors == sorted(errors, reverse=True)
    top = page.confusion.pairs[0]
    assert (page.pair.a, page.pair.b) == (top.a, top.b)  # the most confused pair is picked

    pick = page.pairs.item(3).data(Qt.ItemDataRole.UserRole)
    rect = page.pairs.visualItemRect(page.pairs.item(3))
    with qtbot.waitSignal(page.compare_changed, timeout=SLOW,
                          check_params_cb=lambda s: s.ready and (s.a, s.b) == (pick.a, pick.b)):
        qtbot.mouseClick(page.pairs.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert (page.a_box.currentIndex(), page.b_box.currentIndex()) == (pick.a, pick.b)
    n = page.top_n.value()
    for col, cls in zip(page.columns, (pick.a, pick.b)):
        assert run.classes[cls] in col.title.text()
        assert len(col.crop_labels) == 3  # one row per ξ channel
        own = [s for s in samples if s.label == cls]
        assert all(len(row) == min(n, len(own)) for row in col.crop_labels)
    # the first row of class a: its top scores over the class's test images, best first
    parts = page.state.parts[(str(toy.run), pick.a, n)]
    sets = explain(run.model, [read_image(s.path) for s in samples if s.label == pick.a], "channels", pick.a, pp)
    scores = sorted((find_parts(ms)[0].score for ms, *_ in sets), reverse=True)[:n]
    assert [c.score for c in parts.rows[0].crops] == pytest.approx(scores, rel=1e-5)
    assert parts.rows[0].crops[0].image.shape == (96, 96, 3)

    # a pair picked with the combo boxes; fewer crops per row comes from the cache-free path too
    with qtbot.waitSignal(page.compare_changed, timeout=SLOW, check_params_cb=lambda s: s.ready):
        page.top_n.setValue(2)
    assert all(len(row) == 2 for row in page.columns[0].crop_labels)
    page.a_box.setCurrentIndex(pick.b)
    page.b_box.setCurrentIndex(pick.a)
    with qtbot.waitSignal(page.compare_changed, timeout=SLOW, check_params_cb=lambda s: s.ready):
        page.a_box.activated.emit(pick.b)
    assert (page.pair.a, page.pair.b) == (pick.b, pick.a)


def test_compare_explains_what_it_needs(window, qtbot):
    page = window.workspaces.compare
    window.set_workspace("Compare")
    assert "Open a run" in page.status.text()
    assert not page.a_box.isEnabled()


def test_compare_uses_the_runs_saved_split(window, qtbot, toy, tmp_path):
    """The confusion counts the run's own test photos (split.json), not the folder's split; a test photo moved to
    train in the saved split is left out, a deleted one is named in the status."""
    import json
    import shutil

    from toyrun import ToyRun

    data, run = tmp_path / "birds", tmp_path / "run"
    shutil.copytree(toy.data, data)
    shutil.copytree(toy.run, run)
    doc = json.loads((run / "split.json").read_text())
    test = sorted(doc["test"])
    doc["train"][test[0]] = doc["test"].pop(test[0])  # the run trained on this one: it is no test photo
    (run / "split.json").write_text(json.dumps(doc))
    (data / test[1]).unlink()
    open_toy(window, qtbot, ToyRun(data, run))
    page = window.workspaces.compare
    window.set_workspace("Compare")
    qtbot.waitUntil(lambda: page.confusion is not None, timeout=SLOW)
    assert page.confusion.images == len(test) - 2
    loaded = load_run(run)
    keep = [s for s in labelled_test_samples(scan(str(data)))
            if Path(s.path).relative_to(data).as_posix() not in test[:2]]
    pred = predict_probs(loaded.model, [read_image(s.path) for s in keep],
                         Preprocessing.from_dict(loaded.preprocessing)).argmax(1)
    expected = np.zeros((4, 4), int)
    for s, p in zip(keep, pred):
        expected[s.label, p] += 1
    np.testing.assert_array_equal(page.confusion.matrix, expected)
    assert test[1] in page.confusion_status.text() and "missing" in page.confusion_status.text()
