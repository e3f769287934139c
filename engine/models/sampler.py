"""The attention-based sampler of TASN (Zheng et al., "Looking for the Devil in the Details: Learning Trilinear
Attention Sampling Network for Fine-grained Image Recognition", CVPR 2019, §3.2), in plain batched PyTorch.

An attention map (B, H, W) at the image's own size becomes a separable, monotone sampling grid (B, S, S, 2): the
map is reduced to an x and a y profile by *max*, each profile is read as a density, and the inverse of its
cumulative sum places the S output samples (dense where the attention is high, at most about ``dense`` times
the uniform rate, see below). ``grid_sample`` (bilinear, zeros, align_corners=True) then makes the zoomed image.

The recipe is docs/METHODS.md#tasn-sampler, which follows the authors' MXNet operator
(researchmm/tasn, tasn-mxnet/src/operator/contrib/att_sampler-inl.h). Points where the recipe is a choice:

* The cumulative sum starts at C[0] = 1, not p[0] (the operator fills its cumsum buffer with ``DType(1.0)``).
  With C[-1] = 0 the first output sample sits at position -1 (coordinate -1 - 2/(n-1)): a zero-padded first
  row/column. Consequence for a uniform map (tested): output pixel i >= 1 samples input position
  (i - 1)·(n - 1)/(S - 1) + d_i with d_i = (n - S)(S - i) / (S²(S - 1)) input pixels (n = map size >= S):
  the plain align_corners=True resize shifted by exactly one output pixel, exact when n == S, off by less than
  (n - S)/(S(S - 1)) pixel otherwise. There is no offset that makes it the unshifted plain resize.
* C[-1] = 0 is the reading of docs/METHODS.md#tasn-sampler. The MXNet operator reads ``mapxi[j - 1]`` at j = 0, i.e. one element
  before the sample's buffer: out of bounds for sample 0, the previous sample's C[n-1] (about S) for the others,
  so its first coordinate is batch-dependent (about -1 for b > 0). The authors' later PyTorch port
  (tasn-pytorch/src/att_grid_generator_cuda_kernel.cu) starts the cumsum at 0 and the search at j = 1, giving
  exactly -1. We keep the deterministic C[-1] = 0 (only outputs whose target t <= 1 are affected).
* The redistribution step divides by the profile's own number of bins (the operator's ``att_size``; the doc
  writes H_in, equal for the square maps the authors use). For non-square maps or outputs each axis is measured
  in units of its own uniform density S_axis/n_axis: the shared level m = min(max p_x, max p_y) and τ_d = dense
  are compared in those units. For square maps and outputs this is exactly the authors' arithmetic.
* The zoom bound is not exactly ``dense``: after the first clip at τ_d every bin gets (S - Σp)/n back, so the
  peak density ends at most at τ_d + S/n, i.e. a local magnification below ``dense + 1`` (tested).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

Size = int | tuple[int, int]


def _pair(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


def _check_map(attention: torch.Tensor) -> None:
    if attention.dim() != 3:
        raise ValueError(f"attention must be (B, H, W), got shape {tuple(attention.shape)}")
    if attention.shape[1] < 2 or attention.shape[2] < 2:
        raise ValueError(f"attention map {tuple(attention.shape[1:])} is too small: need at least 2x2")


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------- fast path
def _normalised_profile(p: torch.Tensor, total: int) -> torch.Tensor:
    """(B, n) non-negative profile → sums to ``total``. A zero (or non-finite) profile becomes uniform."""
    p = torch.nan_to_num(p, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)
    p = p / p.amax(dim=1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)  # in [0, 1]: the sum cannot overflow
    s = p.sum(dim=1, keepdim=True)
    uniform = torch.full_like(p, 1.0 / p.shape[1])
    return torch.where(s > 0, p / s.clamp_min(torch.finfo(p.dtype).tiny), uniform) * total


def _inverse_cdf(p: torch.Tensor, out: int) -> torch.Tensor:
    """Authors' inverse CDF (docs/METHODS.md#tasn-sampler, step 3): (B, n) densities → (B, out) coordinates in
    [-1-2/(n-1), 1]."""
    b, n = p.shape
    cdf = torch.cumsum(p, dim=1) - p[:, :1] + 1.0                      # C[0] = 1, C[k] = C[k-1] + p[k]
    step = cdf[:, -1:] / out
    t = torch.arange(out, device=p.device, dtype=p.dtype).unsqueeze(0) * step  # t_i = i·C[n-1]/S
    j = torch.searchsorted(cdf, t.contiguous(), right=False).clamp_(max=n - 1)  # first k with C[k] >= t
    padded = torch.cat((torch.zeros_like(cdf[:, :1]), cdf), dim=1)       # padded[k + 1] = C[k], padded[0] = C[-1] = 0
    c_j = cdf.gather(1, j)
    c_prev = padded.gather(1, j)
    # C[j] > C[j-1] always: j is the *first* index reaching t, so C[j-1] < t <= C[j] (or j = 0, where C[0]-C[-1] = 1)
    pos = j.to(p.dtype) + (t - c_j) / (c_j - c_prev).clamp_min(torch.finfo(p.dtype).tiny)
    return pos * (2.0 / (n - 1)) - 1.0


def _clip_and_redistribute(qs: list[torch.Tensor], dense: float, iters: int) -> list[torch.Tensor]:
    """Step 2 of docs/METHODS.md#tasn-sampler on profiles q (A, B, n) in units of their uniform density S/n (so
    Σq = n): clip them all at min(dense, m) in the first iteration and at m = min over the x and y profiles of their
    maxima afterwards, then add the deficit evenly: p += (S - Σp)/n ⇔ q += (n - Σq)/n, n = the profile's own
    bins."""
    for it in range(iters):
        m = torch.stack([q.amax(dim=2, keepdim=True).amin(dim=0, keepdim=True) for q in qs]).amin(dim=0)
        level = m.clamp(max=dense) if it == 0 else m  # (1, B, 1); τ_d = dense·S/n is ``dense`` in these units
        qs = [torch.minimum(q, level) for q in qs]
        qs = [q + (q.shape[2] - q.sum(dim=2, keepdim=True)) / q.shape[2] for q in qs]
    return qs


def sampling_grid(attention: torch.Tensor, out_size: Size, dense: float = 4.0, iters: int = 5) -> torch.Tensor:
    """Attention-based sampling grid of TASN (Zheng et al., CVPR 2019, §3.2, as the authors' operator computes it).

    ``attention``: (B, H, W) non-negative maps already at the image's size (negative / NaN values count as 0;
    an all-zero map gives the uniform grid). ``out_size``: S or (S_h, S_w). Returns (B, S_h, S_w, 2) with
    ``grid[b, r, q] = (x[b, q], y[b, r])`` for ``grid_sample(..., align_corners=True)``. Vectorised over the
    batch; the only Python loop is over the ``iters`` clip iterations. No gradient flows through it.
    """
    _check_map(attention)
    if dense <= 0 or iters < 1:
        raise ValueError(f"dense={dense} must be > 0 and iters={iters} >= 1")
    s_h, s_w = _pair(out_size)
    with torch.no_grad():
        a = attention.detach().to(_work_dtype(attention))
        b, n_y, n_x = a.shape
        p_x = a.amax(dim=1)  # max over the rows of each column: drives x
        p_y = a.amax(dim=2)  # max over the columns of each row: drives y
        if n_x == n_y and s_w == s_h:  # square: x and y go through every step as one (2B, n) batch
            (q,) = _clip_and_redistribute([_normalised_profile(torch.cat((p_x, p_y)), n_x).view(2, b, n_x)],
                                          dense, iters)
            x, y = _inverse_cdf(q.view(2 * b, n_x) * (s_w / n_x), s_w).view(2, b, s_w)
        else:
            # each axis with its own n and S: the shared clip level compares densities relative to uniform
            profiles = [_normalised_profile(p_x, n_x)[None], _normalised_profile(p_y, n_y)[None]]
            q_x, q_y = _clip_and_redistribute(profiles, dense, iters)
            x = _inverse_cdf(q_x[0] * (s_w / n_x), s_w)
            y = _inverse_cdf(q_y[0] * (s_h / n_y), s_h)
        grid = x.new_empty((b, s_h, s_w, 2))
        grid[..., 0] = x.unsqueeze(1)  # grid[b, r, q] = (x[b, q], y[b, r])
        grid[..., 1] = y.unsqueeze(2)
        return grid


def resample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sample ``images`` (B, C, H, W) at ``grid`` (B, S_h, S_w, 2): bilinear, zero padding, align_corners=True
    (the convention the grid is built for; align_corners=False would be off by up to a pixel)."""
    if images.dtype in (torch.float16, torch.bfloat16):  # a half-precision grid is off by up to a pixel
        return resample(images.float(), grid.float()).to(images.dtype)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def _resize_maps(maps: torch.Tensor, size: Size) -> torch.Tensor:
    return F.interpolate(maps, size=_pair(size), mode="bilinear", align_corners=True)


