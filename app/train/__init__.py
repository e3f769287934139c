"""The Train workspace: a form over TrainConfig, a child-process job with live curves, and past runs."""

from .page import TrainPage

__all__ = ["TrainPage"]
