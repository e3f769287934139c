"""The documentation stays true: the README's Python API block runs as written, every engine/app name the docs
mention exists, and every anchor of ``docs/METHODS.md`` that the code cites is there."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil

import pytest
import torch

from .conftest import ROOT, make_class_folders

DOCS = [ROOT / "README.md", ROOT / "docs" / "ARCHITECTURE.md", ROOT / "docs" / "METHODS.md"]


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
