"""``fieldmark-gui [DATA_OR_RUN]``: the desktop application.

With nothing given it reopens the last session's folder and run; on a first start it builds and opens the
toy-birds demo (when the engine ships :mod:`engine.demo`), or else shows an empty library with "Open a folder".
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fieldmark-gui", description="Fieldmark desktop application")
    p.add_argument("path", nargs="?", help="a data folder or a run folder to open")
    p.add_argument("--settings", metavar="INI", help="keep settings in this INI file instead of the user's")
    p.add_argument("--theme", choices=["light", "dark"], help="start with this theme")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--quit-after", type=int, metavar="MS", help="close the window and quit with status 0 after MS "
                                                               "milliseconds (smoke tests of the packaged app)")
    return p


def _open_default(window) -> None:
    """What to show when nothing is given: the last session, else the demo, else the "Open a folder" prompt."""
    from . import settings as app_settings
    from .demo import DemoBuilder, demo_available, demo_is_built, demo_paths
    from engine.runs import is_run

    last_folder = app_settings.get_str(app_settings.LAST_FOLDER)
    last_run = app_settings.get_str(app_settings.LAST_RUN)
    if last_run and is_run(last_run):
        window.open_run(last_run, open_data=not (last_folder and Path(last_folder).is_dir()))
    if last_folder and Path(last_folder).is_dir():
        window.open_folder(last_folder)
        return
    if last_run and is_run(last_run):
        return
    if demo_available():
        try:
            if demo_is_built():
                data, run = demo_paths()
                window.open_folder(data)
                window.open_run(run, open_data=False)
                return
        except Exception as exc:  # noqa: BLE001 - a half-written engine.demo must not stop the app
            log.warning("the demo cannot be located: %s", exc)
        DemoBuilder(window).start()
        return
    window.library.show_prompt()


def main(argv: list[str] | None = None) -> int:
    """Start the application; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:  # a frozen app runs its own child jobs (see app.train.process.child_command)
        from .child import main as child_main

        return child_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from .qtcompat import guard_singletons

    guard_singletons()
    from PySide6.QtWidgets import QApplication

    from . import settings as app_settings
    from .resources import app_icon

    if args.settings:
        app_settings.use_settings_file(args.settings)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(app_settings.ORGANISATION)
    app.setApplicationName(app_settings.APPLICATION)
    app.setApplicationDisplayName("Fieldmark")
    app.setDesktopFileName("fieldmark")
    app.setWindowIcon(app_icon())
    if args.theme:
        app_settings.set_value(app_settings.THEME, args.theme)

    from .window import MainWindow

    window = MainWindow()
    window.show()
    if args.path:
        window.open_path(str(Path(args.path).expanduser()))
    else:
        _open_default(window)
    if args.quit_after is not None:  # packaging/smoke_test.sh: start, open, quit without a user
        from PySide6.QtCore import QTimer

        def _quit() -> None:
            log.info("quitting after %d ms (--quit-after)", args.quit_after)
            window.close()
            app.quit()

        QTimer.singleShot(max(0, args.quit_after), _quit)
    return int(app.exec())


if __name__ == "__main__":
    sys.exit(main())
