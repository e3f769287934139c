"""Training speed on the CPU: the speed options of ``fieldmark train`` side by side, and how much of the machine a
training step uses (docs/RESULTS.md#speed).

* **The levers** (``--freeze-bn``, ``--freeze-stages``, ``--compile``, a smaller image as ``--size-schedule``
  trains the early epochs; and contiguous memory, the CPU's layout before channels_last became its default for
  mobilenet_v2): one training step of the parts method's defaults (mobilenet_v2 fine features, K = 8, the
  equivariance pass a fixed target, Adam, batch 16, 448 px, channels_last as the training loop uses it) with each,
  interleaved with the step of the defaults; images/s and the ratio to it. A compiled step is timed after its
  compilation (the warm-up round), whose seconds are reported on its own.
* **CPU efficiency**: the GFLOP/s one training step of mobilenet_v2 (CE, batch 16, 224 px) achieves, its FLOPs
  counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products, forward and
  backward), against the machine's peak measured in the same run by a large fp32 matrix product on the same
  threads, as a share. Goal: ≥ 45 % of that peak, for the plain step and for the fastest levers.

``python -m benchmarks.bench_speed [--quick] [--batch B] [--size S] [--repeats N] [--clock wall|cpu]
[--no-compile]`` prints the table (``--quick``: batch 4, 2 repeats, 224 / 160 px, nothing compiled); ``run()``
returns the rows. Set the threads with ``OMP_NUM_THREADS`` (the machine line shows them). ``--clock cpu`` times by the process's CPU seconds: on one thread of a loaded
machine, what each step would take on an idle core (the wall clock there mostly measures the other processes).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Callable

import torch
from torch import nn

from benchmarks.common import format_table, interleaved_medians, machine_line, median, row
from engine.device import uses_channels_last
from engine.losses.mcloss import CECriterion
from engine.losses.parts import PartsCriterion
from engine.models import create_model
from engine.models.freeze import apply_freezing
from engine.training.speed import Compiled, compiler_missing

PEAK_GOAL = 0.45
CLASSES = 25


def lever_step(size: int, batch: int, freeze_bn: bool = False, stages: int = 0, compile_: bool = False,
               contiguous: bool = False, method: str = "parts") -> Callable[[], None]:
    """One training step as engine.training.loop runs it for ``method`` (parts: Adam, CE: SGD), with the levers;
    in the memory layout the loop uses on the CPU (:func:`engine.device.uses_channels_last`) unless ``contiguous``."""
    torch.manual_seed(0)
    if method == "parts":
        model = create_model("mobilenet_v2", CLASSES, head="parts", fine=True, parts=8)
        criterion: nn.Module = PartsCriterion(equiv_stop_grad=True)
    else:
        model, criterion = create_model("mobilenet_v2", CLASSES, xi=3), CECriterion()
    apply_freezing(model, freeze_bn, stages)
    model.train()
    x = torch.randn(batch, 3, size, size)
    y = torch.arange(batch) % CLASSES
    if not contiguous and uses_channels_last(torch.device("cpu"), "mobilenet_v2"):
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    compiled = Compiled(model.backbone) if compile_ else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4) if method == "parts" else torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, parts = criterion(model, x, y)
        loss.backward()
        opt.step()
        float(loss.detach())
        for v in parts.values():
            float(v)

    if compiled is None:
        return step
    return lambda: compiled.step(step)


def matmul_peak(n: int, repeats: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """FLOP/s of an fp32 n × n matrix product on this process's threads (the best of ``repeats``: a peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = clock()
        a @ b
        times.append(clock() - t0)
    return 2 * n ** 3 / min(times)


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape, **kwargs) -> int:
    """The FLOPs of a convolution's backward: each gradient asked for (input, weight) costs what the forward
    convolution does, 2 · N · prod(weight shape) · prod(output grid). torch 2.14's own formula counts a grouped
    convolution's weight gradient as if it were dense: a depthwise 3 × 3 of 32 channels at 112 × 112 came to
    477 MFLOP for a backward whose forward is 14.5 (and mobilenet_v2's step to 3x the matmul peak)."""
    grid = x_shape[2:] if transposed else grad_out_shape[2:]
    forward = 2 * grad_out_shape[0] * math.prod(w_shape) * math.prod(grid)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def step_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step`` as FlopCounterMode counts them (convolutions, matrix products; forward and
    backward), with :func:`conv_backward_flops` for the convolutions' backward."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        step()
    return int(counter.get_total_flops())


LEVERS = (("the defaults", {}), ("contiguous memory (the CPU's layout before)", {"contiguous": True}),
          ("--freeze-bn", {"freeze_bn": True}), ("--freeze-stages 2", {"stages": 2}),
          ("--freeze-bn --freeze-stages 2", {"freeze_bn": True, "stages": 2}),
          ("--freeze-bn --freeze-stages 3", {"freeze_bn": True, "stages": 3}),
          ("--compile", {"compile_": True}), ("--compile --freeze-bn", {"compile_": True, "freeze_bn": True}))


