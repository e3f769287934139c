"""The Explore workspace: the active run's maps for the library's selected image.

The image with its top-k predictions; a class to explain; a method (only those the run's model supports); a strip
of the class's maps (MC-Loss ξ channels, TASN attention, CAM, Grad-CAM, Guided Grad-CAM) as thumbnails; the picked
map overlaid with its part's peak and box and the part's crop at full resolution; TASN's resampled views of the
image for that map with a linked cursor. Maps are computed on a worker lane (:mod:`app.common.lane`), cached per
(run, image, method, class), and a new selection makes older requests stale. Arrow keys step through the images.

A shared-parts run (the ``parts`` method) opens in the "All parts" view: its K parts as one coloured map
(:mod:`app.explore.partmap`) with a legend of their names; hovering a part highlights it and shows its crop and its
score for the class, clicking a legend entry (or its key 1-9) shows it alone, 0 or Esc all again. The user names
parts in place (double-click an entry or the crop) or from a CUB-layout folder's keypoints
(:mod:`app.explore.names_dialog`); the names are the run's (:mod:`engine.fieldmarks`) and label the parts
everywhere here. The legend marks the background / habitat parts (the run's on-bird shares,
:mod:`engine.fieldmarks.onbird`: read from the run folder, else computed once over the training photos of the open
data on a lane of their own, with progress in the status line).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from pathlib import Path

import numpy as np

from PySide6.QtCore import QEvent, QObject, QPointF, QSize, Qt, Signal, Slot
from PySide6.QtGui import QIcon, QKeySequence, QMouseEvent, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QMessageBox, QPushButton, QScrollArea, QSlider, QSplitter, QVBoxLayout, QWidget)
from superqt import QElidingLabel

from engine.data import DataReport, Sample
from engine.errors import EngineError
from engine.events import Message, Progress
from engine.fieldmarks import part_label, read_part_names, set_part_name
from engine.runs import RunInfo

from ..common.caches import trim_oldest
from ..common.lane import Lane
from ..common.model_cache import ModelCache
from ..common.pixmaps import to_pixmap
from ..common.text import error_text, map_method_label
from ..state import SelectionState, StepRequest
from .compute import THUMB, ExploreRun, MapRequest, MapResult, compute_maps, open_run, places_job
from .evaluation import EvaluationPanel
from .image_view import COLORMAPS, MapImageView, colorize
from .names_dialog import ProposeNamesDialog
from .partmap import PartLegend, part_colour, render_parts
from .resampled import CursorState, ResampledPanel

log = logging.getLogger(__name__)

CACHE_SIZE = 48  # results kept per page, within CACHE_BYTES
CACHE_BYTES = 384 * 2**20
CROP_MIN, CROP_MAX = 160, 300  # display sides: small crops are enlarged (pixels kept sharp), large ones fitted
ALL_PARTS, ONE_MAP = "all", "one"
NEEDS_PARTS = "All parts needs a `parts` run"
THUMB_BASE = 200.0  # grey of a part's thumbnail where its map is 0 (all-parts view)
PARTS_LABEL = "Shared parts"  # a parts run's "channels" maps: its K parts, the same for every class


@dataclass(frozen=True)
class MapsState:
    """What Explore shows: run, image, method, class and the picked map (-1: none)."""

    run: str
    path: str
    method: str
    class_index: int
    map_index: int
    view: str = ONE_MAP  # ALL_PARTS: the coloured map of all parts (map_index: the isolated part, or -1)


class CropLabel(QLabel):
    """The part's crop; a double-click asks to name the part (``double_clicked``)."""

    double_clicked = Signal()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        self.double_clicked.emit()
        super().mouseDoubleClickEvent(event)


