#!/usr/bin/env bash
# The GPU path measured in one run (issue 24, item 5): see benchmarks/gpu_check.py. Arguments pass through, e.g.
#   bash benchmarks/gpu_check.sh --json gpu_check.json          # one GPU, cub-parts-dev, 2 epochs (sized for < 8 min on an H100)
#   bash benchmarks/gpu_check.sh --quick                        # the CPU smoke run on generated toy birds
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec "$PY" -m benchmarks.gpu_check "$@"
