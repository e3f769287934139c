"""Errors the engine raises on purpose. Each says what happened, the value, and what to do."""


class EngineError(Exception):
    """Base class: a user-facing problem (bad input, bad file, bad setting). Never a bug."""


class ConfigError(EngineError, ValueError):
    """A configuration value is invalid."""


class DataError(EngineError):
    """A data folder cannot be used (no images, wrong layout, too few classes)."""


class DecodeError(EngineError):
    """One image file cannot be decoded. ``reason`` is a short machine-friendly word."""

    def __init__(self, path, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))


class CheckpointError(EngineError):
    """A model file or run folder cannot be loaded."""


class WeightsError(EngineError):
    """Pretrained weights cannot be found or do not fit the model."""


class Cancelled(EngineError):
    """The user asked a long job to stop. Not an error to show."""
