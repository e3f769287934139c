"""Zoom to the bird (shared parts, docs/METHODS.md#zoom): the square found from the background part, worked out by
hand; the zoomed maps back in the photo's coordinates; training's terms on the zoomed batch; the option's checks."""

import argparse

import numpy as np
import pytest
import torch
from torch import nn

from engine.cli.train import worker_argv
from engine.data.transforms import Preprocessing
from engine.errors import ConfigError
from engine.losses.parts import PartsCriterion
from engine.maps.explain import explain, prepare
from engine.models.backbones import smallnet
from engine.models.shared_parts import FRAME_SCALE, ZOOM_MIN_SIDE, SharedPartsNet, bird_squares, to_frame, zoom_in
from engine.training.config import TrainConfig
from engine.training.resume import RUN_KEYS


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- the square ----------------------------------------------------------------------------------------------------
def test_square_around_the_foreground_cells_by_hand():
    fg = torch.zeros(1, 10, 10)
    fg[0, 1:6, 2:5] = 1.0  # rows 1..5, columns 2..4; cells are 0.2 wide in [-1, 1]
    fg[0, 8, 8] = 0.4  # below half the maximum: not the bird
    cx, cy, s = bird_squares(fg, margin=0.1)[0].tolist()
    # box x: -0.6 .. 0.0, y: -0.8 .. 0.2; longer side 1.0 -> half 1.0 * (0.5 + 0.1) = 0.6
    assert s == pytest.approx(0.6) and cx == pytest.approx(-0.3) and cy == pytest.approx(-0.3)


def test_square_is_moved_inside_the_photo_and_never_below_the_least_side():
    fg = torch.zeros(2, 10, 10)
    fg[0, 0, 0] = 1.0  # one corner cell: box side 0.2 -> the least half side, pushed inside
    fg[1, :, :] = 1.0  # everything: the whole photo
    sq = bird_squares(fg, margin=0.15)
    assert sq[0].tolist() == pytest.approx([-1 + ZOOM_MIN_SIDE, -1 + ZOOM_MIN_SIDE, ZOOM_MIN_SIDE])
    assert sq[1].tolist() == pytest.approx([0.0, 0.0, 1.0])


def test_no_foreground_keeps_the_whole_photo():
    sq = bird_squares(torch.zeros(1, 6, 6), margin=0.15)
    assert sq[0].tolist() == [0.0, 0.0, 1.0]


def test_zoom_in_cuts_the_square_and_to_frame_puts_maps_back():
    # an image whose value is its column: the zoomed half of it spans the square's columns
    w = 40
    x = torch.arange(w, dtype=torch.float64).view(1, 1, 1, w).expand(1, 1, w, w).contiguous()
    sq = torch.tensor([[0.5, 0.0, 0.5]])  # the right half of the columns, the middle half of the rows
    z = zoom_in(x, sq)
    assert z.shape == x.shape
    # output pixel 0 spans the photo's x from 20 to 20.5 (pixel edges): its centre 20.25 is column index 19.75
    assert z[0, 0, 0, 0].item() == pytest.approx(19.75, abs=1e-6)
    assert z[0, 0, 0, -1].item() == pytest.approx(39.0, abs=1e-6)  # centre 39.75 is past the last pixel: the edge
    # softmax maps of two "parts" (the last is the background) on the square, back on the photo's grid
    maps = torch.tensor([0.7, 0.3]).view(1, 2, 1, 1).expand(1, 2, 8, 8).contiguous()
    back = to_frame(maps, sq, background=True)
    assert back.shape == (1, 2, 8 * FRAME_SCALE, 8 * FRAME_SCALE)
    assert torch.allclose(back.sum(1), torch.ones(1, 16, 16))
    part = back[0, 0]
    assert max(part[:, :8].max(), part[:4].max(), part[12:].max()) < 1e-5  # outside the square
    assert torch.allclose(part[5:11, 9:15], torch.full((6, 6), 0.7))  # inside (away from the square's edge)


# -- the model ---------------------------------------------------------------------------------------------------
def colour_model(zoom=0.1):
    """Maps that are a function of each pixel's colour: part 0 is red, the background black."""
    m = SharedPartsNet(nn.Identity(), 3, 1, 2, 1, part_dropout=0.0, zoom=zoom).double()
    with torch.no_grad():
        m.prototypes.weight.copy_(torch.tensor([[3.0, 0, 0], [0, 0, 0]], dtype=torch.float64).view(2, 3, 1, 1))
    return m


def red_square(top, left, side, size=32):
    x = torch.zeros(1, 3, size, size, dtype=torch.float64)
    x[0, 0, top:top + side, left:left + side] = 3.0
    return x