def structure_map(maps: torch.Tensor, size: Size) -> torch.Tensor:
    """TASN structure map: the sum of the C attention maps (B, C, h, w), resized to ``size`` (bilinear,
    align_corners=True), then squared (authors' code: squaring stresses the important regions). → (B, H, W)."""
    summed = _resize_maps(maps.sum(dim=1, keepdim=True), size).squeeze(1)
    return summed * summed


def detail_map(maps: torch.Tensor, size: Size, index: torch.Tensor | None = None) -> torch.Tensor:
    """TASN detail map: channel ``index[b]`` of sample b (training: one random channel per sample), or the
    channel sum when ``index`` is None (test time); resized to ``size``, not squared. → (B, H, W)."""
    if index is None:
        picked = maps.sum(dim=1, keepdim=True)
    else:
        index = torch.as_tensor(index, device=maps.device).long().view(-1)
        if index.numel() != maps.shape[0]:
            raise ValueError(f"detail_map needs one channel index per sample: {index.numel()} for {maps.shape[0]}")
        picked = maps[torch.arange(maps.shape[0], device=maps.device), index].unsqueeze(1)
    return _resize_maps(picked, size).squeeze(1)


def _sample(images: torch.Tensor, attention: torch.Tensor, out_size: Size | None, dense: float,
            iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    if images.dim() != 4 or attention.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"attention {tuple(attention.shape)} must be (B, H, W) at the image size "
                         f"{tuple(images.shape)}: resize it first (structure_map / detail_map do)")
    grid = sampling_grid(attention, images.shape[2:] if out_size is None else out_size, dense, iters)
    return resample(images, grid), grid


