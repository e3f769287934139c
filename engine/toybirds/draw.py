"""Drawing of one toy bird on a cluttered background (see :mod:`engine.toybirds.dataset` for the data set).

The bird is built in a canonical frame: facing right, y down, unit = the body's half length, origin = the
body centre. A pose (centre, scale, rotation, horizontal flip) maps it to the image; the CUB keypoints go through
the same map, so they sit exactly where the parts are drawn. Body, background and clutter colours are muted
(HSV saturation <= 0.35 before noise); field marks are fully saturated hues that nothing else uses.
"""

from __future__ import annotations

import colorsys
import logging
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

log = logging.getLogger(__name__)

#: CUB-200-2011's 15 parts, in its order (part id = index + 1).
PARTS: tuple[str, ...] = (
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing",
    "nape", "right eye", "right leg", "right wing", "tail", "throat",
)
#: Parts seen from one side only: a bird facing right shows its right side.
SIDED = ("eye", "wing", "leg")
MAX_MUTED_SATURATION = 0.35
SHIFT = 4  # sub-pixel bits for cv2 drawing
#: Marks cut to the bird's outline (the union of these convex pieces) so that they never stick out.
CLIPPED = ("breast_spot", "throat_patch", "nape_collar")
OUTLINE = ("body", "neck", "head")
_ONE = 1 << SHIFT


@dataclass(frozen=True)
class MarkSpec:
    """A field mark: a saturated colour on one CUB part (``side`` parts sit on the visible eye/wing/leg)."""

    name: str
    part: str  # CUB part name; for eye/wing/leg the side shown unflipped ("right ...")
    hue: float  # degrees
    adjective: str  # used in class names

    @property
    def colour(self) -> tuple[int, int, int]:
        r, g, b = colorsys.hsv_to_rgb(self.hue / 360.0, 1.0, 1.0)
        return round(r * 255), round(g * 255), round(b * 255)

    @property
    def parts(self) -> tuple[str, ...]:
        """CUB part names the mark can sit on (both sides for eye, wing and leg)."""
        for side in SIDED:
            if self.part.endswith(side):
                return (f"left {side}", f"right {side}")
        return (self.part,)


#: Field marks, most visible first (class design prefers the first ones as the differing mark).
MARKS: dict[str, MarkSpec] = {m.name: m for m in (
    MarkSpec("crown_patch", "crown", 220, "Blue_crowned"),
    MarkSpec("wing_bar", "right wing", 185, "Cyan_winged"),
    MarkSpec("breast_spot", "breast", 28, "Orange_breasted"),
    MarkSpec("tail_tip", "tail", 308, "Magenta_tailed"),
    MarkSpec("eye_ring", "right eye", 95, "Spectacled"),
    MarkSpec("throat_patch", "throat", 268, "Violet_throated"),
    MarkSpec("nape_collar", "nape", 148, "Green_collared"),
    MarkSpec("beak_colour", "beak", 0, "Red_billed"),
    MarkSpec("leg_colour", "right leg", 55, "Yellow_legged"),
)}


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB float colour (0..255) from hue in degrees, saturation and value in 0..1."""
    return np.array(colorsys.hsv_to_rgb((h % 360.0) / 360.0, s, v), np.float32) * 255.0


def _ellipse(cx: float, cy: float, ax: float, ay: float, angle: float = 0.0, n: int = 36) -> np.ndarray:
    """Polygon of an ellipse; ``angle`` in degrees as cv2.ellipse (clockwise on screen)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    x, y = ax * np.cos(t), ay * np.sin(t)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _cap(hx: float, hy: float, r: float, ux: float, uy: float, d: float, n: int = 24) -> np.ndarray:
    """The segment of a circle beyond the chord at distance ``d`` along the unit direction (ux, uy)."""
    a0, half = np.arctan2(uy, ux), np.arccos(d / r)
    t = np.linspace(a0 - half, a0 + half, n)
    return np.stack([hx + r * np.cos(t), hy + r * np.sin(t)], 1)


def _lerp(p: np.ndarray, q: np.ndarray, t: float) -> np.ndarray:
    return p + (q - p) * t


