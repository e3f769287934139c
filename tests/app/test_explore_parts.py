"""Explore's all-parts view on the toy shared-parts (``parts``) run (toyrun.toy_parts_run): the coloured part map and its legend in the
palette's colours, isolation by click and by key, hover, naming a part in place (saved in the run folder, kept on
reopening, used by the export's parts.csv and COCO file), the legend's mark on the background / habitat parts (the
run's on-bird shares, read or computed on a worker), the propose-names dialog (no name for a background part, and
why), keyboard navigation, Help ▸ Keyboard, and an MC-Loss run's note that the view needs a parts run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QLineEdit, QMessageBox

from app.explore.compute import parts_layer
from app.explore.page import ALL_PARTS, NEEDS_PARTS, ONE_MAP
from app.explore.partmap import DIM, palette_rgb, part_colour, render_parts, swatch
from engine.data import scan
from engine.data.imageio import read_image
from engine.data.transforms import Preprocessing
from engine.events import Progress, drive
from engine.export.crops import export_parts
from engine.fieldmarks import part_label, read_part_names
from engine.fieldmarks.palette import PART_COLOURS
from engine.fieldmarks.onbird import PartPlace, places_doc, saved_places
from engine.runs import PART_NAMES, PART_PLACES, load_run, write_part_places
from toyrun import ToyRun, open_toy, toy_parts_run

pytestmark = pytest.mark.timeout(300)

SLOW = 60_000


@pytest.fixture(scope="session")
def parts_toy(tmp_path_factory) -> ToyRun:
    return toy_parts_run(tmp_path_factory.getbasetemp())


@pytest.fixture
def run_copy(parts_toy, tmp_path) -> ToyRun:
    """A private copy of the toy parts run with no names and no on-bird shares yet (what a test saves stays its
    own)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(parts_toy.run, run)
    (run / PART_NAMES).unlink(missing_ok=True)
    (run / PART_PLACES).unlink(missing_ok=True)
    return ToyRun(parts_toy.data, run)


def open_parts(window, qtbot, toy: ToyRun, row: int = 0):
    open_toy(window, qtbot, toy)
    page = window.workspaces.explore
    window.set_workspace("Explore")
    qtbot.waitUntil(lambda: page.info is not None, timeout=SLOW)
    lib = window.library
    lib.grid.setCurrentIndex(lib.model.index(row, 0))
    path = lib.model.sample(row).path
    qtbot.waitUntil(lambda: page.result is not None and page.result.path == path and page.result.layer is not None,
                    timeout=SLOW)
    return page


