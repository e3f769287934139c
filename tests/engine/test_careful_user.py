"""Small things a careful user hits (issue 16, item 8): range errors that name the real bound, one definition of
CUB's part names, export class folders that never merge, CUB image paths that stay in the data folder, and an
SPDX license string that setuptools takes without a deprecation."""

from __future__ import annotations

import ast
import csv
import dataclasses
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.data import scan
from engine.errors import ConfigError
from engine.export.crops import class_folders, export_parts
from engine.runs import LoadedRun
from engine.training.config import TrainConfig

from ..conftest import ROOT
from .test_export import run_all, toy  # noqa: F401  (toy: toy birds and a run whose maps are known)


@pytest.mark.parametrize("field,value,bound", [("epochs", 100001, "100000"), ("batch_size", 5000, "4096"),
                                               ("epochs", 0, "between 1 and"), ("lr_head", 150.0, "100"),
                                               ("lam", float("nan"), "0 or more")])
def test_range_errors_name_the_real_bound(field, value, bound):
    with pytest.raises(ConfigError) as info:
        TrainConfig(data="d", out="o", model="smallnet", **{field: value})
    msg = str(info.value)
    assert f"{field}=" in msg and bound in msg
    assert "at least 1" not in msg and "non-negative number" not in msg


def test_cub_part_names_are_defined_once():
    from engine.data import cub
    from engine.evaluation import metrics

    assert metrics.CUB_PARTS is cub.CUB_PARTS and len(cub.CUB_PARTS) == 15
    defined = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                defined += [path.relative_to(ROOT).as_posix() for t in targets
                            if isinstance(t, ast.Name) and t.id == "CUB_PARTS"]
    assert defined == ["engine/data/records.py"]


# ------------------------------------------------------------------------------------------- CUB image paths
def _cub(root: Path, paths: list[str]) -> Path:
    (root / "images" / "001.A").mkdir(parents=True)
    (root / "images" / "002.B").mkdir(parents=True)
    img = cv2.imencode(".jpg", np.full((20, 20, 3), 120, np.uint8))[1].tobytes()
    for rel in ("001.A/a.jpg", "002.B/b.jpg"):
        (root / "images" / rel).write_bytes(img)
    (root.parent / "secret.jpg").write_bytes(img)  # a real image outside the data folder
    (root / "images.txt").write_text("".join(f"{i + 1} {p}\n" for i, p in enumerate(paths)))
    (root / "classes.txt").write_text("1 001.A\n2 002.B\n")
    (root / "image_class_labels.txt").write_text("".join(f"{i + 1} {1 + i % 2}\n" for i in range(len(paths))))
    (root / "train_test_split.txt").write_text("".join(f"{i + 1} 1\n" for i in range(len(paths))))
    return root


def test_cub_image_paths_must_stay_inside_the_images_folder(tmp_path):
    secret = tmp_path / "secret.jpg"
    paths = ["001.A/a.jpg", "002.B/b.jpg", "../../secret.jpg", str(secret), "001.A/../../../secret.jpg",
             "001.A/../001.A/a.jpg"]
    report = scan(_cub(tmp_path / "CUB_200_2011", paths))
    used = sorted(Path(s.path).resolve().relative_to(tmp_path).as_posix() for s in report.samples)
    assert used == ["CUB_200_2011/images/001.A/a.jpg", "CUB_200_2011/images/001.A/a.jpg",
                    "CUB_200_2011/images/002.B/b.jpg"]  # "001.A/../001.A/a.jpg" stays inside: it is used
    outside = {s.detail.split(":", 1)[0]: s for s in report.skipped}
    assert set(outside) == {"images.txt, image id 3", "images.txt, image id 4", "images.txt, image id 5"}
    for s in outside.values():
        assert s.reason == "outside the images folder" and "give a path inside" in s.detail
    assert "'..'" in outside["images.txt, image id 3"].detail
    assert "absolute" in outside["images.txt, image id 4"].detail
    assert all(secret != Path(s.path).resolve() for s in report.samples)


# ------------------------------------------------------------------------------------------- export folders
def test_class_folders_are_distinct_and_said():
    names = ["Gull", "Gull.", "gull", "A:B", "A_B", "A?B", "Gull-2"]
    folders, notes = class_folders(names)
    assert len({f.casefold() for f in folders.values()}) == len(names)
    assert folders["Gull"] == "Gull" and folders["Gull."] == "Gull-2" and folders["gull"] == "gull-3"
    assert folders["A:B"] == "A_B" and folders["A_B"] == "A_B-2" and folders["A?B"] == "A_B-3"
    assert folders["Gull-2"] == "Gull-2-2"
    assert len(notes) == 5 and any("'Gull.'" in n and "Gull-2/" in n and "'Gull'" in n for n in notes)
    again, _ = class_folders(["new", "gull"], taken={"Gull": "Gull"})  # earlier exports' folders are kept
    assert again == {"Gull": "Gull", "new": "new", "gull": "gull-2"}


def test_classes_whose_names_make_one_folder_are_exported_apart(toy, tmp_path):  # noqa: F811
    root, report, run = toy
    names = ["Gull:", "Gull?"] + report.classes[2:]  # both become the folder "Gull_"
    renamed = dataclasses.replace(report, classes=names)
    twin = LoadedRun(run.run_dir, run.model, {**run.meta, "classes": names})
    summary, _ = run_all(export_parts(twin, renamed, tmp_path / "out", split="all", crop_size=16))
    with open(tmp_path / "out" / "parts.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    folder_of: dict[str, set[str]] = {}
    for r in rows:
        folder_of.setdefault(r["class"], set()).add(r["crop"].split("/")[0])
    assert folder_of["Gull:"] == {"Gull_"} and folder_of["Gull?"] == {"Gull_-2"}
    owners = [c for c, f in folder_of.items() if f & {"Gull_"}]
    assert owners == ["Gull:"]  # nothing of the other class in its folder
    assert any("'Gull?'" in n and "Gull_-2/" in n for n in summary.notes), summary.notes


# ------------------------------------------------------------------------------------------------ pyproject
def test_pyproject_license_is_an_spdx_string_setuptools_takes(monkeypatch):
    tomllib = pytest.importorskip("tomllib")
    setuptools = pytest.importorskip("setuptools")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution
    from setuptools.warnings import SetuptoolsDeprecationWarning

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert data["project"]["license"] == "MIT"
    (req,) = [r for r in data["build-system"]["requires"] if r.startswith("setuptools")]
    assert req == "setuptools>=77"  # the first setuptools that reads an SPDX license expression (PEP 639)
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} here predates PEP 639")
    monkeypatch.chdir(ROOT)  # the package search runs from the project folder
    with warnings.catch_warnings():
        warnings.simplefilter("error", SetuptoolsDeprecationWarning)  # the license table is one
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert dist.metadata.license_expression == "MIT"
