"""The TASN attention sampler (engine.models.sampler): the authors' recipe, its batched form, point mapping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.models.sampler import (box_to_original, detail_map, detail_preserved, original_to_resampled,
                            reference_sampling_grid, resample, resampled_to_original, sampling_grid,
                            structure_map, structure_preserved)


def _pixels(grid: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x of each output column and y of each output row, in input pixels (align_corners=True)."""
    return (grid[:, 0, :, 0].double() + 1) / 2 * (w - 1), (grid[:, :, 0, 1].double() + 1) / 2 * (h - 1)


def _peaked(b: int, h: int, w: int, box=(24, 40, 24, 40), floor: float = 0.05) -> torch.Tensor:
    a = torch.full((b, h, w), floor)
    y0, y1, x0, x1 = box
    a[:, y0:y1, x0:x1] = 1.0
    return a


# --------------------------------------------------------------------------------- uniform map = plain resize
def test_uniform_map_same_size_is_the_plain_resize_shifted_one_pixel():
    """C[0] = 1 (authors' quirk) with C[-1] = 0 puts output 0 at input position -1 (zero padding) and output i at
    input i - 1: the plain resize (here the identity) shifted by one pixel, exact to float rounding."""
    torch.manual_seed(0)
    img = torch.rand(2, 3, 32, 32)
    out, grid = structure_preserved(img, torch.ones(2, 32, 32))
    plain = F.interpolate(img, size=(32, 32), mode="bilinear", align_corners=True)
    assert torch.allclose(out[..., 1:, 1:], plain[..., :-1, :-1], atol=1e-4)
    assert out[..., 0, :].abs().max() < 1e-4 and out[..., :, 0].abs().max() < 1e-4  # zero-padded first row/column
    assert grid[0, 0, 0, 0].item() == pytest.approx(-1 - 2 / 31, abs=1e-6)  # the doc's -1 - 2/(n-1)


@pytest.mark.parametrize("n,s", [(100, 96), (64, 48), (96, 32), (48, 48)])
def test_uniform_grid_closed_form(n, s):
    """For n >= S, output i >= 1 samples input (i-1)(n-1)/(S-1) + d_i, d_i = (n-S)(S-i)/(S²(S-1)) pixels."""
    grid = sampling_grid(torch.ones(1, n, n), s)
    xs, ys = _pixels(grid, n, n)
    i = torch.arange(1, s, dtype=torch.float64)
    expected = (i - 1) * (n - 1) / (s - 1) + (n - s) * (s - i) / (s * s * (s - 1))
    assert torch.allclose(xs[0, 1:], expected, atol=1e-4) and torch.allclose(ys[0, 1:], expected, atol=1e-4)
    assert xs[0, 0].item() == pytest.approx(-1.0, abs=1e-4)


def test_uniform_map_downsampled_matches_plain_resize_within_the_shift_bound():
    torch.manual_seed(1)
    n, s = 100, 96
    img = torch.rand(2, 3, n, n)
    out, _ = structure_preserved(img, torch.ones(2, n, n), out_size=s)
    plain = F.interpolate(img, size=(s, s), mode="bilinear", align_corners=True)
    d_max = (n - s) / (s * (s - 1))  # largest sub-pixel offset from the one-pixel shift
    lipschitz = max(img.diff(dim=-1).abs().max().item(), img.diff(dim=-2).abs().max().item())
    assert (out[..., 1:, 1:] - plain[..., :-1, :-1]).abs().max().item() <= 2 * d_max * lipschitz + 1e-5
    ramp = torch.linspace(0, 1, n).expand(1, 1, n, n).contiguous()  # a smooth image: within 1e-4
    out, _ = structure_preserved(ramp, torch.ones(1, n, n), out_size=s)
    plain = F.interpolate(ramp, size=(s, s), mode="bilinear", align_corners=True)
    assert torch.allclose(out[..., 1:, 1:], plain[..., :-1, :-1], atol=1e-4)


