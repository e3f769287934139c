"""tools/seeds.py trains and evaluates one setting over seeds and prints mean and spread (issue 23, item 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_two_seeds_are_trained_evaluated_and_tabulated(tmp_path):
    from engine.toybirds.dataset import generate

    data = tmp_path / "toy"
    generate(data, classes=3, per_class=10, size=64, seed=0)
    out = tmp_path / "runs"
    cmd = [sys.executable, str(ROOT / "tools" / "seeds.py"), str(data), "--out", str(out), "--seeds", "0", "1",
           "--split", "val", "--json", str(tmp_path / "row.json"), "--", "--method", "parts", "--model", "smallnet",
           "--parts", "2", "--epochs", "1", "--img-size", "32", "--batch-size", "8", "--device", "cpu",
           "--validation-fraction", "0.25"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 seeds (0, 1), val split" in done.stdout
    row = {r["figure"]: r for r in json.loads((tmp_path / "row.json").read_text())["row"]}
    evals = [json.loads((out / f"s{s}" / "evaluate-val.json").read_text()) for s in (0, 1)]
    kp = [e["protocol"]["own"]["keypoint_error"] for e in evals]
    assert row["keypoint error"]["mean"] == sum(kp) / 2
    assert row["keypoint error"]["min"] == min(kp) and row["keypoint error"]["max"] == max(kp)
    share = [100 * e["box_share_above_half"] for e in evals]  # the maps' spread over the box (GAIN's claim)
    assert row["box share above half max %"]["mean"] == sum(share) / 2
    line = next(x for x in done.stdout.splitlines() if x.strip().startswith("keypoint error"))
    assert f"{sum(kp) / 2:.2f} ({min(kp):.2f}..{max(kp):.2f})" in line
    # a second call reuses the finished runs and their evaluations: nothing is trained again
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "$ train" not in again.stderr and line in again.stdout


def test_each_seed_is_compared_with_the_ce_run_of_its_own_seed(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from seeds import seed_baseline
    finally:
        sys.path.remove(str(ROOT / "tools"))
    (tmp_path / "ce" / "s1").mkdir(parents=True)
    (tmp_path / "ce" / "s1" / "model.json").write_text("{}")
    assert seed_baseline(str(tmp_path / "ce"), 1) == str(tmp_path / "ce" / "s1")
    assert seed_baseline(str(tmp_path / "ce"), 2) == str(tmp_path / "ce")  # no run of that seed: the folder itself
    assert seed_baseline(None, 0) is None


def test_other_maps_keep_their_own_evaluation_file(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from seeds import evaluation_file
    finally:
        sys.path.remove(str(ROOT / "tools"))
    assert evaluation_file(tmp_path, "val") == tmp_path / "evaluate-val.json"
    assert evaluation_file(tmp_path, "val", "gradcam") == tmp_path / "evaluate-val-gradcam.json"
    assert evaluation_file(tmp_path, "test", "attention") == tmp_path / "evaluate-test-attention.json"
