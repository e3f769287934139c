"""Overlay strips of explanation maps (RGB uint8, drawn with OpenCV): the photo with every map's peak and box in its
own colour and a legend, one overlay per map with its label and raw range, then a colour bar. Used by
``fieldmark explain`` and the demo's overlays."""

from __future__ import annotations

import cv2
import numpy as np

TILE = 224
#: The widest a tile gets: a 20000 x 2 px photo scaled to TILE px high would be a 2-million-pixel-wide strip.
MAX_TILE_WIDTH = 4 * TILE
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(img: np.ndarray, text: str, org: tuple[int, int], colour=(255, 255, 255), scale: float = 0.4) -> None:
    """Text on a dark box (an outline drawn thicker would advance differently and ghost)."""
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    x, y = org
    cv2.rectangle(img, (x - 2, y - h - 2), (x + w + 1, y + base), (20, 20, 20), -1)
    cv2.putText(img, text, org, FONT, scale, colour, 1, cv2.LINE_AA)


def _fit(img: np.ndarray) -> tuple[np.ndarray, float]:
    """``img`` scaled to TILE px high, or less when it would get wider than MAX_TILE_WIDTH; and the scale."""
    scale = min(TILE / img.shape[0], MAX_TILE_WIDTH / img.shape[1])
    size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR), scale


def _pad(tile: np.ndarray) -> np.ndarray:
    """A tile padded (dark, below) to TILE px high, for a very wide photo whose fit is lower."""
    return np.pad(tile, ((0, TILE - tile.shape[0]), (0, 0), (0, 0)), constant_values=32)


def _jet(m: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.applyColorMap((np.clip(m, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET),
                        cv2.COLOR_BGR2RGB)


def draw_strip(image: np.ndarray, mapset, parts, title: str) -> np.ndarray:
    """The overlay strip (RGB uint8) of one MapSet on ``image`` (the image the maps were computed on)."""
    base, s = _fit(image)
    tiles = []
    legend = _pad(base.copy())
    for k, part in enumerate(parts):
        c = PALETTE[k % len(PALETTE)]
        x0, y0, x1, y1 = (int(round((v + 0.5) * s)) for v in part.box)
        cv2.rectangle(legend, (x0, y0), (x1 - 1, y1 - 1), c, 1)
        cv2.circle(legend, (int(round((part.peak[0] + 0.5) * s)), int(round((part.peak[1] + 0.5) * s))), 4, c, -1)
        dup = f" = {part.duplicate_of + 1}" if part.duplicate_of is not None else ""
        _text(legend, f"{k + 1}: {part.name}{dup}", (4, 14 + 13 * k), c)
    tiles.append(legend)
    for k, part in enumerate(parts):
        m = cv2.resize(mapset.maps[k], (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
        tile = _pad(cv2.addWeighted(base, 0.5, _jet(m), 0.5, 0))
        c = PALETTE[k % len(PALETTE)]
        cv2.circle(tile, (int(round((part.peak[0] + 0.5) * s)), int(round((part.peak[1] + 0.5) * s))), 4, c, 2)
        lo, hi = mapset.raw_ranges[k]
        _text(tile, f"{k + 1}: {part.name}", (4, 14), c)
        _text(tile, f"raw {lo:.3g}..{hi:.3g}", (4, TILE - 6))
        tiles.append(tile)
    bar = np.zeros((TILE, 44, 3), np.uint8)
    grad = np.linspace(1, 0, TILE - 20, dtype=np.float32)[:, None].repeat(12, axis=1)
    bar[10:TILE - 10, 4:16] = _jet(grad)
    _text(bar, "1", (20, 16))
    _text(bar, "0.5", (18, TILE // 2 + 4))
    _text(bar, "0", (20, TILE - 8))
    tiles.append(bar)
    strip = np.concatenate([np.pad(t, ((0, 0), (0, 2), (0, 0))) for t in tiles], axis=1)
    head = np.full((20, strip.shape[1], 3), 32, np.uint8)
    _text(head, title, (4, 14), scale=0.45)
    return np.concatenate((head, strip), axis=0)
