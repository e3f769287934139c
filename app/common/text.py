"""The words the app shows for engine things, in one place: method labels and the text of an error (no Qt here)."""

from __future__ import annotations

from engine.errors import EngineError

#: The training methods (``engine.training.config.METHODS``) as the app names them, in the Train form's order.
TRAINING_METHOD_LABELS = {"mcloss": "MC-Loss", "ce": "CE", "tasn": "TASN", "parts": "Shared parts (PDiscoNet)",
                          "racnn": "RA-CNN"}
#: The map methods (``engine.maps.methods.METHODS``) as the app names them.
MAP_METHOD_LABELS = {"channels": "Part channels (MC-Loss)", "ccmp": "CCMP (all channels)", "tasn": "TASN attention",
                     "cam": "CAM", "gradcam": "Grad-CAM", "guided-gradcam": "Guided Grad-CAM",
                     "guided-backprop": "Guided backprop", "deconvnet": "Deconvnet",
                     "attention": "Attention blocks (CBAM / residual)", "racnn": "RA-CNN zoom squares"}


def training_method_label(name: str) -> str:
    """The label of training method ``name`` (the name itself for one the app has no label for)."""
    return TRAINING_METHOD_LABELS.get(name, name)


def map_method_label(name: str) -> str:
    """The label of map method ``name`` (the name itself for one the app has no label for)."""
    return MAP_METHOD_LABELS.get(name, name)


def error_text(exc: BaseException) -> str:
    """What the user reads for a failed job: an engine error's own message (it says what to do), anything else
    with its type, which names the bug."""
    return str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
