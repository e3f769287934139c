"""How far a `parts` run's maps follow a transform of the photo: the equivariance loss of training, one fixed
transform at a time, split by whether the part is present in the photo.

    .venv/bin/python tools/equivariance.py runs/cub-parts ../shared/data/cub-parts-dev [--images 48]

Training draws one random similarity per batch (rotation in [-90°, 90°), translation, scale in [0.8, 1.4)) and
logs the mean loss; this prints the loss for each of a grid of rotations and scales on the run's test photos
(centre crop, as `evaluate` classifies them), for all parts, for the parts whose map maximum exceeds 0.5 in the
untransformed photo (present: the published protocol's active-part rule) and for the others. It explains where
the logged figure comes from (docs/METHODS.md#shared-parts).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from engine.data import scan  # noqa: E402
from engine.data.imageio import read_image  # noqa: E402
from engine.data.transforms import Preprocessing, normalize, test_transform  # noqa: E402
from engine.errors import EngineError  # noqa: E402
from engine.losses.parts import Similarity, transform_back, transform_images  # noqa: E402
from engine.maps.methods import has_shared_parts  # noqa: E402
from engine.runs import load_run, run_split  # noqa: E402

ANGLES = (0.0, 15.0, 30.0, 45.0, 60.0, 90.0)
SCALES = (1.0, 1.2)


def cosines(model, x: torch.Tensor, sim: Similarity) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K) cosine similarity of each foreground map with its transformed-and-back counterpart, as the training
    loss computes it (out-of-frame cells masked), and (B, K) presence (map maximum > 0.5) in the original."""
    k = model.parts
    maps = model.forward_features(x)[:, :k]
    maps_t = model.forward_features(transform_images(x, sim))[:, :k + 1]
    back, valid = transform_back(maps_t[:, :-1], sim, tuple(x.shape[-2:]))
    keep = valid.to(maps.dtype)
    cos = F.cosine_similarity((maps * keep).flatten(2), (back * keep).flatten(2), dim=2, eps=1e-8)
    return cos, maps.flatten(2).amax(dim=2) > 0.5


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a run trained with --method parts")
    ap.add_argument("data", help="its data folder")
    ap.add_argument("--images", type=int, default=48, help="test photos, drawn with a fixed seed (default 48)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.images < 1:
        ap.error(f"--images {args.images}: give at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run = load_run(args.run)
        if not has_shared_parts(run.model):
            print(f"{args.run}: a {run.method} run; the equivariance loss belongs to --method parts runs",
                  file=sys.stderr)
            return 2
        test = run_split(args.run, scan(args.data)).report.split("test")
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not test:
        print(f"{args.data}: no test photos in the run's split", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    picked = [test[i] for i in sorted(rng.choice(len(test), min(args.images, len(test)), replace=False))]
    pp = Preprocessing.from_dict(run.preprocessing)
    x = normalize(torch.from_numpy(np.stack([test_transform(read_image(s.path), pp) for s in picked])), pp)
    model = run.model.eval()
    print(f"{args.run}: {len(picked)} test photos, {pp.img_size} px, K = {model.parts}; "
          "loss = 1 - mean cosine (the training term)")
    print(f"{'rotation':>9} {'scale':>6} {'all parts':>10} {'present':>8} {'absent':>7}")
    with torch.no_grad():
        for angle in ANGLES:
            for scale in SCALES:
                cos, present = cosines(model, x, Similarity(angle=angle, scale=scale))
                absent = cos[~present]
                print(f"{angle:8.0f}° {scale:6.1f} {1 - cos.mean():10.3f} {1 - cos[present].mean():8.3f} "
                      f"{(1 - absent.mean()) if absent.numel() else float('nan'):7.3f}")
    print(f"present: {float(present.float().mean()) * 100:.1f} % of photo × part (map maximum > 0.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
