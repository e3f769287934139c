"""The Explore workspace on a tiny toy-birds run: maps per method and class, the overlay, the part and its crop,
the linked cursor of the resampled views, keypoints, evaluation, arrow keys, and a responsive event loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPointF, Qt

from engine.data.transforms import Preprocessing
from engine.maps.explain import explain
from engine.data.imageio import read_image
from engine.maps.parts import crop, find_parts
from engine.runs import load_run
from engine.models.sampler import original_to_resampled, resampled_to_original

from tests.timing import thread_cpu
from toyrun import open_toy, select_row

pytestmark = pytest.mark.timeout(240)

SLOW = 60_000


@pytest.fixture
def explore(window, qtbot, toy):
    open_toy(window, qtbot, toy)
    page = window.workspaces.explore
    window.set_workspace("Explore")
    qtbot.waitUntil(lambda: page.info is not None, timeout=SLOW)
    return page


def wait_maps(qtbot, page, path: str, method: str | None = None, cls: int | None = None) -> None:
    def shown() -> bool:
        r = page.result
        return (r is not None and r.path == path and (method is None or r.method == method)
                and (cls is None or r.class_index == cls))

    qtbot.waitUntil(shown, timeout=SLOW)


def click_item(qtbot, view, row: int) -> None:
    rect = view.visualRect(view.model().index(row, 0))
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_maps_methods_classes_overlay_and_crop(window, qtbot, toy, explore):
    page = explore
    methods = [page.method_box.itemData(i) for i in range(page.method_box.count())]
    assert methods == ["channels", "ccmp", "cam", "gradcam", "guided-gradcam", "guided-backprop",
                       "deconvnet"]  # no TASN maps for a PartNet
    assert page.method_box.currentData() == "channels"
    path = select_row(window, 2)
    wait_maps(qtbot, page, path, "channels")
    r = page.result
    assert page.strip.count() == 3 and r.names[0].startswith("part 1 (ch ")
    # the same maps as the engine gives for the predicted class
    run = load_run(toy.run)
    image = read_image(path)
    probs = r.probs
    assert r.class_index == int(np.argmax(probs))
    ms = explain(run.model, [image], "channels", r.class_index, Preprocessing.from_dict(run.preprocessing))[0][0]
    np.testing.assert_allclose(r.maps, ms.maps, atol=1e-5)
    top = [page.predictions.item(i).data(Qt.ItemDataRole.UserRole) for i in range(page.predictions.count())]
    assert top == list(np.argsort(-probs)[:4])

    with qtbot.waitSignal(page.maps_changed, timeout=5000) as blocker:
        click_item(qtbot, page.strip, 2)
    assert blocker.args[0].map_index == 2 and page.map_index == 2
    np.testing.assert_array_equal(page.image_view.shown_map, r.maps[2])
    assert page.image_view.overlay.image.shape == r.maps[2].shape
    part = find_parts(ms)[2]
    x, y = page.image_view.peak.getData()
    assert (x[0], y[0]) == pytest.approx(part.peak)
    rect = page.image_view.box.rect()
    assert (rect.left(), rect.top(), rect.right(), rect.bottom()) == pytest.approx(part.box)
    np.testing.assert_array_equal(r.crops[2], crop(image, part.box))  # the crop at the photo's own resolution
    assert page.crop_label.pixmap().width() >= r.crops[2].shape[1]
    assert "part 3" in page.crop_caption.text()
    page.opacity.setValue(30)
    assert page.image_view.overlay.opacity() == pytest.approx(0.3)
    page.cmap_box.setCurrentText("viridis")
    assert page.image_view.colormap == "viridis"

    page.method_box.setCurrentIndex(page.method_box.findData("gradcam"))
    wait_maps(qtbot, page, path, "gradcam", r.class_index)
    assert page.strip.count() == 1 and page.result.names == ["Grad-CAM"]
    other = top[1]
    click_item(qtbot, page.predictions, 1)  # a class from the top-k list
    wait_maps(qtbot, page, path, "gradcam", other)
    assert page.class_box.currentIndex() == other
    page.class_box.setCurrentIndex(3)
    page.class_box.activated.emit(3)  # as a user's pick
    wait_maps(qtbot, page, path, "gradcam", 3)
    page.method_box.setCurrentIndex(page.method_box.findData("channels"))
    wait_maps(qtbot, page, path, "channels", 3)
    assert page.strip.count() == 3

    # keypoints of the data set
    assert page.keypoints_box.isEnabled()
    page.keypoints_box.setChecked(True)
    sample = window.library.model.sample(2)
    kp = sample.keypoints()
    np.testing.assert_allclose(page.image_view.keypoint_positions(), kp[kp[:, 2] > 0, :2])
    page.keypoints_box.setChecked(False)
    assert len(page.image_view.keypoint_positions()) == 0


def test_deconvnet_and_guided_backprop_maps(window, qtbot, toy, explore):
    """The two pixel-space maps: one map each, the engine's own, shown on the photo with its part."""
    page = explore
    run = load_run(toy.run)
    pp = Preprocessing.from_dict(run.preprocessing)
    path = select_row(window, 4)
    wait_maps(qtbot, page, path, "channels")
    image = read_image(path)
    for method, label in (("deconvnet", "Deconvnet"), ("guided-backprop", "Guided backprop")):
        index = page.method_box.findData(method)
        assert index >= 0 and page.method_box.itemText(index) == label
        page.method_box.setCurrentIndex(index)
        wait_maps(qtbot, page, path, method)
        r = page.result
        assert page.strip.count() == 1 and r.names == [label] and r.maps.shape == (1, *image.shape[:2])
        ms = explain(run.model, [image], method, r.class_index, pp)[0][0]
        np.testing.assert_allclose(r.maps, ms.maps, atol=1e-5)
        np.testing.assert_array_equal(page.image_view.shown_map, r.maps[0])
        part = find_parts(ms)[0]
        x, y = page.image_view.peak.getData()
        assert (x[0], y[0]) == pytest.approx(part.peak)
    other = explain(run.model, [image], "guided-backprop", page.result.class_index, pp)[0][0]
    deconv = explain(run.model, [image], "deconvnet", page.result.class_index, pp)[0][0]
    assert not np.allclose(other.maps, deconv.maps, atol=1e-3)  # two rules, two maps


