"""The Compare workspace: two classes' strongest part crops, channel by channel."""

from .page import ComparePage

__all__ = ["ComparePage"]
