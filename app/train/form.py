"""A form that edits the engine's :class:`~engine.training.config.TrainConfig`; the config itself validates every edit.

On every change the form builds a TrainConfig; a :class:`~engine.errors.ConfigError` (which names the field and
the value) is shown next to the form and Start stays disabled. The fields match ``fieldmark train``'s options,
so the same settings give the same config, and the same model, from the GUI and from the CLI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QLabel,
                               QLineEdit, QPushButton, QSpinBox, QWidget)

from engine.training.config import (ATTENTIONS, DEFAULT_FINE, DEFAULT_PADDING, GAIN_TERMS, MC_CONC_PRETRAINED,
                                    OTHER_SIZE_EPOCHS_BATCH, PADDINGS, PARTS_SIZE_EPOCHS_BATCH, RACNN_OPTIONS,
                                    TrainConfig)
from engine.errors import ConfigError
from engine.models.fine import FINE_BACKBONES
from engine.models import get_spec, list_models
from engine.runs import MODEL_JSON, RESUME
from engine.training.speed import describe_speed

from ..common.text import TRAINING_METHOD_LABELS
from .fields import optional_number, widget_row
from .racnn_fields import RacnnFields

log = logging.getLogger(__name__)

SCRATCH = "none (from scratch)"
WEIGHT_NAMES = (SCRATCH, "DEFAULT", "IMAGENET1K_V1", "IMAGENET1K_V2")
#: TrainConfig fields without a widget here: a config filled in (an opened run's) keeps them.
KEPT_FIELDS = ("lr_backbone", "lr_head", "weight_decay", "momentum", "warmup_epochs", "test_fraction", "workers",
               "amp", "per_sample_mask", "part_channels", "crop_scale", "cache_mb", "extra", "rotate", "equiv_backprop",
               "zoom", "freeze_bn", "freeze_stages", "compile", "size_schedule")  # speed: `fieldmark train` only
#: Kept fields that follow Pretrained, Method, size and epochs: at their automatic value they stay automatic.
AUTOMATIC = ("lr_backbone", "lr_head", "rotate", "equiv_backprop", "zoom") + KEPT_FIELDS[-4:]


@dataclass(frozen=True)
class ConfigState:
    """The form's current config (None while invalid), the message to show, and what the buttons may do."""

    config: TrainConfig | None
    error: str = ""
    note: str = ""
    can_start: bool = False
    can_resume: bool = False


