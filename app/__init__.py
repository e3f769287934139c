"""Fieldmark desktop application (PySide6 + pyqtgraph) over the :mod:`engine` package.

Importing ``app`` itself pulls in no Qt, so that the child-process runner (:mod:`app.child`) stays light.
"""

__all__: list[str] = []
