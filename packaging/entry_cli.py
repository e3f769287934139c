"""Entry point of the frozen command line tool (``fieldmark``): :func:`engine.cli.main`."""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from engine.cli import main

    sys.exit(main())