@pytest.mark.perf
def test_deconvnet_and_guided_backprop_never_stall_the_window(window, qtbot, explore, stall_probe):
    """While these maps are computed (each selection under each method) the GUI thread never works 100 ms."""
    page = explore
    path = select_row(window, 0)
    wait_maps(qtbot, page, path)
    stall_probe.start()
    for method in ("deconvnet", "guided-backprop"):
        page.method_box.setCurrentIndex(page.method_box.findData(method))
        for row in (6, 13, 2):
            select_row(window, row)
            qtbot.wait(15)
        last = window.library.model.sample(2).path
        wait_maps(qtbot, page, last, method)
        assert page.result.names == [{"deconvnet": "Deconvnet"}.get(method, "Guided backprop")]
    qtbot.wait(300)
    stall_probe.assert_responsive(0.1)


def test_linked_cursor_follows_the_sampler_grid(window, qtbot, explore):
    page = explore
    path = select_row(window, 0)
    wait_maps(qtbot, page, path)
    view = page.result.views[page.map_index]
    grid_s = torch.from_numpy(view.structure_grid)[None].double()
    grid_d = torch.from_numpy(view.detail_grid)[None].double()
    pt = (40.0, 25.5)
    state = page.resampled.point_at("structure", pt)
    orig = resampled_to_original(torch.tensor([[pt]], dtype=torch.float64), grid_s, view.in_size)
    det = original_to_resampled(orig, grid_d, view.in_size)
    assert state.original == pytest.approx(tuple(orig[0, 0].tolist()), abs=1e-6)
    assert page.resampled.marker_position("detail") == pytest.approx(tuple(det[0, 0].tolist()), abs=1e-4)
    assert page.resampled.marker_position("structure") == pytest.approx(pt)
    x, y = page.image_view.cursor.getData()  # the photo's own cursor follows too
    assert (x[0], y[0]) == pytest.approx(state.original, abs=1e-4)

    # pointing with the mouse at a spot of the original view marks the sampler's position in the others
    target = QPointF(60.0, 50.0)
    vb = page.resampled.views["original"]
    page.resampled.scene().sigMouseMoved.emit(vb.mapViewToScene(target))
    got = page.resampled.cursor
    assert got.source == "original" and got.original == pytest.approx((60.0, 50.0), abs=0.05)
    exp = original_to_resampled(torch.tensor([[got.original]], dtype=torch.float64), grid_s, view.in_size)
    assert got.structure == pytest.approx(tuple(exp[0, 0].tolist()), abs=1e-6)
    # and a round trip through a view comes back to the same spot
    back = page.resampled.point_at("detail", got.detail)
    assert back.original == pytest.approx(got.original, abs=1e-3)


