"""Compare's separation rows as widgets, without a run: a new pair refills the rows of the last (building them anew
stalled the window), and nothing of the last pair shows while the next is being ranked."""

from __future__ import annotations

import numpy as np

from app.compare.rows import SeparationView
from app.compare.separation import PairSeparation, PartCrop, PartRow


def pair(a: int, b: int, crops: int, seed: int) -> PairSeparation:
    """Four parts of separations 2.0, 1.5, ... with ``crops`` crops a species of one grey level each."""
    rng = np.random.default_rng(seed)

    def crop(i: int) -> PartCrop:
        return PartCrop(np.full((144, 144, 3), int(rng.integers(0, 255)), np.uint8), 1.0 - i, f"{a}-{b}-{i}.jpg", True)

    rows = [PartRow(k, f"part {k + 1}", 2.0 - k / 2, 1.0, -1.0, [crop(i) for i in range(crops)],
                    [crop(i) for i in range(crops - 1)]) for k in range(4)]
    return PairSeparation("/runs/r1", a, b, crops, rows, 4, 20, 18)


def grey(label) -> int:
    return label.pixmap().toImage().pixelColor(5, 5).red()


def test_a_new_pair_refills_the_rows_and_the_wait_shows_none(qtbot):
    view = SeparationView()
    qtbot.addWidget(view)
    view.show()
    first = pair(0, 1, 3, seed=0)
    view.show_pair(first, ("A", "B"))
    widgets = list(view.rows)
    assert [w.row.part for w in widgets] == [0, 1, 2, 3] and all(w.isVisible() for w in widgets)
    view.show_pair(None, ("A", "C"), "Ranking the parts…")
    assert view.rows == [] and not any(w.isVisible() for w in widgets)  # no row of the last pair stays on screen
    second = pair(0, 2, 2, seed=1)
    second.rows.reverse()  # another order: part 4 first
    view.show_pair(second, ("A", "C"))
    assert sorted(map(id, view.rows)) == sorted(map(id, widgets))  # the same widgets, refilled
    assert [w.row.part for w in view.rows] == [3, 2, 1, 0] and view.rows[0].index == 0
    for w, row in zip(view.rows, second.rows):
        assert len(w.labels_a) == 2 and len(w.labels_b) == 1  # the third crop's label of the first pair is hidden
        assert [grey(lab) for lab in w.labels_a] == [int(c.image[0, 0, 0]) for c in row.crops_a]
        assert w.labels_a[0].toolTip().startswith("0-2-0.jpg") and w.bar.value == row.separation
    assert view.current == 0 and view.rows[0].selected and not any(w.selected for w in view.rows[1:])
    assert len(view.detail.labels) == 3 and view.detail.captions[1].text() == "C"