class ExplorePage(QWidget):
    """Explore the active run's maps on the selected image."""

    maps_changed = Signal(object)  # MapsState
    step_requested = Signal(object)  # StepRequest
    part_names_changed = Signal(object)  # dict[int, str]: the active run's part names were saved

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lane = Lane(self, "explore")
        self.places_lane = Lane(self, "explore-places")  # the on-bird shares: a pass over the training photos
        self.models = ModelCache()  # used by the lane's thread only
        self.info: ExploreRun | None = None
        self.run_path = ""
        self.report: DataReport | None = None
        self.sample: Sample | None = None
        self.class_choice: int | None = None  # None: the predicted class
        self.result: MapResult | None = None
        self.map_index = -1
        self._cache: OrderedDict[tuple[str, str, str, int], MapResult] = OrderedDict()
        self._predicted: dict[tuple[str, str], int] = {}
        self.part_names: dict[int, str] = {}
        self.isolated: int | None = None  # all parts: the part shown alone
        self.hovered: int | None = None  # all parts: the part under the mouse (photo or legend)
        self.names_dialog: ProposeNamesDialog | None = None
        self.places: list | None = None  # a parts run's on-bird shares (engine.fieldmarks.onbird.PartPlace)
        self._places_for = ""  # "run|data" whose shares are being computed (or failed)

        self.view_box = QComboBox(self)
        self.view_box.setObjectName("viewBox")
        self.view_box.setToolTip("All parts: a shared-parts run's parts as one coloured map; One map: a single map")
        self.view_box.currentIndexChanged.connect(self._on_view_box_current_index_changed)
        self.parts_note = QLabel(NEEDS_PARTS, self)
        self.parts_note.setObjectName("partsNote")
        self.parts_note.setToolTip("Train with the parts method (shared parts) to see all parts at once; MC-Loss "
                                   "channels and TASN attention belong to one class each")
        self.parts_note.setVisible(False)

        self.method_box = QComboBox(self)
        self.method_box.currentIndexChanged.connect(self._on_method_box_current_index_changed)
        self.class_box = QComboBox(self)
        self.class_box.setMinimumContentsLength(18)
        self.class_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.class_box.activated.connect(self._on_class_box_activated)
        self.cmap_box = QComboBox(self)
        self.cmap_box.addItems(list(COLORMAPS))
        self.cmap_box.currentTextChanged.connect(self._on_cmap_box_current_text_changed)
        self.opacity = QSlider(Qt.Orientation.Horizontal, self)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(65)
        self.opacity.setFixedWidth(120)
        self.opacity.valueChanged.connect(self._on_opacity_value_changed)
        self.keypoints_box = QCheckBox("Keypoints", self)
        self.keypoints_box.setToolTip("Show the data set's ground-truth part keypoints")
        self.keypoints_box.toggled.connect(self._on_keypoints_box_toggled)
        self.status = QElidingLabel("", self)  # long messages are elided (full text in the tooltip), so the
        self.status.setObjectName("exploreStatus")  # window can be narrower than the longest one
        self.status.setElideMode(Qt.TextElideMode.ElideRight)
        bar = QHBoxLayout()
        bar.setContentsMargins(6, 6, 6, 0)
        for text, w in (("View", self.view_box), ("Method", self.method_box), ("Class", self.class_box),
                        ("Colours", self.cmap_box), ("Opacity", self.opacity)):
            bar.addWidget(QLabel(text, self))
            bar.addWidget(w)
            if w is self.view_box:
                bar.addWidget(self.parts_note)
        bar.addWidget(self.keypoints_box)
        bar.addWidget(self.status, 1)

        self.image_view = MapImageView(self)
        self.image_view.set_opacity(self.opacity.value() / 100)
        self.image_view.scene().sigMouseMoved.connect(self._on_image_view_mouse_moved)
        self.image_view.installEventFilter(self)
        self.predictions = QListWidget(self)
        self.predictions.setObjectName("predictions")
        self.predictions.setFixedHeight(5 * 20 + 8)
        self.predictions.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.predictions.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.predictions.itemClicked.connect(self._on_predictions_item_clicked)
        self.legend = PartLegend(self)
        self.legend.hovered.connect(self._on_legend_hovered)
        self.legend.toggled.connect(self._on_legend_toggled)
        self.legend.rename_requested.connect(self.rename_part)
        self.propose_button = QPushButton("Propose names…", self)
        self.propose_button.setToolTip("Name the parts after the CUB keypoints nearest them (a CUB-layout folder)")
        self.propose_button.clicked.connect(self._on_propose_button_clicked)
        self.crop_label = CropLabel(self)
        self.crop_label.double_clicked.connect(self._on_crop_label_double_clicked)
        self.crop_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.crop_label.setMinimumSize(CROP_MIN, CROP_MIN)
        self.crop_caption = QLabel("", self)
        self.crop_caption.setWordWrap(True)
        self.evaluation = EvaluationPanel(self)
        side = QWidget(self)
        sl = QVBoxLayout(side)
        sl.setContentsMargins(4, 0, 6, 0)
        self.parts_box = QWidget(side)  # the legend: shared-parts runs only
        pl = QVBoxLayout(self.parts_box)
        pl.setContentsMargins(0, 0, 0, 0)
        t = QLabel("Parts", self.parts_box)
        t.setObjectName("sectionTitle")
        pl.addWidget(t)
        pl.addWidget(self.legend)
        pl.addWidget(self.propose_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.parts_box.setVisible(False)
        for title, w in (("Predictions", self.predictions), (None, self.parts_box), ("Part crop", self.crop_label)):
            if title:
                t = QLabel(title, side)
                t.setObjectName("sectionTitle")
                sl.addWidget(t)
            sl.addWidget(w)
        sl.addWidget(self.crop_caption)
        sl.addWidget(self.evaluation)
        sl.addStretch(1)
        side_scroll = QScrollArea(self)
        side_scroll.setWidgetResizable(True)
        side_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        side_scroll.setWidget(side)
        side_scroll.setMinimumWidth(280)

        self.strip = QListWidget(self)
        self.strip.setObjectName("mapStrip")
        self.strip.setViewMode(QListWidget.ViewMode.IconMode)
        self.strip.setFlow(QListWidget.Flow.LeftToRight)
        self.strip.setWrapping(False)
        self.strip.setMovement(QListWidget.Movement.Static)
        self.strip.setIconSize(QSize(THUMB, THUMB))
        self.strip.setFixedHeight(THUMB + 46)
        self.strip.setToolTip("The maps of the class: click one to overlay it")
        self.strip.currentRowChanged.connect(self._on_strip_current_row_changed)
        self.resampled = ResampledPanel(self)
        self.resampled.cursor_changed.connect(self._on_resampled_cursor_changed)

        left = QSplitter(Qt.Orientation.Vertical, self)  # maps strip, the photo, its resampled views
        left.addWidget(self.strip)
        left.addWidget(self.image_view)
        left.addWidget(self.resampled)
        left.setCollapsible(0, False)
        left.setStretchFactor(1, 3)
        left.setStretchFactor(2, 2)
        left.setSizes([THUMB + 46, 420, 280])
        main = QSplitter(Qt.Orientation.Horizontal, self)
        main.addWidget(left)
        main.addWidget(side_scroll)
        main.setStretchFactor(0, 1)
        main.setSizes([1100, 330])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(bar)
        lay.addWidget(main, 1)
        for key, delta in ((Qt.Key.Key_Left, -1), (Qt.Key.Key_Up, -1), (Qt.Key.Key_Right, 1), (Qt.Key.Key_Down, 1)):
            sc = QShortcut(QKeySequence(key), self, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(lambda d=delta: self.step_requested.emit(StepRequest(d)))
        for n in range(10):  # 1-9: that part (map); 0: all parts again
            sc = QShortcut(QKeySequence(str(n)), self, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(lambda n=n: self.select_part(n - 1 if n else None))
        sc = QShortcut(QKeySequence(Qt.Key.Key_Escape), self, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        sc.activated.connect(lambda: self.select_part(None))
        self._set_status("Open a run (Train, or File ▸ Open Run…) and pick an image in the Library.")
        self._set_controls_enabled(False)

    # -- inputs ----------------------------------------------------------------------------------------------
    def set_run(self, ref: RunInfo | None) -> None:
        """Explore ``ref``'s model: load it on the lane, then fill the method and class choices."""
        self.info = None
        self.run_path = ref.path if ref else ""
        self.result = None
        self.isolated = self.hovered = None
        self.part_names = {}
        self.places, self._places_for = None, ""
        self.places_lane.cancel()
        self._set_controls_enabled(False)
        self.evaluation.set_run(None)
        if ref is None:
            return
        self._set_status(f"Loading {ref.name}…")
        path = ref.path
        self.lane.submit(open_run, path, self.models, on_returned=self._on_lane_run_loaded,
                         on_errored=lambda exc: self._show_error(f"Cannot load the run {path}", exc))

    def set_data(self, report: DataReport | None) -> None:
        self.report = report
        self.keypoints_box.setEnabled(bool(report and report.has_parts))
        self.evaluation.set_report(report)
        self._start_places()

    # -- on-bird shares --------------------------------------------------------------------------------------
    def _read_places(self) -> None:
        """The run's saved on-bird shares (a small file), marked in the legend; else computed on the lane."""
        from engine.fieldmarks.onbird import saved_places

        self.places = None
        if self.info is None or not self.info.parts:
            return
        try:
            self.places = saved_places(self.info.run.path)
        except EngineError as exc:
            self._places_for = f"{self.info.run.path}|*"  # a damaged file: its message says what to do
            self._show_error("Cannot read the on-bird shares", exc)
        self.legend.set_places(self.places)
        self._start_places()

    def _start_places(self) -> None:
        """Compute the on-bird shares over the open data's training photos (once per run and data)."""
        if self.info is None or not self.info.parts or self.places is not None or self.report is None:
            return
        run = self.info.run.path
        key = f"{run}|{self.report.root}"
        if self._places_for in (key, f"{run}|*"):
            return
        if list(self.report.classes) != list(self.info.run.classes):
            return  # another data set: no marks until the run's own data is open
        self._places_for = key
        self.places_lane.submit(places_job, run, self.report,
                                on_returned=lambda places: self._on_places_returned(run, places),
                                on_yielded=self._on_places_yielded,
                                on_errored=lambda exc: self._on_places_errored(run, exc))

    def _on_places_yielded(self, event) -> None:
        if isinstance(event, Progress) and event.total:
            self._set_status(f"On-bird shares (training photos): {event.done}/{event.total}")
        elif isinstance(event, Message):
            (log.warning if event.level == "warning" else log.info)("explore (on-bird shares): %s", event.text)

    def _on_places_returned(self, run: str, places: list) -> None:
        if self.info is None or self.info.run.path != run:
            return
        self.places = places
        self.legend.set_places(places)
        background = ", ".join(part_label(p.part, self.part_names) for p in places if not p.on_bird)
        self._set_status(f"Background / habitat parts: {background}." if background
                         else "Every part lies on the bird.")

    def _on_places_errored(self, run: str, exc: BaseException) -> None:
        if self.info is not None and self.info.run.path == run:
            self._show_error("Cannot find the parts on the bird", exc)

    @Slot(object)
    def set_selection(self, state: SelectionState) -> None:
        """Explore the first of the library's selected samples (a new image: its predicted class)."""
        sample = state.samples[0] if state.samples else None
        if sample is not None and self.sample is not None and sample.path == self.sample.path:
            return
        self.sample = sample
        self.class_choice = None
        self.request()

    # -- requests --------------------------------------------------------------------------------------------
    def request(self) -> None:
        """Show the maps for the current (run, image, method, class): from the cache, else from the lane."""
        if self.info is None or self.sample is None:
            return
        method = self.method_box.currentData()
        if not method:
            return
        cls = self.class_choice
        if cls is None:
            cls = self._predicted.get((self.info.run.path, self.sample.path))
        key = (self.info.run.path, self.sample.path, method, cls) if cls is not None else None
        if key is not None and key in self._cache:
            self.lane.cancel()
            self._cache.move_to_end(key)
            self._set_status("")
            self._show(self._cache[key])
            return
        req = MapRequest(self.info.run.path, self.sample.path, method, self.class_choice)
        self._set_status(f"Computing {map_method_label(method)} maps…")
        self.lane.submit(compute_maps, req, self.models, on_returned=self._on_lane_maps_returned,
                         on_errored=lambda exc: self._show_error("Cannot compute the maps", exc))

    @Slot(object)
    def _on_lane_run_loaded(self, info: ExploreRun) -> None:
        if info.run.path != self.run_path:
            return
        self.info = info
        self.method_box.blockSignals(True)
        self.method_box.clear()
        for m in info.methods:
            self.method_box.addItem(PARTS_LABEL if info.parts and m == "channels" else map_method_label(m), m)
        self.method_box.setCurrentIndex(max(0, self.method_box.findData(info.default_method)))
        self.method_box.blockSignals(False)
        self.class_box.clear()
        self.class_box.addItems(list(info.run.classes))
        self.part_names = {}
        if info.parts:
            try:
                self.part_names = read_part_names(info.run.path)
            except EngineError as exc:
                self._show_error("Cannot read the part names", exc)
        self.legend.set_parts(info.parts, self.part_names)
        self.parts_box.setVisible(bool(info.parts))
        self._read_places()
        self.view_box.blockSignals(True)
        self.view_box.clear()
        if info.parts:
            self.view_box.addItem("All parts", ALL_PARTS)
        self.view_box.addItem("One map", ONE_MAP)
        self.view_box.setCurrentIndex(0)
        self.view_box.blockSignals(False)
        self.parts_note.setVisible(not info.parts)
        self._apply_view()
        self.evaluation.set_run(info)
        self._set_controls_enabled(True)
        self._set_status("" if self.sample else "Pick an image in the Library.")
        self.request()

    @Slot(object)
    def _on_lane_maps_returned(self, result: MapResult) -> None:
        self._cache[(result.run, result.path, result.method, result.class_index)] = result
        trim_oldest(self._cache, CACHE_SIZE, weight=lambda r: r.nbytes, budget=CACHE_BYTES)
        self._predicted[(result.run, result.path)] = result.predicted
        cur = self.sample
        if self.info is None or cur is None or (result.run, result.path) != (self.info.run.path, cur.path):
            return
        self._set_status("")
        self._show(result)

    # -- showing ---------------------------------------------------------------------------------------------
    def _show(self, result: MapResult) -> None:
        new_image = self.result is None or self.result.path != result.path or self.result.run != result.run
        self.result = result
        if new_image:
            self.image_view.set_image(result.image, result.image_size)
            self._show_keypoints()
        classes = self.info.run.classes if self.info else ()
        self.predictions.clear()
        for i, p in result.top_k():
            item = QListWidgetItem(f"{classes[i] if i < len(classes) else i}   {100 * p:.1f} %")
            item.setData(Qt.ItemDataRole.UserRole, i)
            item.setToolTip(item.text())
            self.predictions.addItem(item)
            if i == result.class_index:
                item.setSelected(True)
        lst = self.predictions
        lst.setFixedHeight(lst.sizeHintForRow(0) * max(1, lst.count()) + 2 * lst.frameWidth() + 4)
        self.class_box.setCurrentIndex(result.class_index)
        keep = self.map_index if 0 <= self.map_index < len(result.names) else 0
        self.strip.blockSignals(True)
        self.strip.clear()
        for k, thumb in enumerate(result.thumbs):
            self.strip.addItem(QListWidgetItem(self._thumb_icon(k), self.map_name(k)))
        self.strip.setCurrentRow(keep)
        self.strip.blockSignals(False)
        if self.all_parts():
            self.show_parts()
        else:
            self.show_map(keep)

    def show_map(self, index: int) -> None:
        """Overlay map ``index`` of the shown result, mark its part, show its crop and resampled views."""
        r = self.result
        if r is None or not 0 <= index < len(r.names):
            return
        self.map_index = index
        if self.all_parts():
            self.set_isolated(index)
            return
        if self.strip.currentRow() != index:
            self.strip.blockSignals(True)
            self.strip.setCurrentRow(index)
            self.strip.blockSignals(False)
        self.image_view.set_overlay(r.maps[index])
        part = r.parts[index]
        self.image_view.set_part(part)
        self._show_crop(index)
        crop = r.crops[index]
        dup = f" · repeats part {part.duplicate_of + 1}" if part.duplicate_of is not None else ""
        self.crop_caption.setText(f"{self.map_name(index)} · score {part.score:.3g} ({100 * part.score_norm:.0f} % "
                                  f"of the strongest) · peak ({part.peak[0]:.0f}, {part.peak[1]:.0f}) · crop "
                                  f"{crop.shape[1]}×{crop.shape[0]} px{dup}")
        self.resampled.set_views(r.image, r.views[index])
        self.maps_changed.emit(MapsState(r.run, r.path, r.method, r.class_index, index))

    def _thumb_icon(self, k: int) -> QIcon:
        """Map ``k``'s thumbnail: in the part's palette colour in the all-parts view, else in the colour map."""
        thumb = self.result.thumbs[k]
        if self.all_parts() and self.result.layer is not None:
            rgb = np.asarray(part_colour(k).getRgb()[:3], np.float32)  # grey where the map is 0, the colour at 1
            t = np.clip(thumb, 0, 1)[..., None] ** 0.7
            return QIcon(to_pixmap(np.round(THUMB_BASE + t * (rgb - THUMB_BASE)).astype(np.uint8)))
        return QIcon(to_pixmap(colorize(thumb, self.image_view.colormap)))

    def _show_crop(self, index: int) -> None:
        crop = self.result.crops[index]
        pm = to_pixmap(crop)
        side = max(crop.shape[:2])
        if side < CROP_MIN or side > CROP_MAX:
            target = CROP_MIN if side < CROP_MIN else CROP_MAX
            mode = (Qt.TransformationMode.FastTransformation if side < CROP_MIN
                    else Qt.TransformationMode.SmoothTransformation)
            pm = pm.scaled(target, target, Qt.AspectRatioMode.KeepAspectRatio, mode)
        self.crop_label.setPixmap(pm)

    # -- all parts -------------------------------------------------------------------------------------------
    def all_parts(self) -> bool:
        """The all-parts view is on (a shared-parts run's part maps are shown as one coloured map)."""
        return self.view_box.currentData() == ALL_PARTS and bool(self.info and self.info.parts)

    def map_name(self, index: int) -> str:
        """Map ``index``'s label: a shared-parts run's parts by their names, other maps as the engine names them."""
        if self.info is not None and self.info.parts and self.result is not None and self.result.layer is not None:
            return part_label(index, self.part_names)
        return self.result.names[index] if self.result is not None else ""

    def part_text(self, k: int) -> str:
        """Part ``k``'s score line: its class score for the shown class and what it adds to the class logit."""
        r = self.result
        layer = r.layer
        classes = self.info.run.classes
        cls = r.class_index
        s = float(layer.scores[k, cls])
        rank = int((layer.scores[:, cls] > s).sum()) + 1
        name = classes[cls].replace("_", " ") if cls < len(classes) else str(cls)
        active = "" if layer.active[k] else " · not active on this photo"
        return (f"{part_label(k, self.part_names)} · score {s:.2f} for {name} (rank {rank} of {layer.parts}; adds "
                f"{s / layer.parts:+.2f} to the class logit {layer.logit(cls):.2f}){active}")

    def show_parts(self) -> None:
        """Draw the all-parts map (the isolated part alone; the hovered one highlighted) and the focused part's
        crop, score and box."""
        r = self.result
        if r is None or r.layer is None:
            return
        k = r.layer.parts
        if self.isolated is not None and self.isolated >= k:
            self.isolated = None
        self.image_view.set_rgba(render_parts(r.layer, self.isolated, self.hovered))
        self.legend.set_isolated(self.isolated)
        self.legend.set_scores([self.part_text(i) for i in range(k)], r.layer.active)
        focus = self.focused_part()
        self.image_view.set_part(r.parts[focus] if (self.hovered is not None or self.isolated is not None) else None)
        self._show_crop(focus)
        self.crop_caption.setText(self.part_text(focus))
        self.strip.blockSignals(True)
        self.strip.setCurrentRow(focus if self.isolated is not None else -1)
        self.strip.blockSignals(False)
        self.resampled.set_views(r.image, r.views[focus])
        self.maps_changed.emit(MapsState(r.run, r.path, r.method, r.class_index,
                                         -1 if self.isolated is None else self.isolated, ALL_PARTS))

    def focused_part(self) -> int:
        """The part the crop panel shows: the hovered one, else the isolated one, else the class's top scorer."""
        if self.hovered is not None:
            return self.hovered
        if self.isolated is not None:
            return self.isolated
        layer = self.result.layer
        return int(layer.scores[:, self.result.class_index].argmax())

    def set_isolated(self, k: int | None) -> None:
        """Show part ``k`` alone (None: all parts)."""
        self.isolated = k
        self.show_parts()

    def set_hovered(self, k: int | None) -> None:
        if k != self.hovered:
            self.hovered = k
            self.show_parts()

    def select_part(self, k: int | None) -> None:
        """Keys 1-9 (``k`` 0-8) and 0/Esc (None): isolate that part (all parts: show all again); in the one-map
        view, overlay map ``k``."""
        if self.result is None:
            return
        if self.all_parts():
            if k is None or k < self.result.layer.parts:
                self.set_isolated(k)
        elif k is not None and k < len(self.result.names):
            self.show_map(k)

    @Slot(int, str)
    def rename_part(self, k: int, name: str) -> bool:
        """Save ``name`` for part ``k`` of the run (empty: remove the name); an invalid name is refused with the
        engine's message, the saved names stay as they were."""
        if not self.run_path:
            return False
        try:
            names = set_part_name(self.run_path, k, name)
        except EngineError as exc:
            self.legend.set_names(self.part_names)
            self._show_error(f"Cannot name part {k + 1} {name!r}", exc)
            box = QMessageBox(QMessageBox.Icon.Warning, "Cannot name the part",
                              f"Part {k + 1} was not named {name!r}: {exc}", QMessageBox.StandardButton.Ok, self)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()
            return False
        self.set_part_names(names)
        self._set_status(f"Part {k + 1} is now {part_label(k, names)!r}." if name.strip()
                         else f"Part {k + 1} has no name now.")
        return True

    def set_part_names(self, names: dict[int, str]) -> None:
        """The run's part names changed (saved here or by the propose dialog): relabel everything."""
        self.part_names = dict(names)
        self.legend.set_names(self.part_names)
        if self.result is not None:
            for i in range(min(self.strip.count(), len(self.result.names))):
                self.strip.item(i).setText(self.map_name(i))
            if self.all_parts():
                self.show_parts()
            elif 0 <= self.map_index < len(self.result.names):
                self.show_map(self.map_index)
        self.part_names_changed.emit(dict(self.part_names))

    def propose_names(self, data: str) -> ProposeNamesDialog:
        """Open the dialog that proposes names from the CUB-layout folder ``data`` (its job starts at once)."""
        dialog = ProposeNamesDialog(self.run_path, data, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.names_saved.connect(self.set_part_names)
        dialog.destroyed.connect(lambda _=None: setattr(self, "names_dialog", None))
        self.names_dialog = dialog
        dialog.open()
        dialog.start()
        return dialog

    def _apply_view(self) -> None:
        """Enable the controls of the view: all parts draws the part maps in the palette's colours."""
        on = self.all_parts()
        if on:
            self.method_box.blockSignals(True)
            self.method_box.setCurrentIndex(max(0, self.method_box.findData("channels")))
            self.method_box.blockSignals(False)
        self.method_box.setEnabled(self.info is not None and not on)
        self.cmap_box.setEnabled(not on)
        self.hovered = None

    def _show_keypoints(self) -> None:
        s = self.sample
        on = self.keypoints_box.isChecked() and s is not None and s.parts is not None
        self.image_view.set_keypoints(s.keypoints() if on and s is not None else None,
                                      self.report.part_names if self.report else None)

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
        self.status.setToolTip(text)

    def _set_controls_enabled(self, on: bool) -> None:
        for w in (self.method_box, self.class_box, self.view_box):
            w.setEnabled(on)
        if on and self.all_parts():
            self.method_box.setEnabled(False)

    def _show_error(self, title: str, exc: BaseException) -> None:
        text = error_text(exc)
        log.error("%s: %s", title, text)
        self._set_status(f"{title}: {text}")

    def shutdown(self) -> None:
        """Stop the page's workers (the window's one shutdown path calls it)."""
        self.lane.shutdown()
        self.places_lane.shutdown()
        self.evaluation.shutdown()
        if self.names_dialog is not None:
            self.names_dialog.lane.shutdown()

    # -- slots -----------------------------------------------------------------------------------------------
    @Slot(int)
    def _on_method_box_current_index_changed(self, _index: int) -> None:
        self.request()

    @Slot(int)
    def _on_class_box_activated(self, index: int) -> None:
        self.class_choice = index
        self.request()

    @Slot(QListWidgetItem)
    def _on_predictions_item_clicked(self, item: QListWidgetItem) -> None:
        self.class_choice = int(item.data(Qt.ItemDataRole.UserRole))
        self.class_box.setCurrentIndex(self.class_choice)
        self.request()

    @Slot(int)
    def _on_strip_current_row_changed(self, row: int) -> None:
        self.show_map(row)

    @Slot(int)
    def _on_view_box_current_index_changed(self, _index: int) -> None:
        was = self.method_box.currentData()
        self._apply_view()
        if self.method_box.currentData() != was:
            self.request()  # all parts needs the part maps
        elif self.result is not None:
            for i in range(min(self.strip.count(), len(self.result.thumbs))):
                self.strip.item(i).setIcon(self._thumb_icon(i))
            if self.all_parts():
                self.show_parts()
            else:
                self.show_map(self.map_index if self.map_index >= 0 else 0)

    @Slot(int)
    def _on_legend_hovered(self, k: int) -> None:
        if self.all_parts():
            self.set_hovered(k if k >= 0 else None)

    @Slot(int)
    def _on_legend_toggled(self, k: int) -> None:
        if self.all_parts():
            self.set_isolated(None if self.isolated == k else k)
        else:
            self.show_map(k)

    @Slot()
    def _on_crop_label_double_clicked(self) -> None:
        if self.result is not None and self.result.layer is not None:  # a parts run: name the part shown
            self.legend.edit_part(self.focused_part() if self.all_parts() else self.map_index)

    @Slot()
    def _on_propose_button_clicked(self) -> None:
        data = self.report.root if self.report is not None and self.report.has_parts else ""
        if not data:
            data = QFileDialog.getExistingDirectory(self, "A CUB-layout folder (with parts/part_locs.txt)",
                                                    str(Path.home()))
        if data:
            self.propose_names(data)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if obj is self.image_view and event.type() == QEvent.Type.Leave and self.hovered is not None:
            self.set_hovered(None)
        return super().eventFilter(obj, event)

    @Slot(str)
    def _on_cmap_box_current_text_changed(self, name: str) -> None:
        self.image_view.set_colormap(name)
        if self.result is not None:
            for i in range(min(self.strip.count(), len(self.result.thumbs))):
                self.strip.item(i).setIcon(self._thumb_icon(i))

    @Slot(int)
    def _on_opacity_value_changed(self, value: int) -> None:
        self.image_view.set_opacity(value / 100)

    @Slot(bool)
    def _on_keypoints_box_toggled(self, _on: bool) -> None:
        self._show_keypoints()

    @Slot(object)
    def _on_image_view_mouse_moved(self, pos: QPointF) -> None:
        if self.result is None:
            return
        p = self.image_view.view.mapSceneToView(pos)
        h, w = self.result.image_size
        inside = -0.5 <= p.x() < w - 0.5 and -0.5 <= p.y() < h - 0.5
        if self.all_parts() and self.result.layer is not None:
            s = self.result.scale
            self.set_hovered(self.result.layer.part_at(int((p.x() + 0.5) * s), int((p.y() + 0.5) * s))
                             if inside else None)
        if inside:
            self.resampled.point_at("original", (p.x(), p.y()))

    @Slot(object)
    def _on_resampled_cursor_changed(self, state: CursorState) -> None:
        self.image_view.set_cursor(state.original)
