"""The documentation stays true: the README's Python API block runs as written, every engine/app name the docs
mention exists, every anchor of ``docs/METHODS.md`` that the code cites is there, every relative link and anchor
of the documents resolves, RESULTS.md's tables are what their CSV files give, and ARCHITECTURE.md's room table is
the import contracts of ``pyproject.toml``."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
import tomllib
from pathlib import Path

import pytest
import torch

from .conftest import ROOT, make_class_folders

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


@pytest.mark.slow
def test_readme_python_block_runs_as_written(tmp_path, monkeypatch, capsys):
    """The block's own paths, prepared in a scratch folder: ``photos/`` (two tiny classes), ``bird.jpg`` and
    ``mobilenet_v2_imagenet1k.pth`` (a randomly initialised torchvision state dict: the file format of the real
    weights, without the download)."""
    from torchvision.models import mobilenet_v2

    (block,) = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    make_class_folders(tmp_path / "photos", classes=2, per_class=3, size=(40, 48))
    shutil.copy(tmp_path / "photos" / "class_1" / "img_000.jpg", tmp_path / "bird.jpg")
    torch.manual_seed(0)
    torch.save(mobilenet_v2(weights=None).state_dict(), tmp_path / "mobilenet_v2_imagenet1k.pth")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(ROOT / "README.md"), "exec"), {"__name__": "readme"})  # noqa: S102 - our own README
    out = capsys.readouterr().out
    assert "Started(" in out and "EpochEnd(epoch=6" in out and "runs/r1" in out
    assert (tmp_path / "runs" / "r1" / "model.safetensors").is_file()
    last = out.strip().splitlines()[-1]  # names of the ξ = 3 channel maps, then (3, H, W) at the photo's size
    assert last.endswith("(3, 40, 48)"), last


def dotted_names(text: str) -> set[str]:
    return set(re.findall(r"\b((?:engine|app)(?:\.[A-Za-z_]\w*)+)", text))


def resolve(name: str) -> object:
    """The module, or the attribute of the longest importable module prefix, that ``name`` spells."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_names_in_the_docs_exist(doc):
    names = dotted_names(doc.read_text(encoding="utf-8"))
    if importlib.util.find_spec("PySide6") is None:
        names = {n for n in names if not n.startswith("app.")}
    missing = []
    for name in sorted(names):
        try:
            resolve(name)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{name}: {exc}")
    assert not missing, f"{doc.name} names what does not exist: {missing}"


def test_method_anchors_cited_by_the_code_exist():
    methods = (ROOT / "docs" / "METHODS.md").read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="([\w-]+)"></a>', methods))
    cited = {}
    for folder in ("engine", "app", "tests"):
        for f in (ROOT / folder).rglob("*.py"):
            for anchor in re.findall(r"docs/METHODS\.md#([\w-]+)", f.read_text(encoding="utf-8")):
                cited.setdefault(anchor, f.relative_to(ROOT))
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        links = re.findall(r"METHODS\.md#([\w-]+)", text)
        if doc.name == "METHODS.md":
            links += re.findall(r"\]\(#([\w-]+)\)", text)  # its own table of contents and cross-references
        for anchor in links:
            cited.setdefault(anchor, doc.name)
    assert {"mc-loss", "tasn", "maps", "part-evaluation", "published-protocol", "shared-parts"} <= anchors
    assert "maps" in cited and "part-evaluation" in cited  # the code does cite it
    assert not {a: w for a, w in cited.items() if a not in anchors}, "cited anchors missing from docs/METHODS.md"