def test_zoomed_maps_are_in_the_photos_coordinates():
    m = colour_model().eval()
    x = red_square(4, 18, 8)  # the "bird": rows 4..11, columns 18..25 of a 32 px photo
    out = m.forward_parts(x)
    assert out.squares is not None and out.maps.shape == (1, 2, 64, 64)
    assert torch.allclose(out.maps.sum(1), torch.ones(1, 64, 64, dtype=torch.float64))
    red = out.maps[0, 0] > 0.5
    rows, cols = red.any(1).nonzero().flatten(), red.any(0).nonzero().flatten()
    # the frame grid is 2x the photo's pixels: the part covers rows 8..23 and columns 36..51 of it
    assert rows.min().item() == pytest.approx(8, abs=1) and rows.max().item() == pytest.approx(23, abs=1)
    assert cols.min().item() == pytest.approx(36, abs=1) and cols.max().item() == pytest.approx(51, abs=1)
    assert torch.equal(m.forward_features(x), out.maps)
    # without zoom the maps are the plain pass's, on the plain grid
    assert m.forward_features(x, zoom=False).shape == (1, 2, 32, 32)


def test_zoom_uses_the_square_for_the_part_vectors():
    m = colour_model().eval()
    x = red_square(4, 18, 8)
    sq = m.locate(x)
    plain = m.forward_parts(zoom_in(x, sq), zoom=False)
    zoomed = m.forward_parts(x)
    assert torch.allclose(zoomed.part_vectors, plain.part_vectors) and torch.allclose(zoomed.logits, plain.logits)


def test_locate_keeps_every_modules_mode_and_the_batchnorm_statistics():
    f, w, s = smallnet()
    m = SharedPartsNet(f, w, s, 3, 4, zoom=0.15).train()
    list(m.backbone.children())[0].eval()  # a module a caller froze on purpose
    bn = next(mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    modes = [mod.training for mod in m.modules()]
    m.locate(torch.randn(2, 3, 64, 64))
    assert [mod.training for mod in m.modules()] == modes
    assert torch.equal(bn.running_mean, before)


def test_training_terms_are_the_zoomed_batchs():
    f, w, s = smallnet()
    m = SharedPartsNet(f, w, s, 3, 4, part_dropout=0.0, zoom=0.15).train()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    sq = torch.tensor([[0.2, -0.1, 0.5], [-0.3, 0.3, 0.6]])
    m.locate = lambda images: sq  # squares a random network would not find: the terms must follow them
    _, zoomed = PartsCriterion(generator=torch.Generator().manual_seed(3))(m, x, y)
    m.zoom = 0.0
    _, by_hand = PartsCriterion(generator=torch.Generator().manual_seed(3))(m, zoom_in(x, sq), y)
    assert zoomed.keys() == by_hand.keys()
    for k in zoomed:
        assert torch.allclose(zoomed[k], by_hand[k], atol=1e-5), k


def test_explain_puts_the_zoomed_maps_on_the_photo():
    m = colour_model().eval().float()
    img = np.zeros((32, 32, 3), np.uint8)
    img[4:12, 18:26, 0] = 255

    pp = Preprocessing(img_size=32, mean=(0.0, 0.0, 0.0), std=(1.0,) * 3)
    ms = explain(m, [img], "channels", class_index=0, preprocessing=pp)[0][0]
    low = torch.from_numpy(ms.low_res)
    # a stride-1 model's maps are at the input's size: they stay that size on the photo
    x = prepare([img], pp, "cpu")
    sq = m.locate(x)
    expected = to_frame(m.forward_features(zoom_in(x, sq), zoom=False)[:, :1], sq, size=(32, 32))
    assert low.shape == (1, 32, 32) and torch.allclose(low, expected[0], atol=1e-5)
    peak = np.unravel_index(ms.maps[0].argmax(), ms.maps[0].shape)
    assert 4 <= peak[0] < 12 and 18 <= peak[1] < 26


# -- the option --------------------------------------------------------------------------------------------------
def test_zoom_is_a_parts_option_and_checked(tmp_path):
    with pytest.raises(ConfigError, match="zoom=0.2.*shared-parts option"):
        TrainConfig(data="d", out="o", method="ce", zoom=0.2)
    with pytest.raises(ConfigError, match="zoom=1.5"):
        TrainConfig(data="d", out="o", method="parts", zoom=1.5)
    assert TrainConfig(data="d", out="o", method="mcloss").zoom == 0.0
    assert TrainConfig(data="d", out="o", method="parts", zoom=0.15).zoom == 0.15
    old = TrainConfig(data="d", out="o", method="parts").to_dict()
    del old["zoom"]  # a run saved before the option
    assert TrainConfig.from_dict(old).zoom == 0.0
    assert "zoom" in RUN_KEYS  # a resume with another zoom is refused


def test_zoom_is_forwarded_to_the_nproc_workers():
    from engine.cli import build_parser

    args = build_parser().parse_args(["train", "d", "--out", "o", "--method", "parts", "--zoom", "0.15"])
    argv = worker_argv(args)
    assert argv[argv.index("--zoom") + 1] == "0.15"
    assert isinstance(args, argparse.Namespace)
