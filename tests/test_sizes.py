"""Files stay small: no module of engine/ or app/ over 400 lines, no function or method over 80 (DESIGN.md, "Code").

A module counts its physical lines; a function counts from its ``def`` line (decorators not included) to its last
line, as ``ast`` gives them, so a nested function counts inside its parent and again on its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def modules() -> list[Path]:
    return sorted(p for package in ("engine", "app") for p in (ROOT / package).rglob("*.py")
                  if "__pycache__" not in p.parts)


def module_lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def long_functions(path: Path) -> list[tuple[str, int]]:
    """(qualified name, lines) of each function in ``path`` over MAX_FUNCTION_LINES."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                lines = child.end_lineno - child.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append((name, lines))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def offenders() -> list[tuple[str, int]]:
    """("file" or "file:function", lines) of everything over its limit, in file order."""
    out = []
    for path in modules():
        rel = path.relative_to(ROOT).as_posix()
        lines = module_lines(path)
        if lines > MAX_MODULE_LINES:
            out.append((rel, lines))
        out += [(f"{rel}:{name}", n) for name, n in long_functions(path)]
    return out


def test_no_module_or_function_is_too_long():
    over = [f"{where}: {n} lines" for where, n in offenders()]
    assert not over, (f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function:\n  "
                      + "\n  ".join(over))


def test_the_counter_sees_a_long_function_and_a_long_module(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "m.py"
    path.write_text(f"class A:\n    def f(self):\n{body.replace('    ', '        ')}\n\n\ndef g():\n    pass\n",
                    encoding="utf-8")
    assert long_functions(path) == [("A.f", MAX_FUNCTION_LINES + 1)]
    path.write_text("x = 1\n" * (MAX_MODULE_LINES + 1), encoding="utf-8")
    assert module_lines(path) == MAX_MODULE_LINES + 1
