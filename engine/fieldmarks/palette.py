"""The part colours: one place, so that the app's part map, its legend and the field guide agree.

The first seven are Okabe and Ito's colour-blind-safe palette ("Color Universal Design", 2008) without its black
(invisible on dark plumage); parts 8 and on take Paul Tol's "muted" qualitative scheme (also distinguishable with
the common colour-vision deficiencies), then repeat.
"""

from __future__ import annotations

#: RGB 0..255, part k takes ``PART_COLOURS[k % len(PART_COLOURS)]``.
PART_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),  # orange
    (86, 180, 233),  # sky blue
    (0, 158, 115),  # bluish green
    (240, 228, 66),  # yellow
    (0, 114, 178),  # blue
    (213, 94, 0),  # vermillion
    (204, 121, 167),  # reddish purple
    (51, 34, 136),  # indigo (Tol muted from here)
    (136, 204, 238),  # cyan
    (68, 170, 153),  # teal
    (17, 119, 51),  # green
    (153, 153, 51),  # olive
    (221, 204, 119),  # sand
    (204, 102, 119),  # rose
    (136, 34, 85),  # wine
    (170, 68, 153),  # purple
)


def part_colour(index: int) -> tuple[int, int, int]:
    """RGB of part ``index`` (0-based)."""
    return PART_COLOURS[index % len(PART_COLOURS)]


def part_hex(index: int) -> str:
    """``#rrggbb`` of part ``index`` (0-based)."""
    return "#{:02x}{:02x}{:02x}".format(*part_colour(index))


__all__ = ["PART_COLOURS", "part_colour", "part_hex"]
