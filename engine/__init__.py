"""Fieldmark engine: data, models, losses, training, maps and part export. No Qt here."""

__version__ = "0.1.0"
