"""benchmarks/gpu_check.py's CPU fallback end to end on toy birds (issue 24, item 5).

The script measures the GPU path; here it runs on the CPU (1 epoch, 64 px, smallnet), and the test checks the
structure of what it prints and writes, never a time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("train parts", "train mcloss", "evaluate parts", "evaluate mcloss", "explain parts", "explain mcloss",
         "export parts", "export mcloss", "plain torchvision loop")


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_cpu_fallback_prints_every_step_and_writes_the_json(tmp_path):
    from engine.toybirds.dataset import generate

    data = tmp_path / "toy"
    generate(data, classes=3, per_class=10, size=64, seed=0)
    out, doc_path = tmp_path / "work", tmp_path / "gpu.json"
    done = _run(["--device", "cpu", "--data", str(data), "--epochs", "1", "--img-size", "64", "--model", "smallnet",
                 "--out", str(out), "--json", str(doc_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    import torch

    assert lines[0].startswith("device: cpu = ") and f"torch {torch.__version__}" in lines[0]
    for step in STEPS:
        rate = [ln for ln in lines if ln.startswith(f"[{step}] ") and "images/s" in ln]
        assert len(rate) == 1, (step, done.stdout)
        m = re.match(rf"\[{re.escape(step)}\] (\d+\.\d+) images/s \((\d+) images in ", rate[0])
        assert m and float(m.group(1)) > 0 and int(m.group(2)) > 0, rate[0]
        assert f"[{step}] peak GPU memory: n/a on cpu" in lines
        fell = [ln for ln in lines if ln.startswith(f"[{step}] fell back to CPU: ")]
        assert len(fell) == 1 and fell[0].startswith(f"[{step}] fell back to CPU: no (asked cpu"), fell
        assert "on cpu" in fell[0]  # the module calls were counted, on the CPU
    assert "fell back to CPU in any step: no" in lines
    assert any(re.match(r"train mcloss vs plain torchvision loop: .* = \d+\.\d+x$", ln) for ln in lines)
    assert re.match(r"total wall time: \d+\.\d s", lines[-1]), lines[-1]

    doc = json.loads(doc_path.read_text())
    assert {"device", "device_type", "torch", "gpu_name", "data", "epochs", "amp", "steps", "plain_ratio_mcloss",
            "fell_back_any", "total_wall_s"} <= set(doc)
    assert doc["device_type"] == "cpu" and doc["gpu_name"] is None and doc["amp"] is None
    assert doc["fell_back_any"] is False and doc["epochs"] == 1
    assert list(doc["steps"]) == list(STEPS)
    for step in doc["steps"].values():
        assert {"images", "seconds", "images_per_s", "peak_gpu_mb", "fell_back_to_cpu", "module_calls"} <= set(step)
        assert step["images_per_s"] > 0 and step["peak_gpu_mb"] is None and step["fell_back_to_cpu"] is False
        assert step["module_calls"].get("cpu", 0) > 0 and set(step["module_calls"]) == {"cpu"}
    # the explain and export steps took the same test photos (all 15 of the toy split: fewer than 50)
    assert doc["steps"]["explain parts"]["images"] == doc["steps"]["export parts"]["images"] == 15
    assert doc["steps"]["evaluate parts"]["images"] == 30  # both splits, as `fieldmark evaluate`
    assert (out / "runs" / "parts" / "model.json").is_file() and (out / "export" / "mcloss" / "parts.csv").is_file()


def test_cuda_without_cuda_exits_2_with_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the refusal is for machines without it")
    done = _run(["--device", "cuda"], timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpu_check: error: --device cuda: CUDA is not available"), err
    assert "--device cpu" in err[0]
