"""tools/family.py: issue 25's table rows from evaluate's JSON and the runs' metrics.jsonl."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import family  # noqa: E402


def test_a_row_reads_the_protocol_and_the_quick_figures(tmp_path):
    doc = {"top1": 0.7381, "peaks_in_box": 0.75, "box_share_above_half": 0.6714,
           "protocol": {"own": {"keypoint_error": 18.587}, "random": {"keypoint_error": 26.51}}}
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps({"epoch": e, "seconds": s})
                                                      for e, s in ((1, 60.0), (2, 48.0))) + "\n")
    minutes = family.training_minutes(tmp_path)
    assert minutes == 1.8
    assert family.table_row("CE", "Grad-CAM", doc, minutes) == ["CE", "Grad-CAM", "73.8", "18.59", "75.0", "67.1",
                                                                "1.8"]
    assert family.random_row(doc)[3] == "26.51"
    assert family.table_row("X", "y", {}, None)[2:] == ["–"] * 5


def test_every_row_has_its_maps_and_arguments():
    assert len({r[0] for r in family.ROWS}) == len(family.ROWS) == 8
    assert {r[3] for r in family.ROWS} == {"own", "gradcam", "attention"}
    assert family.training_minutes(Path("/nonexistent")) is None
