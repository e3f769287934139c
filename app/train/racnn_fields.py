"""The Train form's RA-CNN row: the side each scale's network sees (``--scale-size``) and the half side of the APNs'
first squares (``--apn-half``), both saved in the config's ``extra``."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QDoubleSpinBox, QLabel, QSpinBox, QWidget

from engine.training.config import RACNN_DEFAULTS

from .fields import widget_row


class RacnnFields:
    """RA-CNN's two fields and the row that holds them (``row``). 0 in Scale size shows "image size": the scales
    see the photo's own size."""

    def __init__(self, parent: QWidget) -> None:
        self.scale_size = QSpinBox(parent)
        self.scale_size.setRange(0, 4096)
        self.scale_size.setSingleStep(16)
        self.scale_size.setSpecialValueText("image size")
        self.scale_size.setToolTip("RA-CNN: the side each scale's network sees; the photo is read at Image size and "
                                   "every square is cut from it (the paper's 448 -> 224)")
        self.half = QDoubleSpinBox(parent)
        self.half.setRange(0.17, 0.49)
        self.half.setDecimals(3)
        self.half.setSingleStep(0.01)
        self.half.setValue(RACNN_DEFAULTS["apn_half"])
        self.half.setToolTip("RA-CNN (--apn-half): the half side of the APNs' first squares, a share of the scale's "
                             f"side (the paper's 0.25: half the side; default {RACNN_DEFAULTS['apn_half']:g})")
        label = QLabel("first squares' half side", parent)
        self.row = widget_row(self.scale_size, label, self.half)

    def set_enabled(self, on: bool) -> None:
        for w in (self.scale_size, self.half):
            w.setEnabled(on)

    def extra(self) -> dict[str, Any]:
        """The ``extra`` keys these fields set."""
        side = {"scale_size": self.scale_size.value()} if self.scale_size.value() else {}
        return {**side, "apn_half": round(self.half.value(), 3)}

    def fill(self, extra: dict[str, Any]) -> None:
        """Show a config's ``extra`` (an opened run's); the defaults where it has none."""
        self.scale_size.setValue(int(extra.get("scale_size") or 0))
        self.half.setValue(float(extra.get("apn_half", RACNN_DEFAULTS["apn_half"])))
