"""The Explore workspace: maps, parts and resampled views of the active run on the selected image."""

from .page import ExplorePage

__all__ = ["ExplorePage"]
