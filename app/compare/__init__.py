"""The Compare workspace: two species side by side, and the parts that tell them apart."""

from .page import ComparePage

__all__ = ["ComparePage"]
