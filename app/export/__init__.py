"""The Export workspace: discovered parts written as a data set."""

from .page import ExportPage

__all__ = ["ExportPage"]