def test_zero_map_gives_the_uniform_grid_and_no_nan():
    for bad in (torch.zeros(2, 24, 24), torch.full((2, 24, 24), float("nan")), -torch.rand(2, 24, 24)):
        grid = sampling_grid(bad, 16)
        assert torch.isfinite(grid).all()
        assert torch.allclose(grid, sampling_grid(torch.ones(2, 24, 24), 16), atol=1e-6)
    out, _ = detail_preserved(torch.rand(2, 3, 24, 24), torch.zeros(2, 24, 24), out_size=16)
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------- zoom behaviour
def test_peaked_map_enlarges_its_region():
    grid = sampling_grid(_peaked(2, 64, 64), 64)
    xs, ys = _pixels(grid, 64, 64)
    in_x = ((xs >= 24) & (xs <= 39)).double().mean().item()
    in_y = ((ys >= 24) & (ys <= 39)).double().mean().item()
    input_fraction = 16 / 64
    assert in_x > 2 * input_fraction and in_y > 2 * input_fraction  # the region's share of the output grows
    assert in_x * in_y > 4 * input_fraction ** 2  # area share of the 2-D region


@pytest.mark.parametrize("n,s", [(64, 64), (128, 56)])
def test_local_magnification_is_bounded(n, s):
    """Magnification = uniform spacing / local spacing of the grid. The authors' clip keeps it below dense + 1
    (not dense: the first clip at dense·S/n is followed by adding back (S - Σp)/n to every bin)."""
    dense = 4.0
    point = torch.zeros(3, n, n)
    point[0, n // 2, n // 3] = 1.0                     # the worst case: all attention on one pixel
    maps = torch.cat((point, _peaked(1, n, n, (n // 4, n // 2, n // 4, n // 2)), torch.rand(1, n, n) ** 8))
    grid = sampling_grid(maps, s, dense=dense)
    xs, ys = _pixels(grid, n, n)
    uniform = (n - 1) / (s - 1)
    for v in (xs, ys):
        mag = uniform / v[:, 1:].diff(dim=1)  # skip the first step (the quirk's segment before pixel 0)
        assert mag.max().item() < dense + 1
    assert (uniform / xs[0, 1:].diff()).max().item() > dense  # the one-pixel map does exceed dense itself


def test_grid_is_monotonic_in_x_and_y():
    torch.manual_seed(2)
    maps = torch.cat((torch.rand(3, 40, 56) ** 6, _peaked(1, 40, 56), torch.zeros(1, 40, 56)))
    maps[0, :, 10:20] = 0  # zero-mass columns
    grid = sampling_grid(maps, (24, 32))
    assert grid.shape == (5, 24, 32, 2)
    assert (grid[..., 0].diff(dim=2) > 0).all() and (grid[..., 1].diff(dim=1) > 0).all()
    assert (grid[..., 0].diff(dim=1) == 0).all() and (grid[..., 1].diff(dim=2) == 0).all()  # separable


# ----------------------------------------------------------------------------------------- vs reference
@pytest.mark.parametrize("shape,out", [((3, 40, 40), 24), ((2, 30, 50), (20, 28)), ((2, 20, 20), 40),
                                       ((4, 64, 64), 64)])
def test_batched_equals_reference(shape, out):
    torch.manual_seed(3)
    maps = torch.rand(shape) ** 4
    maps[0, :, : shape[2] // 4] = 0                      # zero bins
    maps[-1] = 0
    maps[-1, shape[1] // 2, shape[2] // 2] = 5.0         # heavy clipping
    for dense in (4.0, 1.5):
        fast = sampling_grid(maps, out, dense=dense)
        slow = reference_sampling_grid(maps, out, dense=dense)
        assert slow.dtype == torch.float64 and fast.shape == slow.shape
        assert (fast.double() - slow).abs().max().item() < 1e-5


def test_float64_and_iters():
    maps = torch.rand(2, 20, 20, dtype=torch.float64) ** 3
    assert sampling_grid(maps, 16).dtype == torch.float64
    for iters in (1, 2, 7):
        assert torch.allclose(sampling_grid(maps, 16, iters=iters), reference_sampling_grid(maps, 16, iters=iters),
                              atol=1e-10)


# ----------------------------------------------------------------------------------------- point mapping
def test_points_there_and_back():
    torch.manual_seed(4)
    h, w, s = 48, 64, 40
    maps = torch.cat((torch.rand(1, h, w) ** 5, _peaked(1, h, w, (10, 20, 30, 50))))
    grid = sampling_grid(maps, s)
    pts = torch.rand(2, 50, 2) * (s - 1)
    orig = resampled_to_original(pts, grid, (h, w))
    back = original_to_resampled(orig, grid, (h, w))
    assert (back - pts).abs().max().item() < 0.5
    assert (back - pts).abs().max().item() < 1e-3  # piecewise-linear maps and their exact inverses
    opts = torch.stack((torch.rand(2, 50) * (w - 1), torch.rand(2, 50) * (h - 1)), dim=-1)
    again = resampled_to_original(original_to_resampled(opts, grid, (h, w)), grid, (h, w))
    assert (again - opts).abs().max().item() < 0.5


def test_integer_points_land_on_the_grid_and_on_the_image():
    h = w = 48
    grid = sampling_grid(_peaked(1, h, w, (20, 30, 20, 30)), 32)
    xs, ys = _pixels(grid, h, w)
    q, r = 17, 9
    p = resampled_to_original(torch.tensor([[[float(q), float(r)]]]), grid, (h, w))[0, 0]
    assert p[0].item() == pytest.approx(xs[0, q].item(), abs=1e-4)
    assert p[1].item() == pytest.approx(ys[0, r].item(), abs=1e-4)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    blob = torch.exp(-((xx - 22.0) ** 2 + (yy - 27.0) ** 2) / 8.0).expand(1, 1, h, w)
    out = resample(blob, grid)[0, 0]
    peak = divmod(int(out.argmax()), out.shape[1])  # (row, col) of the bright spot in the zoomed image
    mapped = original_to_resampled(torch.tensor([[[22.0, 27.0]]]), grid, (h, w))[0, 0]
    assert abs(mapped[0].item() - peak[1]) <= 1.0 and abs(mapped[1].item() - peak[0]) <= 1.0


def test_box_to_original():
    grid = sampling_grid(_peaked(2, 40, 40, (10, 20, 10, 20)), 30)
    boxes = torch.tensor([[[2.0, 3.0, 20.0, 25.0]], [[0.0, 0.0, 29.0, 29.0]]])
    mapped = box_to_original(boxes, grid, 40)
    assert mapped.shape == (2, 1, 4)
    corners = resampled_to_original(torch.tensor([[[2.0, 3.0], [20.0, 25.0]]]), grid[:1], 40)
    assert torch.allclose(mapped[0, 0], corners.reshape(-1))
    assert (mapped[..., 2] > mapped[..., 0]).all() and (mapped[..., 3] > mapped[..., 1]).all()


# ------------------------------------------------------------------------------------------ maps, devices
def test_structure_and_detail_maps():
    maps = torch.rand(2, 5, 6, 6)
    s = structure_map(maps, 24)
    assert s.shape == (2, 24, 24)
    summed = F.interpolate(maps.sum(1, keepdim=True), size=(24, 24), mode="bilinear", align_corners=True)[:, 0]
    assert torch.allclose(s, summed ** 2)
    assert torch.allclose(detail_map(maps, 24), summed)
    d = detail_map(maps, (24, 30), index=torch.tensor([1, 4]))
    assert d.shape == (2, 24, 30)
    assert torch.allclose(d[1], F.interpolate(maps[1:2, 4:5], size=(24, 30), mode="bilinear",
                                              align_corners=True)[0, 0])
    with pytest.raises(ValueError):
        structure_preserved(torch.rand(2, 3, 24, 24), torch.rand(2, 12, 12))


def test_no_gradient_through_the_grid():
    maps = torch.rand(1, 16, 16, requires_grad=True)
    img = torch.rand(1, 3, 16, 16, requires_grad=True)
    out, grid = structure_preserved(img, maps, out_size=12)
    assert not grid.requires_grad
    out.sum().backward()
    assert maps.grad is None and img.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
def test_cuda_matches_cpu():
    torch.manual_seed(5)
    maps = torch.rand(4, 64, 64) ** 4
    img = torch.rand(4, 3, 64, 64)
    cpu_out, cpu_grid = structure_preserved(img, maps, out_size=48)
    gpu_out, gpu_grid = structure_preserved(img.cuda(), maps.cuda(), out_size=48)
    assert gpu_grid.is_cuda and torch.allclose(gpu_grid.cpu(), cpu_grid, atol=1e-5)
    assert torch.allclose(gpu_out.cpu(), cpu_out, atol=1e-4)