# -- links and anchors --------------------------------------------------------------------------------------------

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(markdown: str) -> str:
    """``markdown`` without its fenced code blocks and inline code spans (links there are not links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", markdown))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, without punctuation, spaces turned into hyphens."""
    text = re.sub(r"<[^>]+>", "", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    """Every anchor of ``doc``: its headings' GitHub slugs (repeats numbered -1, -2, ...) and explicit ids."""
    text = doc.read_text(encoding="utf-8")
    found: set[str] = set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", text), flags=re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_slugs_are_githubs():
    assert slug("1. MC-Loss: ξ channels per class") == "1-mc-loss-ξ-channels-per-class"
    assert slug("Shared parts (`--method parts`)") == "shared-parts---method-parts"
    assert slug("The Python API") == "the-python-api"


def broken_links(doc: Path) -> list[str]:
    """The relative links of ``doc`` whose file, or whose #anchor in that file, is not there."""
    broken = []
    for target in LINK.findall(prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...: not checked here
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{target}: no {path}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no anchor #{anchor} in {dest.name}")
    return broken


def test_a_broken_link_is_found(tmp_path):
    doc = tmp_path / "a.md"
    (tmp_path / "b.md").write_text("# Title\n\n<a id=\"here\"></a>\n## Two words\n", encoding="utf-8")
    doc.write_text("[ok](b.md#here) [ok](b.md#two-words) [ok](#own) [web](https://example.org/x#y)\n"
                   "[gone](c.md) [no anchor](b.md#there) [no own](#nowhere) `[code](c.md)`\n\n## Own\n"
                   "```\n[fenced](d.md)\n```\n", encoding="utf-8")
    assert broken_links(doc) == ["c.md: no c.md", "b.md#there: no anchor #there in b.md",
                                 "#nowhere: no anchor #nowhere in a.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_link_and_anchor_resolves(doc):
    assert not broken_links(doc), f"{doc.name}: {broken_links(doc)}"


def test_code_cites_results_anchors_that_exist():
    """Comments cite figures as ``docs/RESULTS.md#<anchor>``; each anchor they cite must be there."""
    have = anchors(ROOT / "docs" / "RESULTS.md")
    cited = {}
    for folder in ("engine", "app", "tests", "tools", "benchmarks"):
        for f in (ROOT / folder).rglob("*.py"):
            for anchor in re.findall(r"docs/RESULTS\.md#([\w-]+)", f.read_text(encoding="utf-8")):
                cited.setdefault(anchor, str(f.relative_to(ROOT)))
    assert not {a: f for a, f in cited.items() if a not in have}, "cited anchors missing from docs/RESULTS.md"


# -- RESULTS.md is rendered from its data -------------------------------------------------------------------------

def render_results_module():
    spec = importlib.util.spec_from_file_location("render_results", ROOT / "tools" / "render_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_tables_are_their_csv_files():
    rr = render_results_module()
    text = (ROOT / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    assert rr.render(text) == text, "docs/RESULTS.md differs from docs/results/*.csv: run tools/render_results.py"
    used = rr.used_tables(text)
    assert sorted(used) == sorted(f.name for f in (ROOT / "docs" / "results").glob("*.csv")), "a CSV not rendered"
    assert len(used) == len(set(used)), "a CSV rendered twice"


def test_render_results_replaces_a_stale_table(tmp_path):
    rr = render_results_module()
    (tmp_path / "t.csv").write_text('run,figure\n"a, b",1.5\nc|d,2\n', encoding="utf-8")
    stale = "intro\n<!-- table: t.csv -->\n| old |\n|---|\n\nafter\n"
    assert rr.render(stale, tmp_path) == ("intro\n<!-- table: t.csv -->\n| run | figure |\n|---|---|\n"
                                          "| a, b | 1.5 |\n| c\\|d | 2 |\n\nafter\n")


# -- ARCHITECTURE.md's rooms are the import contracts ---------------------------------------------------------------

def contract_layers() -> dict[str, list[tuple[str, frozenset[str]]]]:
    """Each layers contract of pyproject.toml as (kind, modules) per layer, top first: kind "|" for independent
    rooms, ":" for rooms that may import each other, "" for a single room."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    out = {}
    for contract in config["tool"]["importlinter"]["contracts"]:
        if contract["type"] != "layers":
            continue
        layers = []
        for layer in contract["layers"]:
            kind = "|" if "|" in layer else ":" if ":" in layer else ""
            layers.append((kind, frozenset(m.strip() for m in re.split(r"[|:]", layer))))
        out[contract["id"]] = layers
    return out


def documented_layers(text: str) -> list[tuple[str, frozenset[str]]]:
    """The room table of ARCHITECTURE.md (the code block after "## The rooms"), one (kind, modules) per room line:
    ``a | b`` independent rooms, ``a.x, .y`` or ``a.x, a.y`` one layer (``:``), a lone name a single room."""
    section = text.split("## The rooms", 1)[1]
    block = re.search(r"^```\n(.*?)^```", section, flags=re.S | re.M)[1]
    layers = []
    for line in block.splitlines():
        if not line.strip() or line[0].isspace():
            continue  # a blank line or the continuation of a description
        rooms = re.split(r"\s{2,}", line.strip())[0]
        if "|" in rooms:
            layers.append(("|", frozenset(r.strip() for r in rooms.split("|"))))
        elif "," in rooms:
            names = [r.strip() for r in rooms.split(",")]
            package = names[0].split(".")[0]
            layers.append((":", frozenset(package + n if n.startswith(".") else n for n in names)))
        else:
            layers.append(("", frozenset([rooms])))
    return layers


def test_architecture_room_table_is_the_contracts():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    documented = documented_layers(text)
    contracts = contract_layers()
    for cid, package in (("engine-layers", "engine"), ("app-layers", "app")):
        rows = [(kind, rooms) for kind, rooms in documented if next(iter(rooms)).split(".")[0] == package]
        assert rows == contracts[cid], f"docs/ARCHITECTURE.md's {package} rooms differ from the {cid} contract"
    assert len(documented) == sum(len(layers) for layers in contracts.values())


def test_architecture_names_the_qt_free_jobs():
    """The modules the ``jobs-without-qt`` contract keeps Qt-free are the ones ARCHITECTURE.md calls Qt-free."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "jobs-without-qt"]
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for module in contract["source_modules"]:
        assert module in text or module.replace(".", "/") + ".py" in text, f"ARCHITECTURE.md does not name {module}"


def test_the_room_table_parser_sees_a_wrong_room():
    text = "## The rooms\n\n```\nengine.cli      x\nengine.a | engine.b\n                y\nengine.c, .d    z\n```\n"
    assert documented_layers(text) == [("", frozenset({"engine.cli"})), ("|", frozenset({"engine.a", "engine.b"})),
                                       (":", frozenset({"engine.c", "engine.d"}))]