def test_arrow_keys_evaluate_and_cache(window, qtbot, toy, explore):
    page = explore
    path0 = select_row(window, 0)
    wait_maps(qtbot, page, path0)
    page.image_view.setFocus()
    qtbot.keyClick(page.image_view, Qt.Key.Key_Right)
    path1 = window.library.model.sample(1).path
    assert window.library.grid.currentIndex().row() == 1
    wait_maps(qtbot, page, path1)
    with qtbot.waitSignal(page.maps_changed, timeout=1000):
        qtbot.keyClick(page.image_view, Qt.Key.Key_Left)  # cached: shown at once
    assert page.result.path == path0 and page.lane.is_idle()

    panel = page.evaluation
    assert panel.figures is None and panel.evaluate_button.isEnabled()
    with qtbot.waitSignal(panel.evaluation_changed, timeout=SLOW) as blocker:
        qtbot.mouseClick(panel.evaluate_button, Qt.MouseButton.LeftButton)
    figures = blocker.args[0].figures
    assert set(figures) >= {"top1", "part_hit_rate", "nmi"} and (toy.run / "evaluation.json").is_file()
    assert "Part hit rate" in panel.table.text()
    marks = figures["marks"]  # toy birds: the per-mark table is shown too
    assert marks and f"Field marks found: {sum(r['recalled'] for r in marks)} of {len(marks)}" in panel.table.text()
    assert marks[0]["mark"].replace("_", " ") in panel.table.text()
    qtbot.waitUntil(lambda: panel.evaluate_button.isEnabled(), timeout=5000)
    assert panel.evaluate_button.text() == "Evaluate again"


@pytest.mark.perf
def test_selection_never_blocks_and_the_last_one_wins(window, qtbot, explore, stall_probe):
    page = explore
    path = select_row(window, 0)
    wait_maps(qtbot, page, path)
    shown: list[tuple[str, str]] = []
    page.maps_changed.connect(lambda s: shown.append((s.path, page.sample.path)))
    stall_probe.start()
    rows = [5, 9, 14, 3, 20, 11]
    for row in rows:
        select_row(window, row)
        qtbot.wait(15)
    last = window.library.model.sample(rows[-1]).path
    wait_maps(qtbot, page, last)
    qtbot.wait(300)  # anything still in flight would land now
    stall_probe.assert_responsive(0.1)
    assert shown and all(p == cur for p, cur in shown), shown  # never the maps of an older selection
    assert shown[-1][0] == last and page.result.path == last
    assert thread_cpu(lambda: select_row(window, 7)) < 0.1  # selection returns at once; the work is on the lane