def bird_shapes(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, tuple[float, float]]]:
    """Canonical shapes (polygons; legs as polylines) and keypoints of one bird, with jittered proportions."""
    jb, jh, jt, jk, jl = rng.uniform(0.9, 1.1, 5)
    ay = 0.62 * jb
    r = 0.42 * jh
    hx, hy = 0.98, -0.66 - (ay - 0.62) * 0.6
    H = np.array([hx, hy])
    sh: dict[str, np.ndarray] = {}
    tail_len = 1.05 * jt
    t0, t1 = np.array([-0.80, -0.05]), np.array([-0.72, 0.24])
    t3, t2 = np.array([-0.78 - tail_len, 0.10]), np.array([-0.70 - tail_len, 0.56])
    sh["tail"] = np.stack([t0, t1, t2, t3])
    sh["tail_tip"] = np.stack([_lerp(t0, t3, 0.56), _lerp(t1, t2, 0.56), t2, t3])
    legs = {}
    for name, x0, dx in (("near", 0.16, 0.0), ("far", -0.14, -0.02)):
        top, foot = np.array([x0, 0.40]), np.array([x0 + 0.06 + dx, 0.40 + 0.66 * jl])
        legs[name] = foot
        sh[f"{name}_leg"] = np.stack([top, foot])
        sh[f"{name}_toes"] = np.stack([foot + (0.26, 0.05), foot, foot + (-0.16, 0.07)])
    sh["body"] = _ellipse(0, 0, 1.0, ay, -12, 48)
    sh["belly"] = _ellipse(0.12, 0.20 * jb, 0.78, 0.40 * jb, -12, 40)
    sh["breast_spot"] = _ellipse(0.58, 0.02, 0.31, 0.26, -20)
    sh["neck"] = _ellipse(hx - 0.12, hy + 0.36, 0.40, 0.33, -40)
    sh["wing"] = _ellipse(-0.22, -0.14, 0.80, 0.36 * jb, -14, 40)
    sh["wing_bar"] = _ellipse(-0.17, -0.15, 0.62, 0.14, -14)
    w = np.radians(-14)
    seg = np.array([[x, dy] for dy in (-0.10, 0.02, 0.14) for x in (-0.35, -0.92)])  # wing frame
    sh["primaries"] = seg @ np.array([[np.cos(w), np.sin(w)], [-np.sin(w), np.cos(w)]]) + (-0.22, -0.14)
    sh["head"] = _ellipse(hx, hy, r, r, 0, 40)
    sh["nape_collar"] = _ellipse(hx - 0.78 * r, hy + 0.38 * r, 0.17, 0.40, -35)
    sh["crown_patch"] = _cap(hx, hy, r, -0.26, -0.966, 0.22 * r)
    sh["throat_patch"] = _ellipse(hx + 0.30 * r, hy + 0.95 * r, 0.28, 0.19, -40)
    eye = H + (0.30 * r, -0.15 * r)
    sh["eye_ring"] = _ellipse(eye[0], eye[1], 0.23, 0.23, 0, 28)
    sh["eye"] = _ellipse(eye[0], eye[1], 0.085, 0.085, 0, 16)
    base_top, base_bot = H + (0.70 * r, -0.44 * r), H + (0.80 * r, 0.38 * r)
    tip = H + (r + 0.62 * jk, 0.0)
    sh["beak_colour"] = np.stack([base_top, tip, base_bot])
    kp = {
        "back": (-0.45, -0.45), "belly": (0.05, 0.42 * jb), "breast": (0.58, 0.02),
        "crown": tuple(H + (-0.16 * r, -0.76 * r)), "forehead": tuple(H + (0.55 * r, -0.62 * r)),
        "nape": (hx - 0.72 * r, hy + 0.32 * r), "throat": (hx + 0.30 * r, hy + 0.86 * r),
        "beak": tuple(_lerp((base_top + base_bot) / 2, tip, 0.35)),
        "eye": tuple(eye), "wing": (-0.17, -0.15), "leg": tuple(_lerp(sh["near_leg"][0], legs["near"], 0.72)),
        "tail": tuple(_lerp((t0 + t1) / 2, (t2 + t3) / 2, 0.82)),
    }
    return sh, kp


