"""The Library workspace on a generated folder: report, skipped files, filters, preview, errors."""

from __future__ import annotations

from engine.data import Sample

from app.library.model import SampleFilter


def open_folder(window, qtbot, folder) -> None:
    with qtbot.waitSignal(window.library.data_changed, timeout=15000):
        window.open_folder(str(folder))


def test_open_folder_shows_counts_and_skipped_files(window, qtbot, data_dir):
    open_folder(window, qtbot, data_dir)
    lib = window.library
    assert lib.stack.currentWidget() is lib.splitter
    table = lib.report_panel.classes
    rows = {table.item(r, 0).text(): [int(table.item(r, c).text()) for c in (1, 2, 3)]
            for r in range(table.rowCount())}
    assert rows == {"alpha": [4, 1, 5], "bravo": [4, 1, 5], "charlie": [4, 1, 5]}
    skipped = lib.report_panel.skipped
    found = {skipped.item(r, 0).text(): skipped.item(r, 1).text() for r in range(skipped.rowCount())}
    assert found == {"alpha/empty.jpg": "zero bytes", "bravo/notes.jpg": "not an image"}
    assert lib.report_panel.skipped.isVisible()
    assert "Skipped files (2)" == lib.report_panel.skipped_title.text()
    assert "class-folders" in lib.report_panel.summary.text()
    assert lib.model.rowCount() == 15
    assert lib.count_label.text() == "15 images"
    # the train form follows the library
    assert window.train.form.data.text() == str(data_dir)


def test_filter_by_class_and_split(window, qtbot, data_dir):
    open_folder(window, qtbot, data_dir)
    lib = window.library
    lib.class_box.setCurrentIndex(lib.class_box.findText("bravo"))
    assert lib.model.rowCount() == 5
    assert {lib.model.sample(r).label for r in range(5)} == {1}
    lib.split_box.setCurrentIndex(lib.split_box.findData("test"))
    assert lib.model.rowCount() == 1 and lib.model.sample(0).split == "test"
    assert lib.count_label.text() == "1 of 15"
    lib.report_panel.classes.selectRow(2)  # clicking a class in the counts table filters too
    assert lib.class_box.currentText() == "charlie" and lib.model.rowCount() == 1
    lib.set_filter(SampleFilter())
    assert lib.model.rowCount() == 15


def test_preview_shows_the_selected_image(window, qtbot, data_dir):
    open_folder(window, qtbot, data_dir)
    lib = window.library
    lib.grid.setCurrentIndex(lib.model.index(3, 0))
    path = lib.model.sample(3).path
    qtbot.waitUntil(lambda: lib.preview.shown_path == path, timeout=5000)
    assert lib.preview.image.image.shape == (40, 48, 3)
    assert "alpha" in lib.preview.info.text() and "48 × 40 px" in lib.preview.info.text()
    assert not lib.preview.box.isVisible()


def test_preview_draws_box_and_part_keypoints(window, qtbot, data_dir):
    path = str(next((data_dir / "alpha").glob("alpha_*.jpg")))
    sample = Sample(path, 0, "train", bbox=(5.0, 4.0, 20.0, 18.0), parts=((10.0, 10.0, 1), (30.0, 20.0, 1),
                                                                          (0.0, 0.0, 0)))
    prev = window.library.preview
    prev.set_part_names(["beak", "crown", "tail"])
    prev.show_sample(sample, "alpha")
    qtbot.waitUntil(lambda: prev.shown_path == path, timeout=5000)
    assert prev.box.isVisible() and prev.box.rect().width() == 20.0
    assert len(prev.parts.data) == 2  # the invisible part is not drawn
    assert "2 visible parts" in prev.info.text()


def test_thumbnails_are_decoded_off_the_gui_thread(window, qtbot, data_dir):
    open_folder(window, qtbot, data_dir)
    lib = window.library
    path = lib.model.sample(0).path
    qtbot.waitUntil(lambda: lib.loader.is_idle() and path in lib.loader._cache, timeout=10000)
    pm = lib.model.data(lib.model.index(0, 0), 1)  # DecorationRole
    assert pm is not lib.loader.placeholder and pm.width() == 48


def test_a_folder_without_images_shows_why(window, qtbot, tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    with qtbot.waitSignal(window.library.scan_failed, timeout=10000) as blocker:
        window.open_folder(str(empty))
    assert "no usable image" in blocker.args[0]
    assert window.library.stack.currentWidget() is window.library.prompt
    assert "no usable image" in window.library.prompt_label.text()