def lever_rows(size: int, batch: int, repeats: int, small: int, compile_ok: bool,
               clock: Callable[[], float] = time.perf_counter) -> list[dict]:
    """The parts step at ``size`` with each lever, and at ``small`` px without and with freezing, interleaved."""
    levers = [(n, kw) for n, kw in LEVERS if compile_ok or not kw.get("compile_")]
    steps = [lever_step(size, batch, **kw) for _, kw in levers] + [
        lever_step(small, batch), lever_step(small, batch, freeze_bn=True, stages=2)]
    names = [n for n, _ in levers] + [f"{small} px (an early epoch of --size-schedule F:{small})",
                                      f"{small} px --freeze-bn --freeze-stages 2"]
    t0 = time.perf_counter()
    first = [_timed(s, clock) for s in steps]  # the warm-up round: compiles what is compiled
    warm = time.perf_counter() - t0
    times = interleaved_medians(steps, repeats=repeats, warmup=0, clock=clock)
    base = median(times[0])
    rows = []
    for name, ts, s0 in zip(names, times, first):
        m = median(ts)
        what = f"parts step, mobilenet_v2, B={batch}, {size if 'px' not in name else small} px: {name}"
        rows.append(row(what + " (x img/s of the defaults)", m, base / m, None, None,
                        measured=f"{batch / m:.2f} img/s ({m:.2f} s)",
                        note=f"first step {s0:.1f} s (compiles when compiled); spread "
                             f"{min(ts):.2f}-{max(ts):.2f} s" if "compile" in name else None))
    rows[0]["note"] = f"medians of {repeats} interleaved steps after a warm-up round of {warm:.0f} s"
    return rows


def _timed(fn: Callable[[], None], clock: Callable[[], float]) -> float:
    t0 = clock()
    fn()
    return clock() - t0


def efficiency_rows(batch: int, repeats: int, peak_n: int, compile_ok: bool,
                    clock: Callable[[], float] = time.perf_counter) -> list[dict]:
    """GFLOP/s of a mobilenet_v2 CE step at 224 px, plain and with the levers, against the matmul peak."""
    variants = [("the defaults (channels_last)", {}), ("contiguous memory", {"contiguous": True}),
                ("--freeze-bn", {"freeze_bn": True})]
    if compile_ok:
        variants.append(("--freeze-bn --compile", {"freeze_bn": True, "compile_": True}))
    flops = [step_flops(lever_step(224, batch, method="ce", **{k: v for k, v in kw.items() if k != "compile_"}))
             for _, kw in variants]  # compiled code is not counted: its eager twin does the same products
    steps = [lever_step(224, batch, method="ce", **kw) for _, kw in variants]
    for s in steps:
        s()
    times = interleaved_medians(steps, repeats=repeats, warmup=0, clock=clock)
    peak = matmul_peak(peak_n, repeats=5, clock=clock)
    rows = [row(f"fp32 matmul {peak_n}x{peak_n} (the machine's peak on these threads)", None, None, None, None,
                measured=f"{peak / 1e9:.1f} GFLOP/s")]
    for (name, _), f, ts in zip(variants, flops, times):
        achieved = f / median(ts)
        rows.append(row(f"CE step mobilenet_v2 B={batch} 224 px, {name}: share of the matmul peak", median(ts),
                        achieved / peak, f">= {PEAK_GOAL}", achieved / peak >= PEAK_GOAL,
                        measured=f"{achieved / 1e9:.1f} GFLOP/s ({f / 1e9:.1f} GFLOP in {median(ts):.2f} s)"))
    return rows


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def run(quick: bool = False, batch: int | None = None, size: int = 448, repeats: int | None = None,
        small: int = 320, clock: str = "wall", compile_: bool = True) -> list[dict]:
    """The lever rows, then the efficiency rows; ``clock`` "wall" or "cpu" (:data:`CLOCKS`); ``compile_`` False
    leaves the compiled rows out (their compilation takes minutes)."""
    batch = batch or (4 if quick else 16)
    repeats = repeats or (2 if quick else 5)
    if quick:  # a smoke run: smaller images, nothing to compile
        size, small, compile_ = min(size, 224), min(small, 160), False
    why = compiler_missing(torch.device("cpu")) if compile_ else "left out (--no-compile or --quick)"
    rows = lever_rows(size, batch, repeats, small, why is None, CLOCKS[clock])
    rows += efficiency_rows(batch, repeats, 1024 if quick else 2048, why is None, CLOCKS[clock])
    if why:
        rows.append(row("--compile: not measured", None, None, None, None, note=why))
    if clock == "cpu":
        rows[0]["note"] += "; timed in CPU seconds of this process (--clock cpu), not the wall clock"
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="batch 4, 2 repeats, 224 and 160 px, no compiling (a smoke run; noisier)")
    ap.add_argument("--batch", type=int, default=None, help="images per step (default 16; --quick 4)")
    ap.add_argument("--size", type=int, default=448, help="the levers' image size (default 448, the parts default)")
    ap.add_argument("--small", type=int, default=320, help="the smaller size row (default 320)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved steps of each (default 5; --quick 2)")
    ap.add_argument("--no-compile", dest="compile_", action="store_false",
                    help="leave the --compile rows out (compiling takes minutes)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall: the wall clock (an idle machine); cpu: this process's CPU seconds (one thread on "
                         "a loaded machine)")
    args = ap.parse_args()
    print(machine_line())
    print(format_table(run(**vars(args))))


if __name__ == "__main__":
    main()
