"""Damaged and foreign run folders through the CLI: `fieldmark predict / explain / export` (and `train --resume`,
`train --pretrained`) refuse them with exit status 2 and one line that says what is wrong, never a traceback,
and a pickle is never executed."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from engine import runs
from engine.models import create_model

from ..conftest import make_class_folders
from .conftest import TINY, run_cli


class Evil:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def wrong_class_count(run: Path, tmp: Path) -> str:
    runs.save_state_dict(run / runs.MODEL_WEIGHTS, create_model("smallnet", 2, 3, pretrained=None))
    return "does not fit the model"


def truncated_weights(run: Path, tmp: Path) -> str:
    w = run / runs.MODEL_WEIGHTS
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])
    return "damaged or truncated"


def pickled_weights(run: Path, tmp: Path) -> str:
    (run / runs.MODEL_WEIGHTS).write_bytes(pickle.dumps({"body.0.weight": Evil(tmp / "pwned")}))
    return "damaged or truncated"


def newer_version(run: Path, tmp: Path) -> str:
    meta = json.loads((run / runs.MODEL_JSON).read_text(encoding="utf-8"))
    meta.update(format_version=runs.FORMAT_VERSION + 1, fieldmark_version="9.1.0")
    (run / runs.MODEL_JSON).write_text(json.dumps(meta), encoding="utf-8")
    return "upgrade Fieldmark"


def torn_model_json(run: Path, tmp: Path) -> str:
    text = (run / runs.MODEL_JSON).read_text(encoding="utf-8")
    (run / runs.MODEL_JSON).write_text(text[: len(text) // 2], encoding="utf-8")
    return "is damaged"


DAMAGE = [wrong_class_count, truncated_weights, pickled_weights, newer_version, torn_model_json]


def assert_one_line(result, needle: str) -> None:
    lines = result.err_lines()
    assert result.code == 2, (result.code, result.err)
    assert len(lines) == 1 and lines[0].startswith("fieldmark: error:") and needle in lines[0], lines
    assert "Traceback" not in result.err


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__)
def test_predict_explain_export_refuse_a_damaged_run(damage, corpus, corpus_run, tmp_path):
    good, _ = corpus_run
    run = tmp_path / "run"
    shutil.copytree(good, run)
    needle = damage(run, tmp_path)
    image = corpus.root / "alpha" / "alpha_0.jpg"
    assert_one_line(run_cli("predict", run, image), needle)
    assert_one_line(run_cli("explain", run, image, "--out", tmp_path / "maps"), needle)
    assert_one_line(run_cli("export", run, corpus.root, "--out", tmp_path / "parts"), needle)
    assert not (tmp_path / "parts").exists()
    assert not (tmp_path / "pwned").exists()


def test_export_and_resume_refuse_a_run_of_other_classes(corpus_run, tmp_path):
    good, _ = corpus_run
    other = make_class_folders(tmp_path / "three", classes=3, per_class=4, size=(36, 36))
    assert_one_line(run_cli("export", good, other, "--out", tmp_path / "parts"), "the run knows 4 classes")
    run = tmp_path / "run"
    shutil.copytree(good, run)
    assert_one_line(run_cli("train", other, "--out", run, "--resume", "--epochs", "2", *TINY),
                    "checkpoint has 4 classes, the dataset has 3")


def test_training_never_unpickles_code(corpus_run, tmp_path):
    good, _ = corpus_run
    data = make_class_folders(tmp_path / "data", classes=2, per_class=3, size=(36, 36))
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": Evil(tmp_path / "pwned")}))
    assert_one_line(run_cli("train", data, "--out", tmp_path / "new", "--pretrained", evil, *TINY), "could run code")
    run = tmp_path / "run"
    shutil.copytree(good, run)
    (run / runs.RESUME).write_bytes(evil.read_bytes())
    assert_one_line(run_cli("train", data, "--out", run, "--resume", *TINY), "could run code")
    assert not (tmp_path / "pwned").exists()