def legend_click(qtbot, page, k: int) -> None:
    rect = page.legend.visualItemRect(page.legend.item(k))
    qtbot.mouseClick(page.legend.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def drawn_parts(page) -> set[int]:
    """The parts with any visible pixel in the overlay (by their palette colour)."""
    rgba = page.image_view.shown_rgba
    layer = page.result.layer
    seen = rgba[..., 3] > 0
    return {int(k) for k in np.unique(layer.labels[seen]) if k < layer.parts}


def test_legend_isolation_hover_and_keys(window, qtbot, run_copy):
    page = open_parts(window, qtbot, run_copy)
    k = page.info.parts
    assert k == load_run(run_copy.run).model.parts and k >= 3
    assert page.view_box.currentData() == ALL_PARTS and not page.parts_note.isVisible()
    assert page.method_box.currentData() == "channels" and not page.method_box.isEnabled()
    # the legend: one entry per part, named "part n", in the palette's colours
    assert page.legend.count() == k
    assert [page.legend.item(i).text() for i in range(k)] == [f"part {i + 1}" for i in range(k)]
    assert [c.name() for c in page.legend.colours()] == [part_colour(i).name() for i in range(k)]
    assert [part_colour(i).getRgb()[:3] for i in range(k)] == [tuple(c) for c in PART_COLOURS[:k]]

    # the layer is the model's own part maps: argmax of the K+1 maps, background clear
    r = page.result
    run = load_run(run_copy.run)
    layer = parts_layer(run.model, read_image(r.path), Preprocessing.from_dict(run.preprocessing), r.image.shape[:2])
    np.testing.assert_array_equal(r.layer.labels, layer.labels)
    logits = r.layer.scores.mean(axis=0).astype(np.float64)  # the image's logits: the mean of the parts' scores
    np.testing.assert_allclose(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum(), r.probs,
                               atol=1e-4)
    rgba = page.image_view.shown_rgba
    assert rgba.shape[:2] == r.image.shape[:2]
    np.testing.assert_array_equal(rgba[..., 3][r.layer.labels == k], 0)  # background clear
    fg = r.layer.labels < k
    np.testing.assert_array_equal(rgba[..., :3][fg], palette_rgb(k)[r.layer.labels[fg]])
    np.testing.assert_array_equal(rgba[..., 3][fg], r.layer.alpha[fg])
    shown = drawn_parts(page)
    assert len(shown) >= 2, shown

    # click a legend entry: that part alone; again: all parts
    target = sorted(shown)[1]
    legend_click(qtbot, page, target)
    assert page.isolated == target and drawn_parts(page) == {target}
    assert page.legend.item(target).isSelected()
    legend_click(qtbot, page, target)
    assert page.isolated is None and drawn_parts(page) == shown

    # keys: 2 shows part 2 alone, Esc and 0 all again
    page.image_view.setFocus()
    qtbot.keyClick(page.image_view, Qt.Key.Key_2)
    assert page.isolated == 1 and drawn_parts(page) <= {1}
    qtbot.keyClick(page.image_view, Qt.Key.Key_Escape)
    assert page.isolated is None and drawn_parts(page) == shown
    qtbot.keyClick(page.image_view, Qt.Key.Key_3)
    assert page.isolated == 2
    qtbot.keyClick(page.image_view, Qt.Key.Key_0)
    assert page.isolated is None

    # hovering a part on the photo highlights it (the others dimmed) and shows its crop and score
    ys, xs = np.nonzero(r.layer.labels == target)
    x, y = (xs[len(xs) // 2] + 0.5) / r.scale - 0.5, (ys[len(ys) // 2] + 0.5) / r.scale - 0.5
    page.image_view.scene().sigMouseMoved.emit(page.image_view.view.mapViewToScene(QPointF(x, y)))
    assert page.hovered == target
    hi = page.image_view.shown_rgba
    other = fg & (r.layer.labels != target)
    np.testing.assert_array_equal(hi[..., 3][other], np.round(r.layer.alpha[other] * np.float32(DIM)))
    np.testing.assert_array_equal(hi[..., 3][r.layer.labels == target], r.layer.alpha[r.layer.labels == target])
    cls = page.result.class_index
    score = r.layer.scores[target, cls]
    assert page.crop_caption.text().startswith(f"part {target + 1} · score {score:.2f} for ")
    np.testing.assert_array_equal(render_parts(r.layer, highlight=target), hi)
    page.legend.hovered.emit(-1)
    assert page.hovered is None

    # the one-map view stays: it overlays one map at a time, keys pick maps there
    page.view_box.setCurrentIndex(page.view_box.findData(ONE_MAP))
    assert page.method_box.isEnabled() and page.image_view.shown_map is not None
    qtbot.keyClick(page.image_view, Qt.Key.Key_3)
    assert page.map_index == 2
    np.testing.assert_array_equal(page.image_view.shown_map, r.maps[2])


def test_naming_a_part_survives_reopening_and_reaches_the_export(window, qtbot, run_copy, tmp_path):
    page = open_parts(window, qtbot, run_copy)
    legend = page.legend
    rect = legend.visualItemRect(legend.item(1))

    def double_click() -> QLineEdit:  # a real double-click: a click, then the double-click
        qtbot.mouseClick(legend.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.mouseDClick(legend.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.waitUntil(lambda: legend.state() == legend.State.EditingState, timeout=2000)
        return [w for w in legend.viewport().findChildren(QLineEdit) if w.isVisible()][0]

    editor = double_click()
    assert editor.text() == "part 2" and page.isolated == 1  # the part is shown alone while it is named
    qtbot.keyClicks(editor, "tail")
    qtbot.keyClick(editor, Qt.Key.Key_Escape)  # Esc leaves the editor: nothing saved
    qtbot.waitUntil(lambda: legend.state() != legend.State.EditingState, timeout=2000)
    assert legend.item(1).text() == "part 2" and not (run_copy.run / PART_NAMES).exists()
    editor = double_click()
    editor.selectAll()
    qtbot.keyClicks(editor, "crown")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: page.part_names == {1: "crown"}, timeout=2000)
    assert read_part_names(str(run_copy.run)) == {1: "crown"}
    assert json.loads((run_copy.run / PART_NAMES).read_text())  # the file beside model.json
    assert legend.item(1).text() == "crown" and page.strip.item(1).text() == "crown"
    assert "crown" in page.status.text()
    page.naming._on_lane_yielded(Progress("places", 3, 8))  # the shares' pass reports on a line of its own:
    assert "crown" in page.status.text()  # it never overwrites what the user just did
    assert page.places_status.text() == "On-bird shares (training photos): 3/8"
    page.set_hovered(1)
    assert page.crop_caption.text().startswith("crown · score ")

    # a name the engine refuses: a clear message, the saved names unchanged
    assert not page.rename_part(2, "crown")  # the same name twice
    assert page.status.text().startswith("Cannot name part 3 'crown': ")
    boxes = [b for b in page.findChildren(QMessageBox) if b.isVisible()]
    assert len(boxes) == 1 and "crown" in boxes[0].text()
    boxes[0].close()
    assert read_part_names(str(run_copy.run)) == {1: "crown"} and legend.item(2).text() == "part 3"
    assert "crown" not in [legend.item(i).text() for i in range(legend.count()) if i != 1]

    # double-clicking the crop names the part it shows (here the isolated one)
    page.set_hovered(None)  # the mouse left the photo for the crop
    page.set_isolated(2)
    qtbot.mouseDClick(page.crop_label, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: legend.state() == legend.State.EditingState, timeout=2000)
    assert legend.currentRow() == 2
    editor = [w for w in legend.viewport().findChildren(QLineEdit) if w.isVisible()][0]
    editor.selectAll()
    qtbot.keyClicks(editor, "wing bars")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: page.part_names == {1: "crown", 2: "wing bars"}, timeout=2000)
    assert page.crop_caption.text().startswith("wing bars · score ")

    # reopen the run in a new window: the names are still there
    window.close()
    from app.window import MainWindow

    w2 = MainWindow()
    w2.confirm_close = False
    qtbot.addWidget(w2)
    w2.show()
    page2 = open_parts(w2, qtbot, run_copy)
    assert page2.legend.item(1).text() == "crown" and page2.part_names == {1: "crown", 2: "wing bars"}
    w2.close()

    # the export names the part: parts.csv's part_name column and the COCO keypoint names
    out = tmp_path / "export"
    drive(export_parts(load_run(run_copy.run), scan(str(run_copy.data)), out, split="test", crop_size=32))
    with open(out / "parts.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and any(r["part_k"] == "2" for r in rows)
    assert {r["part_name"] for r in rows if r["part_k"] == "2"} == {"crown"}
    assert {r["part_name"] for r in rows if r["part_k"] == "3"} == {"wing bars"}
    assert "crown" not in {r["part_name"] for r in rows if r["part_k"] != "2"}
    coco = json.loads((out / "parts_coco.json").read_text())
    assert coco["categories"][0]["keypoints"][1:3] == ["crown", "wing bars"]


def test_propose_names_dialog_saves_accepted_names(window, qtbot, run_copy):
    page = open_parts(window, qtbot, run_copy)
    dialog = page.propose_names(str(run_copy.data))
    qtbot.waitUntil(lambda: dialog.save_button.isEnabled() or bool(dialog.error), timeout=SLOW)
    assert not dialog.error, dialog.error
    rows = dialog.table.rowCount()
    assert rows == page.info.parts
    for row in range(rows):  # untick all but the first; edit the first
        dialog.table.item(row, 0).setCheckState(Qt.CheckState.Checked if row == 0 else Qt.CheckState.Unchecked)
    dialog.table.item(0, 4).setText("my first")
    with qtbot.waitSignal(page.part_names_changed, timeout=2000):
        dialog.save()
    assert read_part_names(str(run_copy.run)) == {0: "my first"}
    assert page.legend.item(0).text() == "my first"


def test_propose_names_cancel_and_non_cub_error(window, qtbot, run_copy, tmp_path):
    page = open_parts(window, qtbot, run_copy)
    dialog = page.propose_names(str(run_copy.data))
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(dialog.is_idle, timeout=SLOW)
    assert dialog.table.rowCount() == 0 and "Cancelled" in dialog.message.text()
    dialog.close()
    import shutil

    plain = tmp_path / "plain"  # class folders, no keypoints
    for k, src in enumerate(sorted((run_copy.data / "images").rglob("*.jpg"))[:4]):
        (plain / f"class{k % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(src, plain / f"class{k % 2}" / src.name)
    dialog = page.propose_names(str(plain))
    qtbot.waitUntil(lambda: bool(dialog.error), timeout=SLOW)
    assert "part_locs.txt" in dialog.message.text()
    dialog.close()
    assert read_part_names(str(run_copy.run)) == {}


def icon_image(legend, k: int):
    return legend.item(k).icon().pixmap(22, 22).toImage()


def test_the_legend_marks_background_parts_and_propose_gives_them_no_name(window, qtbot, run_copy):
    k = load_run(run_copy.run).model.parts
    # by hand: part 2 lies on the background (25 % of its 12 active photos), part 3 is never active
    places = [PartPlace(i, 0.25 if i == 1 else None if i == 2 else 0.8, None, 0 if i == 2 else 12, "box")
              for i in range(k)]
    write_part_places(run_copy.run, places_doc(places, "train", 100, str(run_copy.data)))
    page = open_parts(window, qtbot, run_copy)
    legend = page.legend
    assert page.places == places
    assert [legend.is_background(i) for i in range(k)] == [i in (1, 2) for i in range(k)]
    # a "background" tag after the name (painted only: the entry's text, which the editor gets, is the name)
    assert [legend.shown_text(i) for i in range(3)] == ["part 1", "part 2  · background", "part 3  · background"]
    assert legend.item(1).text() == "part 2"
    # a hatched swatch, in the part's colour all the same; the tooltip: the score line and the on-bird share
    for i in range(k):
        plain = swatch(part_colour(i), str(i + 1)).toImage()
        assert (icon_image(legend, i) == plain) == (i not in (1, 2)), i
    assert [c.name() for c in legend.colours()] == [part_colour(i).name() for i in range(k)]
    assert legend.item(1).toolTip() == (f"{page.part_text(1)}\nBackground / habitat: its peak is on the bird on "
                                        "25 % of its 12 active training photos.")
    assert legend.item(2).toolTip().endswith("\nBackground / habitat: never active on the training photos.")
    assert legend.item(0).toolTip().endswith("On the bird: its peak is on the bird on 80 % of its 12 active "
                                             "training photos.")
    legend.edit_part(1)
    qtbot.waitUntil(lambda: legend.state() == legend.State.EditingState, timeout=2000)
    editor = [w for w in legend.viewport().findChildren(QLineEdit) if w.isVisible()][0]
    assert editor.text() == "part 2"  # the tag is no part of the name
    qtbot.keyClick(editor, Qt.Key.Key_Escape)

    # Propose names: no body-part name for the background part, and the dialog says why
    dialog = page.propose_names(str(run_copy.data))
    qtbot.waitUntil(lambda: dialog.save_button.isEnabled() or bool(dialog.error), timeout=SLOW)
    assert not dialog.error, dialog.error
    reason = "background / habitat: its peak is on the bird on only 25 % of its active training photos"
    assert dialog.table.item(1, 2).text() == "— background / habitat"
    assert dialog.table.item(1, 3).text() == "on the bird 25 %"
    assert dialog.table.item(1, 0).checkState() == Qt.CheckState.Unchecked and dialog.table.item(1, 4).text() == ""
    assert dialog.table.item(1, 2).toolTip() == f"No name proposed: {reason}"
    assert f"Part 2 stays unnamed: {reason}." in dialog.message.text()
    assert saved_places(run_copy.run) == places  # the saved shares were used, not computed again
    dialog.close()


def test_the_legend_marks_appear_once_the_shares_are_computed(window, qtbot, run_copy):
    page = open_parts(window, qtbot, run_copy)  # no shares in the run folder: computed on a lane of their own
    qtbot.waitUntil(lambda: page.places is not None, timeout=SLOW)
    assert saved_places(run_copy.run) == page.places
    legend = page.legend
    assert [legend.is_background(i) for i in range(legend.count())] == [not p.on_bird for p in page.places]
    assert all(legend.shown_text(i).endswith("· background") == (not p.on_bird) for i, p in enumerate(page.places))
    off = [part_label(p.part, page.part_names) for p in page.places if not p.on_bird]
    assert page.places_status.text() == (f"Background / habitat parts: {', '.join(off)}." if off
                                         else "Every part lies on the bird.")
    assert "shares" not in page.status.text() and "habitat" not in page.status.text()


def test_arrow_keys_move_through_images(window, qtbot, run_copy):
    page = open_parts(window, qtbot, run_copy, row=0)
    lib = window.library
    page.image_view.setFocus()
    for key, row in ((Qt.Key.Key_Right, 1), (Qt.Key.Key_Down, 2), (Qt.Key.Key_Left, 1), (Qt.Key.Key_Up, 0)):
        qtbot.keyClick(page.image_view, key)
        assert lib.grid.currentIndex().row() == row
        path = lib.model.sample(row).path
        qtbot.waitUntil(lambda: page.result is not None and page.result.path == path, timeout=SLOW)
        assert page.result.layer is not None and page.image_view.shown_rgba is not None


def test_mcloss_run_keeps_one_map_and_says_why(window, qtbot, toy):
    open_toy(window, qtbot, toy)
    page = window.workspaces.explore
    window.set_workspace("Explore")
    qtbot.waitUntil(lambda: page.info is not None, timeout=SLOW)
    assert [page.view_box.itemData(i) for i in range(page.view_box.count())] == [ONE_MAP]
    assert page.parts_note.isVisible() and page.parts_note.text() == NEEDS_PARTS
    assert not page.parts_box.isVisible()


def test_help_keyboard_lists_every_key(window, qtbot):
    dialog = window.show_keyboard()
    try:
        rows = dialog.rows()
        text = "\n".join(" | ".join(r) for r in rows)
        for where, keys in (("Explore", "1 – 9"), ("Explore", "0 or Esc"), ("Compare", "Left / Right"),
                            ("Compare", "1 – 9"), ("Explore", "Left / Up")):
            assert any(r[0] == where and r[1] == keys for r in rows), (where, keys, text)
        assert any(r[2] == "Show the Explore workspace" for r in rows)
        assert window.keyboard_action.text().replace("&", "") == "Keyboard"
    finally:
        dialog.close()


@pytest.mark.perf
def test_hover_and_propose_never_block_the_window(window, qtbot, run_copy, stall_probe):
    page = open_parts(window, qtbot, run_copy)
    r = page.result
    stall_probe.start()
    dialog = page.propose_names(str(run_copy.data))  # the keypoint vote runs on the dialog's lane
    for k in list(range(r.layer.parts)) * 2:  # sweep the legend while it runs
        page.legend.hovered.emit(k)
        qtbot.wait(20)
    page.legend.hovered.emit(-1)
    qtbot.waitUntil(lambda: dialog.save_button.isEnabled() or bool(dialog.error), timeout=SLOW)
    stall_probe.assert_responsive(0.1)
    assert not dialog.error and dialog.table.rowCount() == r.layer.parts
    dialog.close()
