"""`fieldmark explain RUN IMAGE... --out DIR [--method channels] [--class NAME | --top-k 1] [--resample VIEW]`

Writes, per image and class: ``<stem>.<method>.<class>.png`` (a strip: the photo with every map's peak and box in
its own colour and a legend, then one overlay per map with its label and raw range, then a colour bar),
``<stem>.<method>.<class>.npy`` (the raw maps, float32 (K, H, W) at the photo's size) and ``<stem>.<method>.json``
(the peaks, centroids and boxes in original pixels). ``--resample structure|detail`` explains TASN's resampled
view of the photo instead (driven by the class's maps; files get a ``.structure``/``.detail`` suffix, the view
is ``<stem>.<view>-view.png``) and maps the peaks back to the photo. ``--method racnn`` (an RA-CNN run) also writes
``<stem>.racnn.squares.json`` (the squares of scales 2 and 3 in the photo's pixels) and the two zoomed crops,
``<stem>.racnn.scale2.png`` and ``<stem>.racnn.scale3.png``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from engine.cli.common import add_run_command


def register(sub: argparse._SubParsersAction) -> None:
    from engine.maps.explain import METHODS

    p = add_run_command(sub, "explain", "part maps, CAM / Grad-CAM and TASN views of images, as PNG + NPY + JSON")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--out", required=True, help="folder for the overlays, maps and peaks")
    p.add_argument("--method", default="channels", choices=METHODS,
                   help="channels: the ξ MC-Loss part maps of the class (default); ccmp; tasn; cam; gradcam; "
                        "guided-gradcam; guided-backprop; deconvnet; attention (the --attention blocks' spatial maps); "
                        "racnn (an RA-CNN run's squares, also written as JSON with their zoomed crops as PNG)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--class", dest="class_name", metavar="NAME", help="explain this class (default: predicted)")
    who.add_argument("--top-k", type=int, default=1, help="explain the k most probable classes (default 1)")
    p.add_argument("--resample", choices=["structure", "detail"], help="explain TASN's resampled view instead")
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(func=run)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "x"


def run(args: argparse.Namespace) -> int:
    """Explain the images; a folder that cannot be written ends as one line (every file is written atomically:
    what is there is whole)."""
    from engine.errors import EngineError

    try:
        return _explain(args)
    except OSError as exc:
        where = f", {exc.filename}" if exc.filename else ""
        raise EngineError(f"cannot write the maps to {str(Path(args.out).expanduser())!r} ({exc.strerror or exc}"
                          f"{where}): choose a folder you can write to, or free some space") from exc


def _explain(args: argparse.Namespace) -> int:
    import torch

    from engine.data.transforms import Preprocessing
    from engine.device import resolve_device
    from engine.errors import ConfigError
    from engine.maps.explain import explain, resampled_views, resolve_class
    from engine.fileio import atomic_write_bytes, atomic_write_json
    from engine.data.imageio import write_image
    from engine.maps.parts import find_parts, parts_to_original
    from engine.maps.overlays import draw_strip
    from engine.maps.predict import expand_inputs
    from engine.fieldmarks.names import label_maps
    from engine.runs import load_run, read_part_names

    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k}: must be at least 1")
    loaded = load_run(args.run, resolve_device(args.device))
    part_names = read_part_names(loaded.run_dir) if args.method == "channels" else {}  # map k = part k
    pp = Preprocessing.from_dict(loaded.preprocessing)
    classes = loaded.classes
    cls = resolve_class(args.class_name, classes) if args.class_name else None
    paths, skipped = expand_inputs(args.images)
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    stems: dict[str, int] = {}
    written = 0
    for start in range(0, len(paths), max(1, args.batch_size)):
        batch = _read_batch(paths[start:start + args.batch_size])
        if not batch:
            continue
        results = explain(loaded.model, [img for _, img in batch], args.method, cls, pp, args.top_k)
        for (path, img), sets in zip(batch, results):
            stem = _safe(path.stem)
            stems[stem] = stems.get(stem, 0) + 1
            if stems[stem] > 1:
                stem = f"{stem}-{stems[stem]}"
            record = {"image": str(path), "size": list(img.shape[:2]), "method": args.method,
                      "resample": args.resample, "maps": []}
            for ms in sets:
                ms.names = label_maps(ms.names, part_names)
                name = classes[ms.class_index]
                shown, view_img = ms, img
                if args.resample:
                    views = resampled_views(img, ms.maps.max(axis=0), pp.img_size)
                    view_img = views.structure if args.resample == "structure" else views.detail
                    grid = views.structure_grid if args.resample == "structure" else views.detail_grid
                    shown = explain(loaded.model, [view_img], args.method, ms.class_index, pp)[0][0]
                    shown.names = label_maps(shown.names, part_names)
                    write_image(out / f"{stem}.{args.resample}-view.png", view_img)
                    parts_view = find_parts(shown)
                    parts = parts_to_original(parts_view, grid.to(torch.float64), img.shape[:2])
                else:
                    parts_view = parts = find_parts(ms)
                base = f"{stem}.{args.method}.{_safe(name)}" + (f".{args.resample}" if args.resample else "")
                title = f"{path.name}  {args.method}  {name}  p={ms.probability:.2f}"
                if args.resample:
                    title += f"  ({args.resample} view)"
                write_image(out / f"{base}.png", draw_strip(view_img, shown, parts_view, title))
                buf = _npy_bytes(shown.raw())
                atomic_write_bytes(out / f"{base}.npy", buf)
                record["maps"].append({
                    "class": name, "class_index": ms.class_index, "probability": ms.probability,
                    "names": shown.names, "channels": shown.channels,
                    "raw_ranges": [list(r) for r in shown.raw_ranges], "png": f"{base}.png", "npy": f"{base}.npy",
                    "npy_space": f"{args.resample} view" if args.resample else "original",
                    "parts": [p.to_dict() for p in parts]})
                peaks = ", ".join(f"({p.peak[0]:.0f},{p.peak[1]:.0f})" for p in parts)
                print(f"{path}\t{name}\tp={ms.probability:.3f}\t{args.method} peaks {peaks} -> {out / base}.png")
                written += 1
            atomic_write_json(out / f"{stem}.{args.method}{'.' + args.resample if args.resample else ''}.json",
                              record)
            if args.method == "racnn":
                _write_zoom(loaded.model, img, pp, out, stem)
    for s in skipped:
        print(f"skipped {s.path}: {s.reason}", file=sys.stderr)
    return 0 if written else 2


def _read_batch(paths: list[Path]) -> list[tuple[Path, np.ndarray]]:
    """(path, RGB image) of each photo that decodes; the others are reported on stderr and skipped."""
    from engine.data.imageio import read_image
    from engine.errors import DecodeError

    batch = []
    for p in paths:
        try:
            batch.append((p, read_image(p)))
        except DecodeError as exc:
            print(f"skipped {p}: {exc.reason}", file=sys.stderr)
    return batch


def _write_zoom(model, img: np.ndarray, pp, out: Path, stem: str) -> None:
    """An RA-CNN run's squares (``<stem>.racnn.squares.json``) and its zoomed crops of scales 2 and 3 cut from the
    photo (``<stem>.racnn.scale2.png``, ``.scale3.png``, each at the model's input size)."""
    from engine.data.imageio import write_image
    from engine.fileio import atomic_write_json
    from engine.maps.zoom import zoom_views

    views = zoom_views(model, img, pp)
    record = views.to_dict()
    for scale, crop in enumerate(views.crops, start=2):
        write_image(out / f"{stem}.racnn.scale{scale}.png", crop)
        record["squares"][scale - 2]["png"] = f"{stem}.racnn.scale{scale}.png"
    atomic_write_json(out / f"{stem}.racnn.squares.json", record)


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(a, np.float32))
    return buf.getvalue()
