"""Parts from maps (engine.maps.parts) and TASN resampled views (engine.maps.views): peaks at cell centres, region and
fixed boxes, duplicate suppression, crops from the original image, boxes mapped back from a resampled view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.maps.explain import MapSet, resampled_views
from engine.maps.parts import (Part, box_iou, cells_to_pixels, crop, find_parts, fixed_box, map_peaks,
                          parts_to_original, pixels_to_cells, region_box, scale_box, suppress_duplicates)


def mapset(raw: np.ndarray, size: tuple[int, int] | None = None) -> MapSet:
    """A MapSet holding ``raw`` maps (K, H, W), normalised the way engine.maps.explain does."""
    raw = np.asarray(raw, np.float32)
    k = raw.shape[0]
    ranges = [(float(m.min()), float(m.max())) for m in raw]
    maps = np.stack([(m - lo) / (hi - lo) if hi > lo else np.zeros_like(m) for m, (lo, hi) in zip(raw, ranges)])
    return MapSet("channels", 0, maps, [f"part {i + 1}" for i in range(k)], ranges, size or raw.shape[-2:],
                  channels=list(range(k)))


def test_low_res_peaks_map_to_cell_centres():
    m = np.zeros((2, 4, 8), np.float32)
    m[0, 1, 6] = 3.0  # row 1, column 6
    m[1, 3, 0] = 1.0
    pk = map_peaks(m, image_size=(40, 80))  # cells of 10×10 pixels
    assert pk.argmax[0].tolist() == [6.5 * 10 - 0.5, 1.5 * 10 - 0.5]
    assert pk.argmax[1].tolist() == [4.5, 34.5]
    assert pk.value.tolist() == [3.0, 1.0] and pk.cell.tolist() == [[1, 6], [3, 0]]
    assert np.allclose(pk.centroid, pk.argmax)  # one hot cell: centroid = peak
    back = pixels_to_cells(pk.argmax, (4, 8), (40, 80))
    assert np.allclose(back, [[6, 1], [0, 3]])
    assert np.allclose(cells_to_pixels(back, (4, 8), (40, 80)), pk.argmax)


def test_centroid_is_attention_weighted_and_batched_input_works():
    m = np.zeros((1, 5, 5), np.float32)
    m[0, 2, 1], m[0, 2, 3] = 1.0, 3.0  # weights 1 and 3 on one row → x = (1·1 + 3·3)/4 = 2.5
    pk = map_peaks(m)
    assert pk.centroid[0].tolist() == [2.5, 2.0] and pk.argmax[0].tolist() == [3.0, 2.0]
    flat = map_peaks(np.ones((1, 3, 5), np.float32))
    assert flat.centroid[0].tolist() == [2.0, 1.0]  # a constant map: its centre
    batched = map_peaks(torch.from_numpy(np.stack([m, m * 2])))
    assert batched.argmax.shape == (2, 1, 2) and np.allclose(batched.centroid[1], pk.centroid)
    with pytest.raises(ConfigError):
        map_peaks(np.zeros((4, 4)))


def test_region_box_is_the_component_of_the_peak_only():
    m = np.zeros((10, 12), np.float32)
    m[2:5, 3:7] = 0.8
    m[3, 4] = 1.0  # the peak, inside the first blob
    m[7:9, 9:11] = 0.9  # a second blob above the threshold, not connected
    assert region_box(m, (3, 4), 0.5) == (3.0, 2.0, 7.0, 5.0)
    assert scale_box((3.0, 2.0, 7.0, 5.0), (10, 12), (20, 24)) == (5.5, 3.5, 13.5, 9.5)
    with pytest.raises(ConfigError):
        region_box(m, (3, 4), 0.0)


def test_fixed_box_stays_inside_and_iou():
    assert fixed_box((1.0, 1.0), 10, (50, 60)) == (-0.5, -0.5, 9.5, 9.5)
    assert fixed_box((58.0, 25.0), 10, (50, 60)) == (49.5, 20.0, 59.5, 30.0)  # centred on 25, shifted in x
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_find_parts_boxes_scores_and_duplicates():
    m = np.zeros((3, 40, 60), np.float32)
    m[0, 10:20, 5:15] = 2.0
    m[1, 10:20, 5:15] = 1.0  # the same place as part 1, weaker: a duplicate
    m[2, 25:35, 40:50] = 0.5
    parts = find_parts(mapset(m))
    assert [p.duplicate_of for p in parts] == [None, 0, None]
    assert parts[0].box == (4.5, 9.5, 14.5, 19.5) and parts[2].box == (39.5, 24.5, 49.5, 34.5)
    assert [p.score for p in parts] == [2.0, 1.0, 0.5] and [p.score_norm for p in parts] == [1.0, 0.5, 0.25]
    fixed = find_parts(mapset(m), bird_box=(0, 0, 30, 20), box="fixed", size=0.5)
    assert fixed[2].box[2] - fixed[2].box[0] == 15.0
    d = parts[0].to_dict()
    assert d["part"] == 1 and d["channel"] == 0 and d["box"] == [4.5, 9.5, 14.5, 19.5]
    near = [parts[0], Part(5, 5, "p", (6.0, 12.0), (6.0, 12.0), (30.0, 30.0, 31.0, 31.0), 0.1, 0.05)]
    assert suppress_duplicates(near, iou=0.5, distance=5.0)[1].duplicate_of == 0


def test_crop_cuts_the_original_pixels():
    img = np.zeros((60, 80, 3), np.uint8)
    img[20:30, 40:50] = (255, 0, 0)
    c = crop(img, (39.5, 19.5, 49.5, 29.5), square=False)
    assert c.shape == (10, 10, 3) and (c == (255, 0, 0)).all()
    sq = crop(img, (39.5, 19.5, 49.5, 23.5), size=32)  # widened to a square, then resized
    assert sq.shape == (32, 32, 3)
    assert crop(img, (-20.0, -20.0, 200.0, 200.0), square=False).shape == img.shape  # clipped


def _red_box(img: np.ndarray) -> tuple[float, float, float, float]:
    """The red square's box in pixel-centre coordinates, exclusive end."""
    mask = (img[..., 0] > 160) & (img[..., 1] < 90) & (img[..., 2] < 90)
    ys, xs = np.nonzero(mask)
    return xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5


