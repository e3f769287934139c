"""The Explore workspace: the active run's maps for the library's selected image.

The image with its top-k predictions; a class to explain; a method (only those the run's model supports); a strip
of the class's maps (MC-Loss ξ channels, TASN attention, CAM, Grad-CAM, Guided Grad-CAM) as thumbnails; the picked
map overlaid with its part's peak and box and the part's crop at full resolution; TASN's resampled views of the
image for that map with a linked cursor. Maps are computed on a worker lane (:mod:`app.common.lane`), cached per
(run, image, method, class), and a new selection makes older requests stale. Arrow keys step through the images.

A shared-parts run (the ``parts`` method) opens in the "All parts" view: its K parts as one coloured map
(:mod:`app.explore.partmap`) with a legend of their names; hovering a part highlights it and shows its crop and its
score for the class, clicking a legend entry (or its key 1-9) shows it alone, 0 or Esc all again. The parts are
named in place (double-click an entry or the crop) or from a CUB-layout folder's keypoints, and the legend marks
the background / habitat parts (:mod:`app.explore.naming`).

What the page shows is its :class:`~app.explore.state.ExploreState` (no Qt); :mod:`app.explore.ui` builds its
widgets and :mod:`app.explore.views` draws the two views.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QEvent, QObject, QPointF, Qt, Signal, Slot
from PySide6.QtWidgets import QListWidgetItem, QWidget

from engine.data import DataReport
from engine.runs import RunInfo

from ..common.lane import Lane
from ..common.model_cache import ModelCache
from ..common.text import error_text
from ..common.widgets import state_property
from ..state import SelectionState
from . import ui, views
from .compute import ExploreRun, MapRequest, MapResult, compute_maps, open_run
from .names_dialog import ProposeNamesDialog
from .naming import PartNaming
from .resampled import CursorState
from .state import ALL_PARTS, ONE_MAP, ExploreState, MapsState  # noqa: F401 (MapsState: maps_changed's type)
from .ui import NEEDS_PARTS  # noqa: F401 (the view note's text)
from .views import AllPartsView, OneMapView

log = logging.getLogger(__name__)


class ExplorePage(QWidget):
    """Explore the active run's maps on the selected image: the widgets over an :class:`ExploreState`."""

    maps_changed = Signal(object)  # MapsState
    step_requested = Signal(object)  # StepRequest
    part_names_changed = Signal(object)  # dict[int, str]: the active run's part names were saved

    info = state_property("info")
    sample = state_property("sample")
    result = state_property("result")
    map_index = state_property("map_index")
    part_names = state_property("part_names")
    isolated = state_property("isolated")
    hovered = state_property("hovered")
    places = state_property("places")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lane = Lane(self, "explore")
        self.models = ModelCache()  # used by the lane's thread only
        self.state = ExploreState()
        self.one_map, self.all_parts_view = OneMapView(self, self.state), AllPartsView(self, self.state)
        ui.build(self)
        self.naming = PartNaming(self, self.state, self.legend)
        self._connect()
        self._set_status("Open a run (Train, or File ▸ Open Run…) and pick an image in the Library.")
        self._set_controls_enabled(False)

    def _connect(self) -> None:
        self.view_box.currentIndexChanged.connect(self._on_view_box_current_index_changed)
        self.method_box.currentIndexChanged.connect(self._on_method_box_current_index_changed)
        self.class_box.activated.connect(self._on_class_box_activated)
        self.cmap_box.currentTextChanged.connect(self._on_cmap_box_current_text_changed)
        self.opacity.valueChanged.connect(lambda value: self.image_view.set_opacity(value / 100))
        self.keypoints_box.toggled.connect(self._on_keypoints_box_toggled)
        self.image_view.scene().sigMouseMoved.connect(self._on_image_view_mouse_moved)
        self.image_view.installEventFilter(self)
        self.predictions.itemClicked.connect(self._on_predictions_item_clicked)
        self.legend.hovered.connect(self._on_legend_hovered)
        self.legend.toggled.connect(self._on_legend_toggled)
        self.legend.rename_requested.connect(self.rename_part)
        self.naming.places_status.connect(self._set_places_status)
        self.naming.failed.connect(self._show_error)
        self.naming.names_changed.connect(self.set_part_names)
        self.propose_button.clicked.connect(self._on_propose_button_clicked)
        self.crop_label.double_clicked.connect(self._on_crop_label_double_clicked)
        self.strip.currentRowChanged.connect(self._on_strip_current_row_changed)
        self.resampled.cursor_changed.connect(self._on_resampled_cursor_changed)
        ui.add_keys(self)

    # -- inputs ----------------------------------------------------------------------------------------------
    def set_run(self, ref: RunInfo | None) -> None:
        """Explore ``ref``'s model: load it on the lane, then fill the method and class choices."""
        self.state.set_run(ref)
        self.naming.lane.cancel()
        self._set_controls_enabled(False)
        self.evaluation.set_run(None)
        if ref is None:
            return
        self._set_status(f"Loading {ref.name}…")
        path = ref.path
        self.lane.submit(open_run, path, self.models, on_returned=self._on_lane_run_loaded,
                         on_errored=lambda exc: self._show_error(f"Cannot load the run {path}", exc))

    def set_data(self, report: DataReport | None) -> None:
        self.state.report = report
        self.keypoints_box.setEnabled(bool(report and report.has_parts))
        self.evaluation.set_report(report)
        self.naming.start_places()

    @Slot(object)
    def set_selection(self, state: SelectionState) -> None:
        """Explore the first of the library's selected samples (a new image: its predicted class)."""
        if self.state.select(state.samples[0] if state.samples else None):
            self.request()

    # -- requests --------------------------------------------------------------------------------------------
    def request(self) -> None:
        """Show the maps for the current (run, image, method, class): from the cache, else from the lane."""
        method = self.method_box.currentData()
        found = self.state.lookup(method)
        if isinstance(found, MapResult):
            self.lane.cancel()
            self._set_status("")
            self._show(found)
        elif isinstance(found, MapRequest):
            self._set_status(self.state.computing_text(method))
            self.lane.submit(compute_maps, found, self.models, on_returned=self._on_lane_maps_returned,
                             on_errored=lambda exc: self._show_error("Cannot compute the maps", exc))

    @Slot(object)
    def _on_lane_run_loaded(self, info: ExploreRun) -> None:
        if not self.state.run_loaded(info):
            return
        ui.refill(self.method_box, [(self.state.method_label(m), m) for m in info.methods], info.default_method)
        self.class_box.clear()
        self.class_box.addItems(list(info.run.classes))
        self.naming.read_names()
        self.legend.set_parts(info.parts, self.part_names)
        self.parts_box.setVisible(bool(info.parts))
        self.naming.read_places()
        ui.refill(self.view_box, ([("All parts", ALL_PARTS)] if info.parts else []) + [("One map", ONE_MAP)])
        self.state.view = self.view_box.currentData()
        self.parts_note.setVisible(not info.parts)
        self._apply_view()
        self.evaluation.set_run(info)
        self._set_controls_enabled(True)
        self._set_status("" if self.sample else "Pick an image in the Library.")
        self.request()

    @Slot(object)
    def _on_lane_maps_returned(self, result: MapResult) -> None:
        if self.state.store(result):
            self._set_status("")
            self._show(result)

    # -- showing ---------------------------------------------------------------------------------------------
    def _show(self, result: MapResult) -> None:
        if self.state.show(result):
            self.image_view.set_image(result.image, result.image_size)
            self._show_keypoints()
        views.show_predictions(self, self.state.predictions(), result.class_index)
        self.class_box.setCurrentIndex(result.class_index)
        keep = self.state.kept_map()
        view = self._view()
        views.fill_strip(self, [(view.thumb_icon(k), self.map_name(k)) for k in range(len(result.thumbs))], keep)
        if self.all_parts():
            self.show_parts()
        else:
            self.show_map(keep)

    def show_map(self, index: int) -> None:
        """Overlay map ``index`` of the shown result, mark its part, show its crop and resampled views."""
        r = self.result
        if r is None or not 0 <= index < len(r.names):
            return
        self.state.map_index = index
        if self.all_parts():
            self.set_isolated(index)
            return
        self.one_map.draw()
        self.maps_changed.emit(self.state.maps_state(parts=False))

    def _view(self) -> OneMapView | AllPartsView:
        """The drawing of the view shown: all parts for a shared-parts run's part maps, else one map."""
        return self.all_parts_view if self.all_parts() and self.result.layer is not None else self.one_map

    def _refresh_thumbs(self) -> None:
        view = self._view()
        for i in range(min(self.strip.count(), len(self.result.thumbs))):
            self.strip.item(i).setIcon(view.thumb_icon(i))

    # -- all parts -------------------------------------------------------------------------------------------
    def all_parts(self) -> bool:  # see ExploreState
        return self.state.all_parts()

    def map_name(self, index: int) -> str:  # see ExploreState
        return self.state.map_name(index)

    def part_text(self, k: int) -> str:  # see ExploreState
        return self.state.part_text(k)

    def focused_part(self) -> int:  # see ExploreState
        return self.state.focused_part()

    def show_parts(self) -> None:
        """Draw the all-parts map (the isolated part alone; the hovered one highlighted) and the focused part's
        crop, score and box."""
        if self.result is None or self.result.layer is None:
            return
        self.all_parts_view.draw()
        self.maps_changed.emit(self.state.maps_state(parts=True))

    def set_isolated(self, k: int | None) -> None:
        """Show part ``k`` alone (None: all parts)."""
        self.state.isolated = k
        self.show_parts()

    def set_hovered(self, k: int | None) -> None:
        if k != self.hovered:
            self.state.hovered = k
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

    # -- part names ------------------------------------------------------------------------------------------
    @Slot(int, str)
    def rename_part(self, k: int, name: str) -> bool:
        """Save ``name`` for part ``k`` of the run (empty: remove the name); an invalid name is refused with the
        engine's message, the saved names stay as they were."""
        names = self.naming.rename(k, name)
        if names is None:
            return False
        self.set_part_names(names)
        self._set_status(self.state.renamed_text(k, name))
        return True

    def set_part_names(self, names: dict[int, str]) -> None:
        """The run's part names changed (saved here or by the propose dialog): relabel everything."""
        self.state.part_names = dict(names)
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
        return self.naming.propose(data)

    # -- the controls ----------------------------------------------------------------------------------------
    def _apply_view(self) -> None:
        """Enable the controls of the view: all parts draws the part maps in the palette's colours."""
        on = self.all_parts()
        if on:
            ui.select_quietly(self.method_box, "channels")
        self.method_box.setEnabled(self.info is not None and not on)
        self.cmap_box.setEnabled(not on)
        self.state.hovered = None

    def _show_keypoints(self) -> None:
        s = self.sample
        on = self.keypoints_box.isChecked() and s is not None and s.parts is not None
        self.image_view.set_keypoints(s.keypoints() if on and s is not None else None,
                                      self.state.report.part_names if self.state.report else None)

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
        self.status.setToolTip(text)

    def _set_places_status(self, text: str) -> None:
        """The on-bird shares' line under the legend (hidden when empty)."""
        self.places_status.setText(text)
        self.places_status.setVisible(bool(text))

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
        self.naming.shutdown()
        self.evaluation.shutdown()

    # -- slots -----------------------------------------------------------------------------------------------
    @Slot(int)
    def _on_method_box_current_index_changed(self, _index: int) -> None:
        self.request()

    @Slot(int)
    def _on_class_box_activated(self, index: int) -> None:
        self.state.class_choice = index
        self.request()

    @Slot(QListWidgetItem)
    def _on_predictions_item_clicked(self, item: QListWidgetItem) -> None:
        self.state.class_choice = int(item.data(Qt.ItemDataRole.UserRole))
        self.class_box.setCurrentIndex(self.state.class_choice)
        self.request()

    @Slot(int)
    def _on_strip_current_row_changed(self, row: int) -> None:
        self.show_map(row)

    @Slot(int)
    def _on_view_box_current_index_changed(self, _index: int) -> None:
        self.state.view = self.view_box.currentData()
        was = self.method_box.currentData()
        self._apply_view()
        if self.method_box.currentData() != was:
            self.request()  # all parts needs the part maps
        elif self.result is not None:
            self._refresh_thumbs()
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
        if self.state.has_parts_layer():  # a parts run: name the part shown
            self.legend.edit_part(self.focused_part() if self.all_parts() else self.map_index)

    @Slot()
    def _on_propose_button_clicked(self) -> None:
        data = self.naming.cub_folder()
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
            self._refresh_thumbs()

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
