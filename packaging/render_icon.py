"""Render the SVG application icon to a square PNG with Qt's SVG renderer (no other tool needed).

    QT_QPA_PLATFORM=offscreen python packaging/render_icon.py resources/icons/fieldmark.svg build/fieldmark.png 256
"""

from __future__ import annotations

import sys
from pathlib import Path


def render(svg: Path, png: Path, size: int = 256) -> None:
    """Draw ``svg`` centred on a transparent ``size`` × ``size`` image, keeping its aspect ratio, and save it."""
    from PySide6.QtCore import QRectF, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # noqa: F841 - QImage painting needs one
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"render_icon: {svg} is not a valid SVG file")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    view = renderer.viewBoxF()
    scale = size / max(view.width(), view.height(), 1e-9)
    w, h = view.width() * scale, view.height() * scale
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter, QRectF((size - w) / 2, (size - h) / 2, w, h))
    painter.end()
    png.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(png), "PNG"):
        raise SystemExit(f"render_icon: cannot write {png}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    render(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 256)
    print(sys.argv[2])
