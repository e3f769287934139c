"""Explore on the attention family's tiny runs (issue #25): a run trained with ``--attention cbam`` or ``residual``
offers its blocks' spatial maps (the ``attention`` method) and draws them with each gate's range, a run without
blocks does not offer them, a ``--gain`` run shows its Grad-CAM, and the window never stalls while any of these maps
is computed."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest

from engine.data.imageio import read_image
from engine.data.transforms import Preprocessing
from engine.maps.explain import explain
from engine.runs import load_run, read_meta

from app.common.text import map_method_label
from app.explore.state import gate_text
from toyrun import ToyRun, select_row, toy_small_run

pytestmark = pytest.mark.timeout(600)

SLOW = 120_000
BLOCKS = {"cbam": "CBAM", "residual": "residual attention"}  # how each kind's maps are named


def small(tmp_path_factory, name: str) -> ToyRun:
    """The tiny run ``name``: ``cbam`` and ``residual`` with those blocks, ``gain`` trained with GAIN."""
    options = {"gain": True} if name == "gain" else {"attention": name}
    return toy_small_run(tmp_path_factory.getbasetemp(), name, **options)


def explore_run(window, qtbot, toy: ToyRun):
    """Make ``toy`` the active run (its data opened first when the library shows none) and wait for Explore."""
    if window.library.root != os.path.abspath(toy.data):
        with qtbot.waitSignal(window.library.data_changed, timeout=30000):
            window.open_folder(str(toy.data))
    window.open_run(str(toy.run), open_data=False)
    page = window.workspaces.explore
    window.set_workspace("Explore")
    run = os.path.abspath(toy.run)
    qtbot.waitUntil(lambda: page.info is not None and page.info.run.path == run, timeout=SLOW)
    return page


def methods_of(page) -> list[str]:
    return [page.method_box.itemData(i) for i in range(page.method_box.count())]


def show(qtbot, page, method: str, path: str) -> None:
    """Pick ``method`` and wait for its maps of ``path`` under the active run."""
    page.method_box.setCurrentIndex(page.method_box.findData(method))
    run = page.info.run.path
    qtbot.waitUntil(lambda: page.result is not None and (page.result.run, page.result.path, page.result.method)
                    == (run, path, method), timeout=SLOW)


@pytest.mark.parametrize("kind", ["cbam", "residual"])
def test_attention_runs_offer_and_draw_their_blocks_maps(window, qtbot, tmp_path_factory, kind):
    toy = small(tmp_path_factory, kind)
    assert read_meta(toy.run)["config"]["attention"] == kind
    page = explore_run(window, qtbot, toy)
    assert "attention" in methods_of(page) and page.method_box.currentData() == "channels"
    label = map_method_label("attention")
    assert page.method_box.itemText(page.method_box.findData("attention")) == label
    path = select_row(window, 3)
    show(qtbot, page, "attention", path)
    r = page.result
    assert r.names == [f"{BLOCKS[kind]}, next-to-last stage", f"{BLOCKS[kind]}, last stage"]
    assert page.strip.count() == 2 and page.strip.item(1).text() == r.names[1]
    run = load_run(toy.run)  # the engine's own maps, scaled and in the model's units
    ms = explain(run.model, [read_image(path)], "attention", r.class_index,
                 Preprocessing.from_dict(run.preprocessing))[0][0]
    np.testing.assert_allclose(r.maps, ms.maps, atol=1e-5)
    np.testing.assert_allclose(r.ranges, ms.raw_ranges, rtol=1e-6)
    assert all(0 < lo < hi < 2 for lo, hi in r.ranges)
    for k in (1, 0):  # each block's map is drawn on the photo with its part, its gate's range in the caption
        page.strip.setCurrentRow(k)
        assert page.map_index == k
        np.testing.assert_array_equal(page.image_view.shown_map, r.maps[k])
        assert page.image_view.overlay.image.shape == r.maps[k].shape and np.ptp(r.maps[k]) > 0.5  # not blank
        assert page.image_view.box.isVisible() and page.image_view.shown_part == r.parts[k]
        caption = page.crop_caption.text()
        assert caption.startswith(r.names[k]) and gate_text(*ms.raw_ranges[k]) in caption and "score" not in caption
    blank = replace(r, maps=np.zeros_like(r.maps), thumbs=np.zeros_like(r.thumbs), ranges=[(1.0, 1.0)] * 2)
    page._show(blank)  # blocks still at their start (gate 1 everywhere): a blank map, said so, with no peak or box
    assert page.image_view.shown_map is None and not page.image_view.box.isVisible()
    assert page.crop_caption.text() == f"{r.names[0]} · gate 1.000 everywhere: the block weighs every position " \
                                       "alike (a blank map)"
    other = (r.class_index + 1) % len(page.info.run.classes)  # class-agnostic: another class, the same maps
    page.class_box.setCurrentIndex(other)
    page.class_box.activated.emit(other)
    qtbot.waitUntil(lambda: page.result.class_index == other, timeout=SLOW)
    np.testing.assert_array_equal(page.result.maps, r.maps)
    window.resize(1400, 900)  # the method's label is whole when there is room, and the window can still be narrow
    qtbot.waitUntil(lambda: page.method_box.width() >= page.method_box.fontMetrics().horizontalAdvance(label) + 20,
                    timeout=5000)
    assert window.minimumSizeHint().width() <= 1024


def test_a_gain_run_shows_its_grad_cam_and_no_attention_blocks(window, qtbot, tmp_path_factory):
    toy = small(tmp_path_factory, "gain")
    cfg = read_meta(toy.run)["config"]
    assert (cfg["gain"], cfg["attention"]) == (True, "none")
    page = explore_run(window, qtbot, toy)
    assert "attention" not in methods_of(page) and "gradcam" in methods_of(page)
    path = select_row(window, 5)
    show(qtbot, page, "gradcam", path)
    r = page.result
    assert r.names == ["Grad-CAM"] and page.strip.count() == 1
    run = load_run(toy.run)
    ms = explain(run.model, [read_image(path)], "gradcam", r.class_index,
                 Preprocessing.from_dict(run.preprocessing))[0][0]
    np.testing.assert_allclose(r.maps, ms.maps, atol=1e-5)
    np.testing.assert_array_equal(page.image_view.shown_map, r.maps[0])
    assert page.crop_caption.text().startswith("Grad-CAM · score ")


@pytest.mark.perf
def test_attention_and_gain_maps_never_stall_the_window(window, qtbot, tmp_path_factory, stall_probe):
    """While each run's map is computed (a few selections in a row: cbam's and residual's attention maps, the
    GAIN run's Grad-CAM) the GUI thread never works 100 ms. A tiny run's map takes some 25 ms of CPU, under the
    probe's limit even on the GUI thread, so each selection must also return before its maps exist (the lane makes
    them)."""
    for name, method in (("cbam", "attention"), ("residual", "attention"), ("gain", "gradcam")):
        page = explore_run(window, qtbot, small(tmp_path_factory, name))
        show(qtbot, page, method, select_row(window, 0))
        stall_probe.start()
        for row in (6, 13, 2):
            path = select_row(window, row)
            assert page.result.path != path
            qtbot.wait(15)
        show(qtbot, page, method, window.library.model.sample(2).path)
        assert len(page.result.names) == (2 if method == "attention" else 1)
        qtbot.wait(300)
        stall_probe.assert_responsive(0.1)