def _muted(rng: np.random.Generator, s_max: float = MAX_MUTED_SATURATION, v: tuple[float, float] = (0.3, 0.85),
           hue: float | None = None) -> np.ndarray:
    h = rng.uniform(0, 360) if hue is None else hue
    return hsv(h, rng.uniform(0.03, s_max), rng.uniform(*v))


def limit_saturation(img: np.ndarray, s_max: float = MAX_MUTED_SATURATION) -> np.ndarray:
    """Float RGB (0..255) with HSV saturation cut to ``s_max``; hue and value kept."""
    h = cv2.cvtColor(img.astype(np.float32) * (1 / 255), cv2.COLOR_RGB2HSV)
    np.minimum(h[..., 1], s_max, out=h[..., 1])
    return cv2.cvtColor(h, cv2.COLOR_HSV2RGB) * 255


def make_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted, textured, cluttered background, float32 RGB (size, size, 3) in 0..255."""
    kind = rng.integers(4)
    hue = (rng.uniform(60, 150), rng.uniform(20, 45), rng.uniform(190, 230), rng.uniform(0, 360))[kind]
    c1, c2 = _muted(rng, hue=hue), _muted(rng, hue=hue + rng.uniform(-50, 50))
    low = cv2.resize(rng.random((4, 4), np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    img = c1 + (c2 - c1) * np.clip(low, 0, 1)[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(4, 12)):
        what = rng.integers(4)
        x, y = rng.uniform(-0.1, 1.1, 2) * size
        colour = tuple(float(c) for c in _muted(rng, v=(0.15, 0.9)))
        if what == 0:  # branch
            ang, length = rng.uniform(0, np.pi), rng.uniform(0.3, 1.0) * size
            p2 = (x + np.cos(ang) * length, y + np.sin(ang) * length)
            cv2.line(img, _pt(x, y), _pt(*p2), colour, int(rng.integers(2, max(3, size // 20))), cv2.LINE_AA, SHIFT)
        elif what == 1:  # leaf / stone
            e = _ellipse(x, y, *(rng.uniform(0.03, 0.12, 2) * size), rng.uniform(0, 180), 24)
            cv2.fillPoly(img, [_fix(e)], colour, cv2.LINE_AA, SHIFT)
        elif what == 2:  # grass blades
            for _ in range(rng.integers(3, 9)):
                bx = x + rng.uniform(-0.1, 0.1) * size
                top = (bx + rng.uniform(-0.1, 0.1) * size, size - rng.uniform(0.1, 0.5) * size)
                cv2.line(img, _pt(bx, size), _pt(*top), colour, int(rng.integers(1, 3)), cv2.LINE_AA, SHIFT)
        else:  # bokeh blob
            cv2.circle(img, _pt(x, y), int(rng.uniform(0.02, 0.1) * size) * _ONE, colour, -1, cv2.LINE_AA, SHIFT)
    img = img.astype(np.float32)
    tex = cv2.resize(rng.standard_normal((size // 8, size // 8), np.float32), (size, size),
                     interpolation=cv2.INTER_CUBIC)
    grain = cv2.resize(rng.standard_normal((size // 2, size // 2), np.float32), (size, size),
                       interpolation=cv2.INTER_LINEAR)
    img *= (1.0 + rng.uniform(0.04, 0.12) * tex + rng.uniform(0.02, 0.08) * grain)[..., None]
    return limit_saturation(np.clip(img, 0, 255, out=img))


def _fix(pts: np.ndarray) -> np.ndarray:
    return np.round(pts * _ONE).astype(np.int32)


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x * _ONE), round(y * _ONE)


def _colour(c: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.clip(c, 0, 255))


def _paint_bird(img: np.ndarray, tr: Callable[[np.ndarray], np.ndarray], shapes: dict[str, np.ndarray],
                colours: dict[str, np.ndarray], kps: dict[str, tuple[float, float]], scale: float, leg_w: int) -> None:
    """Draw the bird onto ``img`` (in place): the legs, far one darker, then the shapes back to front (the marks
    clipped to the body outline), then the eye's highlight; ``tr`` maps shape coordinates to pixels."""
    leg_c = colours.get("leg_colour")
    for side, shade in (("far", 0.7), ("near", 1.0)):
        col = _colour(leg_c * shade)
        cv2.polylines(img, [_fix(tr(shapes[f"{side}_leg"]))], False, col, leg_w, cv2.LINE_AA, SHIFT)
        cv2.polylines(img, [_fix(tr(shapes[f"{side}_toes"]))], False, col, max(1, leg_w - 1), cv2.LINE_AA, SHIFT)
    order = ("tail", "tail_tip", "body", "belly", "neck", "breast_spot", "wing", "wing_bar", "primaries",
             "head", "nape_collar", "crown_patch", "throat_patch", "eye_ring", "eye", "beak_colour")
    for name in order:
        if name not in colours:
            continue
        pts = _fix(tr(shapes[name]))
        if name in CLIPPED:
            poly = tr(shapes[name]).astype(np.float32)
            for piece in OUTLINE:
                area, cut = cv2.intersectConvexConvex(poly, tr(shapes[piece]).astype(np.float32))
                if cut is not None and area > 0:
                    cv2.fillPoly(img, [_fix(cut.reshape(-1, 2))], _colour(colours[name]), cv2.LINE_AA, SHIFT)
        elif name == "primaries":
            cv2.polylines(img, list(pts.reshape(-1, 2, 2)), False, _colour(colours[name]), 1, cv2.LINE_AA, SHIFT)
        else:
            cv2.fillPoly(img, [pts], _colour(colours[name]), cv2.LINE_AA, SHIFT)
    eye = tr(np.array([kps["eye"]]))[0] + np.array([-0.03, -0.03]) * scale
    cv2.circle(img, _pt(*eye), max(_ONE // 2, round(0.03 * scale * _ONE)), (235, 235, 235), -1, cv2.LINE_AA, SHIFT)


def _keypoints(tr: Callable[[np.ndarray], np.ndarray], kps: dict[str, tuple[float, float]],
               flip: bool) -> dict[str, tuple[float, float, int]]:
    """{CUB part: (x, y, visible)} in pixels; the far side's sided parts are hidden, at (0, 0, 0)."""
    near, far = ("left", "right") if flip else ("right", "left")
    keypoints: dict[str, tuple[float, float, int]] = {}
    for part in PARTS:
        side, _, base = part.partition(" ")
        if base in SIDED:
            if side == far:
                keypoints[part] = (0.0, 0.0, 0)
                continue
            part_kp = kps[base]
        else:
            part_kp = kps[part]
        x, y = tr(np.array([part_kp]))[0]
        keypoints[part] = (float(x), float(y), 1)
    return keypoints


def _bird_extent(tr: Callable[[np.ndarray], np.ndarray], shapes: dict[str, np.ndarray], leg_w: int,
                 size: int) -> tuple[np.ndarray, np.ndarray]:
    """The drawn bird's tight box as (x0, y0), (x1, y1) in pixels, within the image."""
    pts = tr(np.concatenate([s for k, s in shapes.items() if not k.endswith(("leg", "toes")) and k not in CLIPPED]))
    leg_pts = tr(np.concatenate([shapes[k] for k in ("near_leg", "far_leg", "near_toes", "far_toes")]))
    lo = np.minimum(pts.min(0), leg_pts.min(0) - leg_w / 2)
    hi = np.maximum(pts.max(0), leg_pts.max(0) + leg_w / 2)
    return np.clip(lo, 0, size - 1), np.clip(hi, 0, size - 1)


def draw_bird(
    rng: np.random.Generator,
    size: int,
    marks: tuple[str, ...] | list[str] | frozenset[str] = (),
    *,
    flip: bool | None = None,
    angle: float | None = None,
    scale: float | None = None,
    center: tuple[float, float] | None = None,
    background: bool = True,
) -> tuple[np.ndarray, dict[str, tuple[float, float, int]], tuple[float, float, float, float]]:
    """Draw one bird with the given field marks on a random background.

    Pose arguments left None are drawn from ``rng``; the random numbers used depend neither on which are given
    nor on ``marks``, so the same seed with another pose or other marks gives the same bird and scene. ``angle`` is in degrees, counter-clockwise on
    screen, about the body centre ``center`` (pixels); ``scale`` is the body's half length in pixels;
    ``flip`` mirrors the bird to face left. Returns (RGB uint8 image, {CUB part: (x, y, visible)} with hidden
    parts at (0, 0, 0), tight bounding box (x, y, w, h) of the drawn bird).
    """
    unknown = set(marks) - set(MARKS)
    if unknown:
        raise ValueError(f"unknown field marks {sorted(unknown)}; known: {list(MARKS)}")
    shapes, kps = bird_shapes(rng)
    r_flip, r_angle, r_scale, r_cx, r_cy = rng.random(5)
    body = _muted(rng, v=(0.35, 0.8))
    colours = {
        "body": body, "neck": body, "head": body * rng.uniform(0.85, 1.1),
        "belly": np.minimum(body * 0.6 + 255 * 0.4 * rng.uniform(0.5, 1.0), 255),
        "wing": body * rng.uniform(0.55, 0.8), "tail": body * rng.uniform(0.5, 0.75),
        "primaries": body * 0.35, "eye": np.full(3, 20.0, np.float32),
        "beak_colour": _muted(rng, 0.2, (0.15, 0.45)), "leg_colour": _muted(rng, 0.2, (0.2, 0.45)),
    }
    for m, spec in MARKS.items():  # drawn for every mark, so that the scene does not depend on the marks
        s_v = rng.uniform((0.9, 0.88), 1.0)
        if m in marks:
            colours[m] = hsv(spec.hue, *s_v)
    gain, grad, tint, noise = rng.uniform(0.72, 1.18), rng.uniform(-0.35, 0.35, 2), rng.uniform(0.97, 1.03, 3), \
        rng.uniform(1.5, 6.0)
    flip = bool(r_flip < 0.5) if flip is None else bool(flip)
    angle = float(-25 + 50 * r_angle) if angle is None else float(angle)
    scale = float(size * (0.16 + 0.05 * r_scale)) if scale is None else float(scale)
    a = np.radians(angle)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) * scale
    if flip:
        rot = rot @ np.diag([-1.0, 1.0])
    extent = np.concatenate([p for k, p in shapes.items() if k not in CLIPPED]) @ rot.T
    if center is None:  # anywhere the whole bird fits, with a small margin
        lo, hi = -extent.min(0) + 0.03 * size, size - extent.max(0) - 0.03 * size
        center = (float(lo[0] + (hi[0] - lo[0]) * r_cx) if hi[0] > lo[0] else size / 2,
                  float(lo[1] + (hi[1] - lo[1]) * r_cy) if hi[1] > lo[1] else size / 2)
    c = np.asarray(center, np.float64)

    def tr(p: np.ndarray) -> np.ndarray:
        return np.asarray(p, np.float64) @ rot.T + c

    img = make_background(rng, size).astype(np.uint8) if background else np.full((size, size, 3), 200, np.uint8)
    leg_w = max(2, round(0.13 * scale))
    _paint_bird(img, tr, shapes, colours, kps, scale, leg_w)
    ramp = np.arange(size, dtype=np.float32) / size - 0.5  # lighting: gain, gradient, tint; then sensor noise
    light = gain * (1 + grad[0] * ramp[None, :, None] + grad[1] * ramp[:, None, None]) * tint.astype(np.float32)
    out = img * light
    out += rng.standard_normal(out.shape, np.float32) * np.float32(noise) + np.float32(0.5)
    rgb = np.clip(out, 0, 255, out=out).astype(np.uint8)

    keypoints = _keypoints(tr, kps, flip)
    lo, hi = _bird_extent(tr, shapes, leg_w, size)
    return rgb, keypoints, (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))