def structure_preserved(images: torch.Tensor, attention: torch.Tensor, out_size: Size | None = None,
                        dense: float = 4.0, iters: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Structure-preserved image I_s (TASN §3.2): ``images`` (B, C, H, W) resampled by an already prepared
    (B, H, W) map (use ``structure_map``: this function does not square). Returns (images (B, C, S, S), grid)."""
    return _sample(images, attention, out_size, dense, iters)


def detail_preserved(images: torch.Tensor, attention: torch.Tensor, out_size: Size | None = None,
                     dense: float = 4.0, iters: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Detail-preserved image I_d (TASN §3.2): as ``structure_preserved``, for a map from ``detail_map``."""
    return _sample(images, attention, out_size, dense, iters)


# ------------------------------------------------------------------------------------------ point mapping
def _to_pixels(g: torch.Tensor, n: int) -> torch.Tensor:
    return (g + 1.0) * 0.5 * (n - 1)  # align_corners=True: -1 → pixel 0, +1 → pixel n-1


def resampled_to_original(points: torch.Tensor, grid: torch.Tensor, in_size: Size) -> torch.Tensor:
    """(B, P, 2) points (x, y) in resampled pixels → original pixels, by bilinear interpolation of ``grid``
    (linear extrapolation past the edges). ``in_size``: the original (H, W)."""
    h, w = _pair(in_size)
    b, s_h, s_w, _ = grid.shape
    g = grid.to(points.dtype)
    x, y = points[..., 0], points[..., 1]
    x0 = x.floor().clamp(0, s_w - 2)
    y0 = y.floor().clamp(0, s_h - 2)
    fx, fy = (x - x0).unsqueeze(-1), (y - y0).unsqueeze(-1)
    flat = g.reshape(b, s_h * s_w, 2)
    base = (y0.long() * s_w + x0.long())

    def at(offset: int) -> torch.Tensor:
        return flat.gather(1, (base + offset).unsqueeze(-1).expand(-1, -1, 2))

    top = at(0) * (1 - fx) + at(1) * fx
    bottom = at(s_w) * (1 - fx) + at(s_w + 1) * fx
    v = top * (1 - fy) + bottom * fy
    return torch.stack((_to_pixels(v[..., 0], w), _to_pixels(v[..., 1], h)), dim=-1)


def _invert(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Inverse of the increasing piecewise-linear map index → v (B, S), at p (B, P); extrapolates linearly."""
    s = v.shape[1]
    k = (torch.searchsorted(v.contiguous(), p.contiguous(), right=True) - 1).clamp(0, s - 2)
    v0, v1 = v.gather(1, k), v.gather(1, k + 1)
    return k.to(p.dtype) + (p - v0) / (v1 - v0).clamp_min(1e-12)


def original_to_resampled(points: torch.Tensor, grid: torch.Tensor, in_size: Size) -> torch.Tensor:
    """(B, P, 2) points (x, y) in original pixels → resampled pixels. Exact inverse of
    ``resampled_to_original`` for the separable, monotone grids of ``sampling_grid`` (searchsorted + linear
    interpolation on the x and y coordinate vectors)."""
    h, w = _pair(in_size)
    g = grid.to(points.dtype)
    xs = _to_pixels(g[:, 0, :, 0], w)  # (B, S_w): x of each output column
    ys = _to_pixels(g[:, :, 0, 1], h)  # (B, S_h): y of each output row
    return torch.stack((_invert(xs, points[..., 0]), _invert(ys, points[..., 1])), dim=-1)


def box_to_original(boxes: torch.Tensor, grid: torch.Tensor, in_size: Size) -> torch.Tensor:
    """(B, K, 4) boxes x0, y0, x1, y1 in resampled pixels → original pixels (the grid is separable and
    monotone, so a box maps to a box through its two corners)."""
    b, k, _ = boxes.shape
    corners = resampled_to_original(boxes.reshape(b, 2 * k, 2), grid, in_size)
    return corners.reshape(b, k, 4)


# ------------------------------------------------------------------------------------------ slow reference
def _reference_profiles(p: np.ndarray, total: int) -> np.ndarray:
    p = np.where(np.isfinite(p), p, 0.0).clip(min=0.0)
    if p.max() <= 0:
        return np.full(len(p), total / len(p))
    p = p / p.max()
    return p / p.sum() * total


def _reference_inverse_cdf(p: list[float], out: int) -> list[float]:
    """The operator's two-pointer loop, literally (att_sampler-inl.h), with C[-1] = 0 spelled out: Python's
    C[-1] would silently read the last element."""
    n = len(p)
    cdf = [1.0] + [0.0] * (n - 1)
    for k in range(1, n):
        cdf[k] = cdf[k - 1] + p[k]
    step = cdf[n - 1] / out
    coords, i, j = [], 0, 0
    while i < out:
        if cdf[j] >= i * step:
            prev = cdf[j - 1] if j > 0 else 0.0
            coords.append((j + (i * step - cdf[j]) / (cdf[j] - prev)) * 2.0 / (n - 1) - 1.0)
            i += 1
        else:
            j += 1
    return coords


def reference_sampling_grid(attention: torch.Tensor, out_size: Size, dense: float = 4.0,
                            iters: int = 5) -> torch.Tensor:
    """Slow, obviously-correct float64 reference of ``sampling_grid``: per sample, per row and per bin loops
    written as docs/METHODS.md#tasn-sampler reads. For tests and the benchmark only. Returns a float64 CPU grid."""
    _check_map(attention)
    s_h, s_w = _pair(out_size)
    maps = attention.detach().cpu().double().numpy()
    out = np.zeros((maps.shape[0], s_h, s_w, 2))
    for b, a in enumerate(maps):
        n_y, n_x = a.shape
        p_y = _reference_profiles(np.array([a[r, :].max() for r in range(n_y)]), s_h)
        p_x = _reference_profiles(np.array([a[:, q].max() for q in range(n_x)]), s_w)
        p_y, p_x = [float(v) for v in p_y], [float(v) for v in p_x]
        for it in range(iters):
            m = min(max(p_x) * n_x / s_w, max(p_y) * n_y / s_h)
            level = min(dense, m) if it == 0 else m
            p_x = [min(v, level * s_w / n_x) for v in p_x]
            p_y = [min(v, level * s_h / n_y) for v in p_y]
            dx, dy = (s_w - sum(p_x)) / n_x, (s_h - sum(p_y)) / n_y
            p_x = [v + dx for v in p_x]
            p_y = [v + dy for v in p_y]
        xs, ys = _reference_inverse_cdf(p_x, s_w), _reference_inverse_cdf(p_y, s_h)
        out[b, :, :, 0] = np.asarray(xs)[None, :]  # grid[r, q] = (x[q], y[r])
        out[b, :, :, 1] = np.asarray(ys)[:, None]
    return torch.from_numpy(out)


__all__ = ["sampling_grid", "resample", "structure_map", "detail_map", "structure_preserved", "detail_preserved",
           "resampled_to_original", "original_to_resampled", "box_to_original", "reference_sampling_grid"]
