"""Entry point of the frozen desktop application (``fieldmark-gui``): :func:`app.main.main`.

``fieldmark-gui --child ...`` runs a training or demo job (the app starts itself that way, see
``app.train.process.child_command``).
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from app.main import main

    sys.exit(main())