class TrainForm(QWidget):
    """Edits a TrainConfig. ``config_changed`` carries a :class:`ConfigState` after every edit."""

    config_changed = Signal(object)  # ConfigState

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        h = TrainConfig.field_help()
        self.data = QLineEdit(self)
        self.data.setPlaceholderText("open a folder in the Library, or browse")
        data_btn = QPushButton("Browse…", self)
        data_btn.clicked.connect(self._on_data_button_clicked)
        self.out = QLineEdit(self)
        self.out.setPlaceholderText("a new folder for this run")
        out_btn = QPushButton("Browse…", self)
        out_btn.clicked.connect(self._on_out_button_clicked)
        self._build_method_fields()
        self.epochs = QSpinBox(self)
        self.epochs.setRange(0, 100000)
        self.epochs.setValue(OTHER_SIZE_EPOCHS_BATCH[1])
        self.img_size = QSpinBox(self)
        self.img_size.setRange(0, 4096)
        self.img_size.setSingleStep(16)
        self.img_size.setValue(OTHER_SIZE_EPOCHS_BATCH[0])
        self.racnn = RacnnFields(self)  # RA-CNN's --scale-size and --apn-half
        self.scale_size, self.apn_half = self.racnn.scale_size, self.racnn.half
        self.batch_size = QSpinBox(self)
        self.batch_size.setRange(0, 4096)
        self.batch_size.setValue(OTHER_SIZE_EPOCHS_BATCH[2])
        self.pretrained = QComboBox(self)
        self.pretrained.setEditable(True)
        self.pretrained.addItems(list(WEIGHT_NAMES))
        weights_btn = QPushButton("File…", self)
        weights_btn.clicked.connect(self._on_weights_button_clicked)
        self.device = QComboBox(self)
        self.device.addItems(["auto", "cpu"] + (["cuda"] if _cuda_available() else []))
        self.seed = QSpinBox(self)
        self.seed.setRange(0, 2 ** 31 - 1)
        self.message = QLabel(self)
        self.message.setObjectName("formMessage")
        self.message.setWordWrap(True)

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        rows = [("Data", widget_row(self.data, data_btn), h["data"]),
                ("Method", self.method, h["method"]), ("Model", self.model, h["model"]),
                ("ξ (channels/class)", self.xi, h["xi"]), ("μ", self.mu, h["mu"]), ("λ", self.lam, h["lam"]),
                ("Concentration", self.mc_conc, h["mc_conc"]),
                ("Parts (K)", self.parts, h["parts"]), ("Fine maps", self.fine, h["fine"]),
                ("Padding", self.padding, h["padding"]),
                ("Epochs", self.epochs, h["epochs"]), ("Image size", self.img_size, h["img_size"]),
                ("Scale size", self.racnn.row, None),
                ("Batch size", self.batch_size, h["batch_size"]),
                ("Pretrained", widget_row(self.pretrained, weights_btn), h["pretrained"]),
                ("Device", self.device, h["device"]), ("Seed", self.seed, h["seed"]),
                ("Output folder", widget_row(self.out, out_btn), h["out"])]
        for label, widget, tip in rows:
            if tip:
                widget.setToolTip(tip)
            form.addRow(label, widget)
        self._add_attention_rows(form, h)
        form.addRow(self.message)

        self._fill_models()
        self.method.currentIndexChanged.connect(self._on_method_current_index_changed)
        for w in (self.data, self.out, self.mu, self.mc_conc):
            w.textChanged.connect(self.revalidate)
        for box in (self.model, self.device, self.padding):
            box.currentIndexChanged.connect(self.revalidate)
        self.pretrained.currentTextChanged.connect(self.revalidate)
        for spin in (self.xi, self.epochs, self.img_size, self.scale_size, self.apn_half, self.batch_size, self.seed,
                     self.lam, self.parts):
            spin.valueChanged.connect(self.revalidate)
        self.fine.toggled.connect(self.revalidate)
        self._enable_method_fields()
        self.state = ConfigState(None)
        self._kept: dict = {}  # the filled config's settings that have no field here (see set_config)
        self.revalidate()

    def _build_method_fields(self) -> None:
        """The method and model choices and the method's own settings (MC-Loss's ξ, μ, λ and concentration, the
        shared parts' K, fine maps, padding)."""
        self.method = QComboBox(self)
        for value, label in TRAINING_METHOD_LABELS.items():
            self.method.addItem(label, value)
        if not list_models("tasn"):
            item = self.method.model().item(self.method.findData("tasn"))
            item.setEnabled(False)
            item.setToolTip("No TASN model is installed in this engine")
        self.model = QComboBox(self)
        self.xi = QSpinBox(self)
        self.xi.setRange(0, 128)
        self.xi.setValue(3)
        self.parts = QSpinBox(self)
        self.parts.setRange(0, 128)
        self.parts.setValue(8)
        self.fine = QCheckBox("stride 16", self)  # how: the tooltip (the last stage joined with the one before)
        self.fine.setChecked(DEFAULT_FINE["mcloss"])
        self.padding = QComboBox(self)
        for value in PADDINGS:
            self.padding.addItem(value, value)
        self.padding.setCurrentIndex(self.padding.findData(DEFAULT_PADDING["mcloss"]))
        self.mu = QLineEdit(self)
        self.mu.setPlaceholderText("auto (0.5 fine-tuning, 1.5 from scratch)")
        self.mc_conc = QLineEdit(self)
        self.mc_conc.setPlaceholderText(f"auto ({MC_CONC_PRETRAINED:g} fine-tuning, 0 from scratch)")
        self.lam = QDoubleSpinBox(self)
        self.lam.setRange(-100, 10000)
        self.lam.setDecimals(3)
        self.lam.setValue(10.0)

    def _add_attention_rows(self, form: QFormLayout, h: dict[str, str]) -> None:
        """The attention-block choice and GAIN (check box, α, σ, ω) after Padding, wired to revalidate."""
        self.attention = QComboBox(self)
        for value in ATTENTIONS:
            self.attention.addItem(value, value)
        self.gain = QCheckBox("on", self)  # the row's label names it; α, σ, ω beside it keep the form narrow
        self.gain_terms: dict[str, QDoubleSpinBox] = {}
        for key, (top, step) in zip(GAIN_TERMS, ((1000.0, 0.1), (1.0, 0.05), (1000.0, 1.0))):
            spin = self.gain_terms[key] = QDoubleSpinBox(self)
            spin.setRange(0.0, top)
            spin.setMaximumWidth(70)  # two decimals (Qt's default), so the GAIN row fits the form's width
            spin.setSingleStep(step)
            spin.setValue(GAIN_TERMS[key])
            spin.setToolTip(h[key])
            spin.valueChanged.connect(self.revalidate)
        row = form.getWidgetPosition(self.padding)[0] + 1
        gain_row = widget_row(self.gain, *(w for name, spin in zip(("α", "σ", "ω"), self.gain_terms.values())
                                           for w in (QLabel(name), spin)))
        for i, (label, widget, tip) in enumerate((("Attention blocks", self.attention, h["attention"]),
                                                  ("GAIN", gain_row, h["gain"]))):
            widget.setToolTip(tip)
            form.insertRow(row + i, label, widget)
        self.attention.currentIndexChanged.connect(self.revalidate)
        self.gain.toggled.connect(self._on_gain_toggled)

    # -- reading and writing the form ------------------------------------------------------------------------
    def build_config(self) -> TrainConfig:
        """The TrainConfig the form describes (raises ConfigError naming the bad field)."""
        mu = optional_number(self.mu, "mu", "the default: 0.5 fine-tuning, 1.5 from scratch")
        mc_conc = optional_number(self.mc_conc, "mc_conc", f"the default: {MC_CONC_PRETRAINED:g} fine-tuning, 0 "
                                  "from scratch")
        weights = self.pretrained.currentText().strip()
        gain = self.gain.isEnabled() and self.gain.isChecked()
        terms = {k: spin.value() if gain else None for k, spin in self.gain_terms.items()}
        kept = dict(self._kept)
        extra, racnn = dict(kept.pop("extra", None) or {}), self.method.currentData() == "racnn"
        for key in ("scale_size", "apn_half") if racnn else RACNN_OPTIONS:  # an opened RA-CNN run's, for RA-CNN only
            extra.pop(key, None)
        extra.update(self.racnn.extra() if racnn else {})
        return TrainConfig(
            **kept, extra=extra,
            data=self.data.text().strip(), out=self.out.text().strip(), model=self.model.currentText(),
            method=self.method.currentData(), xi=self.xi.value(), mu=mu, lam=self.lam.value(), mc_conc=mc_conc,
            epochs=self.epochs.value(), img_size=self.img_size.value(), batch_size=self.batch_size.value(),
            pretrained=None if weights in ("", SCRATCH) else weights, seed=self.seed.value(),
            device=self.device.currentText(), parts=self.parts.value(), fine=self.fine.isChecked(),
            padding=self.padding.currentData() if self.padding.isEnabled() else None, gain=gain, **terms,
            attention=self.attention.currentData() if self.attention.isEnabled() else None)

    def set_config(self, cfg: TrainConfig | dict) -> None:
        """Fill the form from a config (e.g. the one saved with a run)."""
        d = TrainConfig.upgrade_dict(cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg))
        # the settings this form has no field for stay the config's, so Resume continues the same run
        self._kept = {k: (tuple(v) if k == "crop_scale" else v) for k, v in d.items() if k in KEPT_FIELDS}
        try:  # settings that are the automatic ones stay automatic (they follow Pretrained, Method, size, epochs)
            auto = TrainConfig(data="-", out="-", **{k: d[k] for k in ("model", "method", "pretrained", "img_size",
                                                                        "epochs")})
            self._kept = {k: v for k, v in self._kept.items() if k not in AUTOMATIC or v != getattr(auto, k)}
        except (ConfigError, KeyError):
            pass
        self.blockSignals(True)
        self.method.setCurrentIndex(max(0, self.method.findData(d.get("method", "mcloss"))))
        self._fill_models()
        self.model.setCurrentText(str(d.get("model", self.model.currentText())))
        self.data.setText(str(d.get("data", "")))
        self.out.setText(str(d.get("out", "")))
        self.xi.setValue(int(d.get("xi", 3)))
        for edit, key in ((self.mu, "mu"), (self.mc_conc, "mc_conc")):
            value = d.get(key)
            edit.setText("" if value is None else repr(float(value)))
        self.lam.setValue(float(d.get("lam", 10.0)))
        self.epochs.setValue(int(d.get("epochs", 10)))
        self.img_size.setValue(int(d.get("img_size", 224)))
        self.racnn.fill(d.get("extra") or {})
        self.batch_size.setValue(int(d.get("batch_size", 32)))
        self.pretrained.setCurrentText(d.get("pretrained") or SCRATCH)
        if self.device.findText(str(d.get("device", "auto"))) >= 0:
            self.device.setCurrentText(str(d.get("device", "auto")))
        self.seed.setValue(int(d.get("seed", 0)))
        self.parts.setValue(int(d.get("parts", 8)))
        self.fine.setChecked(bool(d.get("fine")))  # upgrade_dict filled it
        self.padding.setCurrentIndex(max(0, self.padding.findData(d.get("padding"))))  # upgrade_dict filled it
        self.attention.setCurrentIndex(max(0, self.attention.findData(d.get("attention"))))  # and these
        self.gain.setChecked(bool(d.get("gain")))
        for key, spin in self.gain_terms.items():
            spin.setValue(float(d[key]) if d.get(key) is not None else GAIN_TERMS[key])
        self._enable_method_fields()
        self.blockSignals(False)
        self.revalidate()

    def set_data(self, folder: str) -> None:
        self.data.setText(folder)

    def set_out(self, folder: str) -> None:
        self.out.setText(folder)

    def suggest_out(self, runs_folder: str) -> str:
        """A new, unused run folder name under ``runs_folder`` (data name, model, method, a number)."""
        data = Path(self.data.text().strip() or "data").name or "data"
        base = f"{data}-{self.model.currentText() or 'model'}-{self.method.currentData()}"
        parent = Path(runs_folder).expanduser()
        n = 1
        while (parent / f"{base}-{n}").exists():
            n += 1
        return str(parent / f"{base}-{n}")

    # -- validation ------------------------------------------------------------------------------------------
    @Slot()
    def revalidate(self) -> None:
        """Build the config, check the folders, show the message and emit ``config_changed``."""
        try:
            cfg = self.build_config()
        except ConfigError as exc:
            self._publish(ConfigState(None, error=str(exc)))
            return
        data, out = Path(cfg.data).expanduser(), Path(cfg.out).expanduser()
        if not data.is_dir():
            self._publish(ConfigState(None, error=f"data={cfg.data!r}: this folder does not exist"))
            return
        holds_run = (out / MODEL_JSON).is_file() or (out / RESUME).is_file()
        can_resume = (out / RESUME).is_file()
        if holds_run:
            note = ("This output folder holds a run: Resume continues it (to the epochs set here); "
                    "Start needs a new folder.")
            self._publish(ConfigState(cfg, note=note, can_start=False, can_resume=can_resume))
        elif out.exists() and (not out.is_dir() or any(out.iterdir())):
            self._publish(ConfigState(None, error=f"out={cfg.out!r}: exists and is not an empty folder: "
                                                  "choose a new folder"))
        else:
            spec = get_spec(cfg.model)
            what = FINE_BACKBONES.get(cfg.model, spec.description) if cfg.fine else spec.description
            speed = describe_speed(cfg)  # the parts defaults, or what an opened run had (METHODS.md#speed)
            self._publish(ConfigState(cfg, note=f"{what}. {speed[0].upper() + speed[1:] + '. ' if speed else ''}Ready.",
                                      can_start=True))

    def _publish(self, state: ConfigState) -> None:
        self.state = state
        self.message.setProperty("error", bool(state.error))
        self.message.setText(state.error or state.note)
        self.message.style().unpolish(self.message)
        self.message.style().polish(self.message)
        self.config_changed.emit(state)

    # -- slots -----------------------------------------------------------------------------------------------
    def _fill_models(self) -> None:
        method = self.method.currentData()
        family = method if method in ("tasn", "racnn") else "partnet"
        current = self.model.currentText()
        names = list_models(family)
        default = "racnn_mobilenet_v2" if family == "racnn" else "mobilenet_v2"
        self.model.blockSignals(True)
        self.model.clear()
        self.model.addItems(names)
        if current in names:
            self.model.setCurrentText(current)
        elif default in names:
            self.model.setCurrentText(default)
        self.model.blockSignals(False)

    def _enable_method_fields(self) -> None:
        """ξ, μ, λ belong to MC-Loss/CE, K to shared parts; fine maps, attention blocks and GAIN to every method
        but TASN (stride 8, attention of its own) and RA-CNN (its own zoom); α, σ, ω to GAIN when it is on."""
        method = self.method.currentData()
        own = method in ("tasn", "racnn")
        for w in (self.xi, self.mu, self.lam):
            w.setEnabled(method in ("mcloss", "ce"))
        self.mc_conc.setEnabled(method == "mcloss")
        self.parts.setEnabled(method == "parts")
        self.racnn.set_enabled(method == "racnn")
        self.fine.setEnabled(not own)
        self.padding.setEnabled(not own)  # TASN and RA-CNN keep torchvision's zeros
        self.attention.setEnabled(not own)  # TASN and RA-CNN have attention of their own
        self.gain.setEnabled(not own)
        for spin in self.gain_terms.values():
            spin.setEnabled(not own and self.gain.isChecked())

    @Slot()
    def _on_method_current_index_changed(self) -> None:
        method = self.method.currentData()
        self.fine.blockSignals(True)
        self.fine.setChecked(DEFAULT_FINE[method])  # the method's default; the user may change it
        self.fine.blockSignals(False)
        self.padding.blockSignals(True)
        self.padding.setCurrentIndex(self.padding.findData(DEFAULT_PADDING[method]))
        self.padding.blockSignals(False)
        # image size, epochs and batch follow the method while they hold the other method's defaults
        new = PARTS_SIZE_EPOCHS_BATCH if method == "parts" else OTHER_SIZE_EPOCHS_BATCH
        old = OTHER_SIZE_EPOCHS_BATCH if method == "parts" else PARTS_SIZE_EPOCHS_BATCH
        spins = (self.img_size, self.epochs, self.batch_size)
        if tuple(spin.value() for spin in spins) == old:
            for spin, value in zip(spins, new):
                spin.setValue(value)
        self._enable_method_fields()
        self._fill_models()
        self.revalidate()

    @Slot()
    def _on_gain_toggled(self) -> None:
        self._enable_method_fields()
        self.revalidate()

    @Slot()
    def _on_data_button_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Data folder", self.data.text() or str(Path.home()))
        if folder:
            self.data.setText(folder)

    @Slot()
    def _on_out_button_clicked(self) -> None:
        start = self.out.text() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Output folder for the run", str(Path(start).parent))
        if folder:
            self.out.setText(folder)

    @Slot()
    def _on_weights_button_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Pretrained backbone weights", str(Path.home()),
                                              "Weights (*.pth *.pt *.safetensors);;All files (*)")
        if path:
            self.pretrained.setCurrentText(path)


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())
