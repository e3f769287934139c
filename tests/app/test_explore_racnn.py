"""Explore on a tiny RA-CNN run (Fu et al., CVPR 2017) trained here: its squares are a map method, its zoom views take
the resampled views' place (the squares drawn on the photo and in scale 2's view, the two zoomed crops, the linked
cursor through their grids), and the window never stalls while they are computed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models.sampler import resampled_to_original

from toyrun import ToyRun, open_toy, select_row

pytestmark = pytest.mark.timeout(600)

SLOW = 120_000


@pytest.fixture(scope="module")
def racnn_toy(tmp_path_factory) -> ToyRun:
    """Toy birds (4 classes × 6 photos, 64 px) and an RA-CNN run on them: racnn_smallnet, 1 epoch."""
    from engine.events import drive
    from engine.toybirds import dataset as toybirds
    from engine.training.config import TrainConfig
    from engine.training.loop import train

    root = tmp_path_factory.mktemp("racnn")
    data, run = root / "birds", root / "run"
    toybirds.generate(data, classes=4, per_class=6, size=64)
    cfg = TrainConfig(data=str(data), out=str(run), model="racnn_smallnet", method="racnn", epochs=1, img_size=64,
                      batch_size=8, device="cpu", cache_mb=32, seed=0, extra={"apn_warmup": 2})
    drive(train(cfg))
    return ToyRun(data, run)


@pytest.fixture
def explore(window, qtbot, racnn_toy):
    open_toy(window, qtbot, racnn_toy)
    page = window.workspaces.explore
    window.set_workspace("Explore")
    qtbot.waitUntil(lambda: page.info is not None, timeout=SLOW)
    return page


def wait_maps(qtbot, page, path: str, method: str = "racnn") -> None:
    qtbot.waitUntil(lambda: page.result is not None and page.result.path == path and page.result.method == method,
                    timeout=SLOW)


def test_racnn_run_shows_its_zoom_views(window, qtbot, explore):
    page = explore
    methods = [page.method_box.itemData(i) for i in range(page.method_box.count())]
    assert "racnn" in methods and "channels" not in methods and "tasn" not in methods
    assert page.method_box.currentData() == "racnn"  # an RA-CNN run opens on its squares
    path = select_row(window, 0)
    wait_maps(qtbot, page, path)
    r = page.result
    assert r.names == ["scale 2 square", "scale 3 square"] and len(r.parts) == 2
    panel = page.resampled
    assert panel.titles["structure"].text == "Scale 2 (zoomed)" and panel.titles["detail"].text == "Scale 3 (zoomed)"
    assert panel.box_count("original") == 2 and panel.box_count("structure") == 1 and panel.box_count("detail") == 0
    view = r.views[page.map_index]
    assert view.structure.shape == view.detail.shape and view.structure.shape[2] == 3
    assert np.array_equal(panel.images["structure"].image, view.structure)
    # the part of scale 2's map is its square: the box drawn on the photo holds the part's peak
    x0, y0, x1, y1 = view.boxes["original"][0]
    px, py = r.parts[0].peak
    assert x0 - 1 <= px <= x1 + 1 and y0 - 1 <= py <= y1 + 1
    # the linked cursor goes through the zoom view's grid: scale 2's centre is the square's centre on the photo
    side = view.structure.shape[0]
    state = panel.point_at("structure", ((side - 1) / 2, (side - 1) / 2))
    grid = torch.from_numpy(view.structure_grid)[None].double()
    back = resampled_to_original(torch.tensor([[[(side - 1) / 2, (side - 1) / 2]]], dtype=torch.float64), grid,
                                 view.in_size)
    assert state.original == pytest.approx(tuple(back[0, 0].tolist()), abs=1e-6)
    assert state.original == pytest.approx(((x0 + x1) / 2, (y0 + y1) / 2), abs=0.6)
    # another method on the same run draws TASN's views again, without squares
    page.method_box.setCurrentIndex(page.method_box.findData("gradcam"))
    wait_maps(qtbot, page, path, "gradcam")
    assert panel.titles["structure"].text == "Structure-preserved" and panel.box_count("original") == 0


@pytest.mark.perf
def test_racnn_maps_never_stall_the_window(window, qtbot, explore, stall_probe):
    """While the squares and zoom views are computed (a few selections in a row) the GUI thread never works 100 ms."""
    page = explore
    path = select_row(window, 0)
    wait_maps(qtbot, page, path)
    stall_probe.start()
    for row in (5, 11, 2):
        select_row(window, row)
        qtbot.wait(15)
    wait_maps(qtbot, page, window.library.model.sample(2).path)
    assert page.resampled.box_count("original") == 2
    qtbot.wait(300)
    stall_probe.assert_responsive(0.1)
