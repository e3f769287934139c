"""Screenshots of every workspace, for the README.

Run it under a display, for example a virtual one:

    xvfb-run -s "-screen 0 1600x1000x24" .venv/bin/python tools/screenshots.py \
        --data ../shared/data/birds-dev --run runs/birds-mcloss --out docs/screenshots

It starts the real window with private settings (the user's are never read or written), opens the data folder
(and the run, if given), waits for the scan and the thumbnails, switches to each workspace, waits for its
workers, and saves ``<out>/<workspace>.png`` (each under 500 KB).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("screenshots")
MAX_BYTES = 500_000  # README images: keep each well under 1 MB


def wait(ms: int) -> None:
    """Run the event loop for ``ms`` milliseconds."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def wait_until(predicate, timeout_s: float, step_ms: int = 100) -> bool:
    """Run the event loop until ``predicate()`` is true or ``timeout_s`` passes; returns the predicate."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        wait(step_ms)
    return bool(predicate())


def idle(window) -> bool:
    """No worker is busy: the global thread pool, and every object of the window with ``is_idle()`` (the
    thumbnail loader, the workspaces' worker lanes) or ``is_running()`` (jobs)."""
    from PySide6.QtCore import QObject, QThreadPool

    if QThreadPool.globalInstance().activeThreadCount():
        return False
    for obj in window.findChildren(QObject):
        if callable(getattr(obj, "is_idle", None)) and not obj.is_idle():
            return False
        if callable(getattr(obj, "is_running", None)) and obj.is_running():
            return False
    return True


def save(window, path: Path) -> int:
    """Grab the window to ``path`` as PNG; above ``MAX_BYTES`` (photo-heavy pages) reduce it to 256 colours, the
    part colours among them."""
    from PySide6.QtGui import QImage
    from PySide6.QtWidgets import QPlainTextEdit

    for view in window.findChildren(QPlainTextEdit, "logView"):  # no paths of this machine in the shots
        view.clear()
    wait(50)
    image = window.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    image.save(str(path), "PNG", 9)
    if path.stat().st_size > MAX_BYTES:
        try:
            from PIL import Image  # comes with torchvision; palette from the image itself, dithered

            from engine.fieldmarks.palette import PART_COLOURS

            rgb = Image.open(path).convert("RGB")
            # the part colours are kept exactly: a palette fitted to the photos alone merges them (green into blue)
            fitted = rgb.quantize(256 - len(PART_COLOURS), method=Image.Quantize.MEDIANCUT)
            palette = Image.new("P", (1, 1))
            palette.putpalette(fitted.getpalette()[:3 * (256 - len(PART_COLOURS))]
                               + [v for colour in PART_COLOURS for v in colour])
            rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
        except ImportError:
            image.convertToFormat(QImage.Format.Format_Indexed8).save(str(path), "PNG", 9)
    return path.stat().st_size


# -- Explore and Compare: their staging before the grab (owned by the Explore/Compare engineer) ---------------
def stage_workspace(window, name: str, pair: tuple[str, str] | None = None, row: int = 0) -> None:
    """Put Explore and Compare in a telling state once their workers are idle: Explore overlays the strongest
    part map of the selected photo (a ``parts`` run: all its parts, the crop panel on the class's top-scoring part)
    and points the linked cursor at its peak (so the three views show where the part lies in each); Compare waits
    for both classes' crop rows, or for a ``parts`` run compares ``pair`` (species names; default: the most confused
    pair) and selects its separating-part row ``row`` (0-based). Other workspaces are left as they are."""
    pages = getattr(window, "workspaces", None)
    if pages is None:
        return
    if name == "Explore":
        page = pages.explore
        if not wait_until(lambda: page.result is not None and page.lane.is_idle(), 120):
            log.warning("Explore: no maps after 2 minutes")
            return
        parts = page.result.parts
        if page.all_parts():  # a parts run: all parts drawn, the crop panel on the class's top-scoring part
            best = page.focused_part()
        else:
            best = max(range(len(parts)), key=lambda k: parts[k].score)
            page.show_map(best)
        page.resampled.point_at("original", parts[best].peak)
        wait(300)
    elif name == "Compare":
        page = pages.compare
        if page.view == "parts":
            if not wait_until(lambda: page.scores is not None, 600):
                log.warning("Compare: no part scores after 10 minutes")
                return
            if pair is not None:
                classes = list(page.run.classes)
                unknown = [n for n in pair if n not in classes]
                if unknown:
                    log.error("Compare: --pair %s: not a class of the run (%s)", ",".join(unknown),
                              ", ".join(classes))
                    return
                page.set_pair(classes.index(pair[0]), classes.index(pair[1]))
            if not wait_until(lambda: bool(page.separation_view.rows) and page.parts_lane.is_idle(), 300):
                log.warning("Compare: no separating parts after 5 minutes")
                return
            page.select_row(row)
            wait(300)
        elif not wait_until(lambda: all(col.crop_labels for col in page.columns), 300):
            log.warning("Compare: no crop rows after 5 minutes")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="data folder to open in the Library")
    p.add_argument("--run", help="run folder to open as the active run")
    p.add_argument("--out", default="docs/screenshots", help="folder for the PNG files")
    p.add_argument("--theme", choices=["light", "dark"], default="light")
    p.add_argument("--size", default="1500x920", help="window size, WxH")
    p.add_argument("--select", type=int, default=0, help="row of the Library image to select")
    p.add_argument("--only", default="", help="comma-separated workspaces to grab (default: all)")
    p.add_argument("--suffix", default="", help="added to each file name, e.g. -dark")
    p.add_argument("--pair", default="", help="Compare, parts run: the two species, comma-separated (default: "
                   "the most confused pair)")
    p.add_argument("--row", type=int, default=1, help="Compare, parts run: the separating part to select (1-9)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from app.qtcompat import guard_singletons

    guard_singletons()
    from PySide6.QtWidgets import QApplication

    from app import settings as app_settings

    tmp = tempfile.TemporaryDirectory(prefix="fieldmark-shots-")
    app_settings.use_settings_file(Path(tmp.name) / "settings.ini")
    app_settings.set_value(app_settings.THEME, args.theme)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Fieldmark")
    from app.resources import app_icon
    from app.window import MainWindow

    app.setWindowIcon(app_icon())
    window = MainWindow()
    window.confirm_close = False
    w, h = (int(v) for v in args.size.lower().split("x"))
    window.resize(w, h)
    window.show()
    wait(300)

    if args.run:
        window.open_run(str(Path(args.run).expanduser()), open_data=False)
    window.open_folder(str(Path(args.data).expanduser()))
    lib = window.library
    if not wait_until(lambda: lib.report is not None and not lib.is_scanning(), 120):
        log.error("the scan of %s did not finish", args.data)
        return 1
    lib.grid.setCurrentIndex(lib.model.index(min(args.select, lib.model.rowCount() - 1), 0))
    wait_until(lambda: bool(lib.preview.shown_path), 20)
    wait(500)
    wait_until(lib.loader.is_idle, 60)
    if args.run:  # the run's curves and settings on Train (opening data resets the form's data folder)
        window.open_run(str(Path(args.run).expanduser()), open_data=False)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = {n.strip().lower() for n in args.only.split(",") if n.strip()}
    for name in window.workspace_names:
        if only and name.lower() not in only:
            continue
        window.set_workspace(name)
        wait(800)
        if not wait_until(lambda: idle(window), 300, 250):
            log.warning("%s: workers still busy after 5 minutes; taking the screenshot anyway", name)
        pair = tuple(n.strip() for n in args.pair.split(",")) if args.pair else None
        stage_workspace(window, name, pair if pair and len(pair) == 2 else None, args.row - 1)
        wait(800)
        path = out / f"{name.lower()}{args.suffix}.png"
        size = save(window, path)
        log.info("%s: %s (%.0f KB)", name, path, size / 1024)
    window.close()
    wait(200)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
