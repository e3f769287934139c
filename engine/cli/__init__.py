"""The `fieldmark` command. Each sub-command lives in its own module with ``register(subparsers)``.

Every user mistake ends as one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from engine import __version__
from engine.errors import Cancelled, EngineError

#: Sub-command modules of engine.cli, in the order `fieldmark --help` lists them.
COMMANDS = ["train", "predict", "scan", "models", "toybirds", "demo", "evaluate", "explain", "export", "names",
            "guide"]

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fieldmark",
        description="Find the field marks of bird species without part annotation (MC-Loss, TASN).",
    )
    parser.add_argument("--version", action="version", version=f"fieldmark {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except Cancelled:
        print("fieldmark: stopped.", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nfieldmark: interrupted.", file=sys.stderr)
        return 130
    except EngineError as exc:
        rank = os.environ.get("RANK", "0")  # the ranks of a distributed job each say which they are
        who = "fieldmark" if rank == "0" or os.environ.get("WORLD_SIZE", "1") == "1" else f"fieldmark (rank {rank})"
        print(f"{who}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
