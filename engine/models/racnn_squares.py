"""RA-CNN's squares (engine.models.racnn, docs/METHODS.md#racnn): a square is (tx, ty, tl), its centre and half side
as fractions of the side of the image it is cut from. The boxcar mask that cuts it, the crop zoomed to the next
scale, the composition of a square of a crop with the crop's own, the highest-response square the APNs start from,
the square maps the parts read, and the authors' gradient of a crop with respect to its square
(:func:`thirds_gradient`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

STEEPNESS = 10.0  # k of the boxcar's logistic functions, per pixel (the paper's k = 10)
INIT_HALF = 0.25  # the APN's first square: half the input's side (the paper's initialisation)


# ------------------------------------------------------------------------------------------------ the square
def boxcar_mask(squares: torch.Tensor, size: tuple[int, int], k: float = STEEPNESS) -> torch.Tensor:
    """The paper's boxcar M(x, y) = [h(x − x_l) − h(x − x_r)]·[h(y − y_t) − h(y − y_b)], h(z) = 1/(1 + e^(−kz)),
    of ``squares`` (B, 3) = (tx, ty, tl) as fractions of the side, on an H × W grid: (B, H, W). Pixel centres are
    at x = 0..W−1 and the image spans −0.5..W−0.5, so the square's centre is at tx·W − 0.5 and its half side tl·W
    pixels (per axis: a square of the normalised frame)."""
    h, w = size
    sq = squares.float()
    xs = torch.arange(w, device=sq.device, dtype=sq.dtype)
    ys = torch.arange(h, device=sq.device, dtype=sq.dtype)

    def profile(coords: torch.Tensor, centre: torch.Tensor, half: torch.Tensor, n: int) -> torch.Tensor:
        c, r = (centre * n - 0.5)[:, None], (half * n)[:, None]
        return torch.sigmoid(k * (coords - (c - r))) - torch.sigmoid(k * (coords - (c + r)))

    mx = profile(xs, sq[:, 0], sq[:, 2], w)
    my = profile(ys, sq[:, 1], sq[:, 2], h)
    return my[:, :, None] * mx[:, None, :]


def crop_grid(squares: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The ``grid_sample`` grid (B, H, W, 2) that zooms each square to H × W (``align_corners=False``): output
    pixel j samples the input at tx − tl + 2·tl·(j + 0.5)/W of its side."""
    sq = squares.detach().float()
    theta = torch.zeros(len(sq), 2, 3, device=sq.device, dtype=sq.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 2 * sq[:, 2]
    theta[:, 0, 2], theta[:, 1, 2] = 2 * sq[:, 0] - 1, 2 * sq[:, 1] - 1
    return F.affine_grid(theta, [len(sq), 1, *size], align_corners=False)


def zoom(images: torch.Tensor, squares: torch.Tensor, k: float = STEEPNESS,
         size: tuple[int, int] | None = None) -> torch.Tensor:
    """The paper's attention crop: the images times the boxcar mask of ``squares`` (gradient to the squares goes
    through the mask), zoomed to ``size`` (default the images' own) by bilinear interpolation on a constant grid."""
    size = tuple(size or images.shape[-2:])
    masked = images * boxcar_mask(squares, tuple(images.shape[-2:]), k).to(images.dtype)[:, None]
    grid = crop_grid(squares, size).to(images.dtype)
    return F.grid_sample(masked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """A square ``inner`` (B, 3) of the crop of square ``outer`` (B, 3), in the frame ``outer`` was cut from."""
    left, top, span = outer[:, 0] - outer[:, 2], outer[:, 1] - outer[:, 2], 2 * outer[:, 2]
    return torch.stack((left + span * inner[:, 0], top + span * inner[:, 1], span * inner[:, 2]), dim=1)


def response_square(features: torch.Tensor, half: float = INIT_HALF) -> torch.Tensor:
    """The APN's target at initialisation: the square of half side ``half`` centred on the cell of highest total
    response of ``features`` (B, C, h, w) (the paper: the highest response of the last conv layer, half the image's
    side), moved inside the input when it would stick out. (B, 3), no gradient."""
    a = features.detach().float().clamp_min(0).sum(dim=1)
    b, h, w = a.shape
    idx = a.flatten(1).argmax(dim=1)
    tx = ((idx % w).float() + 0.5) / w
    ty = (torch.div(idx, w, rounding_mode="floor").float() + 0.5) / h
    centre = torch.stack((tx, ty), dim=1).clamp(half, 1 - half)
    return torch.cat((centre, centre.new_full((b, 1), half)), dim=1)


def square_maps(squares: torch.Tensor, size: tuple[int, int], k: float = STEEPNESS) -> torch.Tensor:
    """Maps of squares (B, S, 3) on an H × W grid (B, S, H, W): each square's boxcar mask times a tent
    1 − ½·d (d the Chebyshev distance from the centre in half sides), so that the map's peak is the square's
    centre and the region above half the peak is the square (what :mod:`engine.maps.parts` reads as a part)."""
    b, n, _ = squares.shape
    h, w = size
    flat = squares.reshape(b * n, 3).float()
    u = (torch.arange(w, device=flat.device, dtype=flat.dtype) + 0.5) / w
    v = (torch.arange(h, device=flat.device, dtype=flat.dtype) + 0.5) / h
    half = flat[:, 2].clamp_min(1e-6)[:, None]
    dx = ((u[None] - flat[:, :1]).abs() / half)[:, None, :]
    dy = ((v[None] - flat[:, 1:2]).abs() / half)[:, :, None]
    tent = (1 - 0.5 * torch.maximum(dx, dy)).clamp_min(0)
    return (boxcar_mask(flat, size, k) * tent).reshape(b, n, h, w)


# ------------------------------------------------------------------------------------------------ the authors' gradient
def thirds_gradient(grad: torch.Tensor) -> torch.Tensor:
    """The gradient of a loss with respect to the squares (B, 3) from its gradient ``grad`` (B, C, H, W) on their
    zoomed crops, by the rule of the RA-CNN authors' APN layer as their public ports keep it: with the crop cut into
    thirds along each axis and e the gradient's energy Σ_c grad² per pixel, descent moves the centre towards the
    third (right or left, bottom or top) of more energy and grows the half side when the outer ring has more energy
    than the middle cell (shrinks it, zooming in, when the middle has more). Here each region's energy is its mean
    per pixel, divided by the crop's mean, so the step is a share from −2 to 2 whatever the loss's scale and the crop's
    size (the ports sum raw energies, so their steps follow the loss's scale and the ring's 8 cells outweigh the
    middle's 1). A crop with no gradient (its ranking term inactive) gets 0. Divided by B, as a batch mean's."""
    e = grad.detach().float().pow(2).sum(dim=1)  # (B, H, W)
    b, h, w = e.shape
    th, tw = max(1, h // 3), max(1, w // 3)
    total = e.mean(dim=(1, 2))
    left, right = e[:, :, :tw].mean(dim=(1, 2)), e[:, :, w - tw:].mean(dim=(1, 2))
    top, bottom = e[:, :th].mean(dim=(1, 2)), e[:, h - th:].mean(dim=(1, 2))
    middle = e[:, th:h - th, tw:w - tw]
    n_mid = middle.shape[1] * middle.shape[2]
    centre = middle.sum(dim=(1, 2)) / max(n_mid, 1)
    ring = (e.sum(dim=(1, 2)) - middle.sum(dim=(1, 2))) / max(h * w - n_mid, 1)
    step = torch.stack((right - left, bottom - top, ring - centre), dim=1)
    safe = torch.where(total > 0, total, torch.ones_like(total))[:, None]
    return torch.where(total[:, None] > 0, -step / safe, torch.zeros_like(step)) / b


class _SquareGradient(torch.autograd.Function):
    """The crop unchanged forward; backward, the crop's gradient passed on as it is and the squares' gradient by
    :func:`thirds_gradient`."""

    @staticmethod
    def forward(ctx, crop: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
        ctx.dtype = squares.dtype
        return crop.view_as(crop)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grad, thirds_gradient(grad).to(ctx.dtype)


def with_square_gradient(crop: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
    """``crop`` (cut with ``squares`` as constants) whose backward also gives ``squares`` the authors' gradient
    (:func:`thirds_gradient`) instead of the boxcar mask's."""
    return _SquareGradient.apply(crop, squares)
