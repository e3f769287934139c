"""The Library workspace: open a folder, see the scan's report, browse thumbnails, preview one image."""

from .page import LibraryPage

__all__ = ["LibraryPage"]
