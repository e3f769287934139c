"""The README's demo path on a tiny configuration: toy birds → MC-Loss training → evaluation → overlays, then the
CLI on the result (predict, explain, export, evaluate), as a new user would run them."""

import json
from dataclasses import replace

import pytest

from engine.cli import main as cli
from engine.demo import DemoSettings, build_demo, demo_paths
from engine.events import EpochEnd, Finished, drive

TINY = replace(DemoSettings(), classes=4, per_class=8, size=96, epochs=2, img_size=96, batch_size=8, overlays=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    events = []
    result = drive(build_demo(root, settings=TINY), events.append)
    return root, result, events


def test_demo_builds_everything(demo):
    root, result, events = demo
    data, run = demo_paths(root)
    assert isinstance(result, Finished) and result.run_dir == str(run)
    assert sum(isinstance(e, EpochEnd) for e in events) == 2
    figures = json.loads((run / "evaluation.json").read_text())
    assert set(figures) >= {"top1", "part_hit_rate", "mark_recall", "regions_per_class", "baselines"}
    assert figures["baselines"]["random"]["part_hit_rate"] is not None
    assert figures["regions_per_class"] is not None  # its value: the CLI's evaluation below gives the same figure
    assert len(list((run / "overlays").glob("*.png"))) == 2
    assert (data / "toybirds.json").is_file()


def test_demo_rerun_reuses_what_is_complete(demo):
    root, first, _ = demo
    events = []
    again = drive(build_demo(root, settings=TINY), events.append)
    assert not any(isinstance(e, EpochEnd) for e in events)
    assert again.metrics == first.metrics


def test_a_demo_saved_by_an_older_version_is_reused(demo):
    """model.json of a version before the parts speed defaults held ``size_schedule: null``; this version reads
    it as "none" and trains nothing again."""
    root, first, _ = demo
    _, run = demo_paths(root)
    meta_file = run / "model.json"
    text = meta_file.read_text()
    meta = json.loads(text)
    assert meta["config"]["size_schedule"] == "none"
    meta["config"]["size_schedule"] = None
    meta_file.write_text(json.dumps(meta))
    try:
        events = []
        again = drive(build_demo(root, settings=TINY), events.append)
        assert not any(isinstance(e, EpochEnd) for e in events)
        assert again.metrics == first.metrics
    finally:
        meta_file.write_text(text)


def test_cli_on_the_demo_run(demo, tmp_path, capsys):
    root, _, _ = demo
    data, run = demo_paths(root)
    image = next((data / "images").rglob("*.jpg"))
    assert cli(["predict", str(run), str(image), "--top-k", "2"]) == 0
    assert cli(["explain", str(run), str(image), "--out", str(tmp_path / "maps")]) == 0
    assert list((tmp_path / "maps").glob("*.png")) and list((tmp_path / "maps").glob("*.npy"))
    assert cli(["export", str(run), str(data), "--out", str(tmp_path / "parts")]) == 0
    assert (tmp_path / "parts" / "parts.csv").is_file() and (tmp_path / "parts" / "parts_coco.json").is_file()
    capsys.readouterr()
    assert cli(["evaluate", str(run), str(data), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert set(figures) == {"top1", "part_hit_rate", "peaks_in_box", "peaks_on_border", "box_share_above_half",
                            "keypoint_error", "keypoint_error_all", "nmi", "ari", "regions_per_class", "mark_recall",
                            "baselines", "protocol", "maps", "field_marks"}
    # the demo is an MC-Loss run: no shared parts to rank, and the block says so
    assert "parts` run" in figures.pop("field_marks")["note"]
    assert figures.pop("maps") == {"option": "own", "source": "channels of the true class"}
    # a trained model's figures cannot be worked out by hand (test_evaluate does that on hand-made maps): what the
    # demo saved must be what `fieldmark evaluate` computes for the same run, figure by figure
    saved = json.loads((run / "evaluation.json").read_text())
    assert {k: saved[k] for k in figures} == figures