@pytest.mark.parametrize("view", ["structure", "detail"])
def test_box_from_a_resampled_view_maps_back_onto_the_object(view):
    rng = np.random.default_rng(0)
    h, w = 120, 160
    img = (rng.random((h, w, 3)) * 60 + 60).astype(np.uint8)
    img[..., 0] = img[..., 1]  # grey-ish background, no red
    truth = (99.5, 29.5, 119.5, 49.5)  # pixels 100..119, 30..49
    img[30:50, 100:120] = (230, 20, 20)
    yy, xx = np.mgrid[0:h, 0:w]
    att = np.exp(-(((xx - 110) / 12.0) ** 2 + ((yy - 40) / 12.0) ** 2)).astype(np.float32)  # peaked on it
    views = resampled_views(img, att, out_size=96)
    vimg = views.structure if view == "structure" else views.detail
    grid = views.structure_grid if view == "structure" else views.detail_grid
    assert vimg.shape == (96, 96, 3) and views.in_size == (h, w)
    found = _red_box(vimg)
    share_view = (found[2] - found[0]) * (found[3] - found[1]) / 96 ** 2
    assert share_view > 1.5 * (20 * 20) / (h * w), "the view should zoom into the peaked region"
    part = Part(0, 0, "square", ((found[0] + found[2]) / 2, (found[1] + found[3]) / 2), (0.0, 0.0), found, 1.0, 1.0)
    (back,) = parts_to_original([part], grid, (h, w))
    assert box_iou(back.box, truth) > 0.75, (back.box, truth)
    assert abs(back.peak[0] - 109.5) < 3 and abs(back.peak[1] - 39.5) < 3
    low = resampled_views(img, att[::8, ::8], out_size=96)  # a low-resolution map is resized first
    assert low.structure.shape == (96, 96, 3)


def test_parts_found_on_a_view_come_back_in_original_pixels():
    rng = np.random.default_rng(1)
    img = (rng.random((80, 100, 3)) * 80).astype(np.uint8)
    yy, xx = np.mgrid[0:80, 0:100]
    att = np.exp(-(((xx - 30) / 8.0) ** 2 + ((yy - 50) / 8.0) ** 2)).astype(np.float32)
    views = resampled_views(img, att, out_size=64)
    # a map on the view, peaked where the view shows original (30, 50)
    from engine.models.sampler import original_to_resampled
    p = original_to_resampled(torch.tensor([[[30.0, 50.0]]], dtype=torch.float64), views.detail_grid[None].double(),
                              (80, 100))[0, 0]
    vy, vx = np.mgrid[0:64, 0:64]
    vmap = np.exp(-(((vx - float(p[0])) / 3.0) ** 2 + ((vy - float(p[1])) / 3.0) ** 2))[None]
    (part,) = parts_to_original(find_parts(mapset(vmap)), views.detail_grid, (80, 100))
    assert abs(part.peak[0] - 30) < 1.5 and abs(part.peak[1] - 50) < 1.5
    assert part.box[0] < 30 < part.box[2] and part.box[1] < 50 < part.box[3]
