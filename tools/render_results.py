"""Render the measured figures of ``docs/results/*.csv`` into the tables of ``docs/RESULTS.md``.

    .venv/bin/python tools/render_results.py           # rewrite the tables in docs/RESULTS.md from the CSV files
    .venv/bin/python tools/render_results.py --check   # exit 1 (and say which) when RESULTS.md differs from them

A table's place in RESULTS.md is the line ``<!-- table: NAME.csv -->``; the table is the run of ``|`` lines right
after it (none yet is fine). A CSV's first row is the table's header; every cell is Markdown, written as it is to
appear (``|`` in a cell is escaped). Edit the CSV, never the rendered table: ``tests/test_docs.py`` fails when the
two differ.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "RESULTS.md"
DATA = ROOT / "docs" / "results"
MARKER = re.compile(r"<!-- table: ([\w.-]+\.csv) -->")


def read_rows(path: Path) -> list[list[str]]:
    """The CSV's rows (header first), each as long as the header."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [row for row in csv.reader(fh) if row]
    if not rows:
        raise ValueError(f"{path.name}: no header")
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            raise ValueError(f"{path.name}, row {n}: {len(row)} cells, the header has {len(rows[0])}")
    return rows


def table(path: Path) -> list[str]:
    """The Markdown lines of the table that ``path`` holds."""
    header, *body = read_rows(path)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.strip().replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in body]


def render(text: str, data: Path = DATA) -> str:
    """``text`` with the table after each marker replaced by the one its CSV file gives."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        out.append(lines[i])
        match = MARKER.fullmatch(lines[i].strip())
        i += 1
        if match:
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            out.extend(table(data / match[1]))
    return "\n".join(out)


def used_tables(text: str) -> list[str]:
    """The CSV files that ``text`` renders, in order."""
    return MARKER.findall(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when RESULTS.md is not rendered")
    args = p.parse_args(argv)
    text = RESULTS.read_text(encoding="utf-8")
    rendered = render(text)
    unused = sorted({f.name for f in DATA.glob("*.csv")} - set(used_tables(text)))
    if unused:
        print(f"render_results: not in {RESULTS.name}: {', '.join(unused)}", file=sys.stderr)
    if args.check:
        if rendered != text:
            print(f"render_results: {RESULTS.relative_to(ROOT)} differs from docs/results/*.csv: run "
                  "tools/render_results.py", file=sys.stderr)
            return 1
        return 1 if unused else 0
    if rendered != text:
        RESULTS.write_text(rendered, encoding="utf-8")
        print(f"render_results: wrote {RESULTS.relative_to(ROOT)}")
    return 1 if unused else 0


if __name__ == "__main__":
    sys.exit(main())
