"""The files of a part export (see :mod:`engine.export.crops`): per-image records in ``.fieldmark-export/done.jsonl``,
and ``parts.csv`` / ``parts_coco.json`` rebuilt from them, streaming (memory does not grow with the records
beyond one id per image), each written atomically.

COCO keypoints layout (Lin et al., "Microsoft COCO", ECCV 2014): one category per class whose ``keypoints`` are
the parts' names (:mod:`engine.fieldmarks.names`; ``part_k`` for an unnamed part k, k = 1 .. the largest ξ or K),
one image entry per exported image, one annotation per (image, export job) with ``keypoints`` [x, y, v] × K (v = 2 for an exported part, 0 with x = y = 0 for a part not exported), its
``bbox`` the data set's bird box when known, else the union of the part boxes.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Iterator

from engine.fileio import atomic_write

log = logging.getLogger(__name__)

STATE = ".fieldmark-export"
CSV_COLUMNS = ["image", "class", "predicted_class", "channel", "part_k", "part_name", "x", "y", "x0", "y0", "x1",
               "y1", "score", "score_norm", "crop"]


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The whole records of ``done.jsonl``, later duplicates of a (job, image) dropped; a torn line is skipped."""
    if not path.is_file():
        return
    seen: set[tuple[str, str]] = set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                key = (rec["job"], rec["image"])
            except (ValueError, KeyError, TypeError):
                log.warning("%s: skipping a damaged record line", path)
                continue
            if key in seen:
                continue
            seen.add(key)
            yield rec


def write_csv(path: Path, records_file: Path) -> int:
    """``parts.csv``: one row per exported part. Returns the number of images."""
    count = 0

    def write(fh) -> None:
        nonlocal count
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for rec in read_records(records_file):
            count += 1
            for p in rec["parts"]:
                w.writerow([rec["image"], rec["class"], rec["predicted"], p["channel"], p["part"],
                            p.get("part_name", ""), p["x"], p["y"],
                            *p["box"], f"{p['score']:.6g}", f"{p['score_norm']:.4f}", p["crop"]])

    atomic_write(path, write, "w")
    return count


def _union(boxes: list[list[float]]) -> list[float] | None:
    if not boxes:
        return None
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    return [x0, y0, x1 - x0, y1 - y0]


def write_coco(path: Path, records_file: Path, part_names: dict[int, str] | None = None) -> None:
    """``parts_coco.json`` in the COCO keypoints format (loads with ``pycocotools.coco.COCO``). Keypoint k is named
    ``part_names[k]`` (0-based), else the name its records carry, else ``part_<k+1>``."""
    classes: dict[str, int] = {}
    k_max = 1
    recorded: dict[int, str] = {}
    for rec in read_records(records_file):
        classes.setdefault(rec["class"], rec.get("class_index", len(classes)))
        k_max = max(k_max, int(rec.get("xi", 1)))
        for p in rec["parts"]:
            if p.get("part_name"):
                recorded.setdefault(int(p["part"]) - 1, p["part_name"])
    order = sorted(classes, key=lambda c: (classes[c], c))
    cat_id = {c: i + 1 for i, c in enumerate(order)}
    named = {**recorded, **(part_names or {})}
    kp_names = [named.get(k) or f"part_{k + 1}" for k in range(k_max)]

    def write(fh) -> None:
        fh.write('{"info": {"description": "Fieldmark part export", "version": "1"}, "licenses": [],\n')
        cats = [{"id": cat_id[c], "name": c, "supercategory": "bird", "keypoints": kp_names, "skeleton": []}
                for c in order]
        fh.write(' "categories": ' + json.dumps(cats) + ',\n "images": [')
        image_id: dict[str, int] = {}
        for rec in read_records(records_file):
            if rec["image"] in image_id:
                continue
            image_id[rec["image"]] = len(image_id) + 1
            sep = "\n  " if len(image_id) == 1 else ",\n  "
            fh.write(sep + json.dumps({"id": image_id[rec["image"]], "file_name": rec["image"],
                                       "width": rec["width"], "height": rec["height"]}))
        fh.write('],\n "annotations": [')
        n = 0
        for rec in read_records(records_file):
            kps = [0.0] * (3 * k_max)
            for p in rec["parts"]:
                k = int(p["part"]) - 1
                kps[3 * k:3 * k + 3] = [p["x"], p["y"], 2]
            bbox = rec["bbox"] if rec.get("bbox") else _union([p["box"] for p in rec["parts"]])
            bbox = bbox or [0.0, 0.0, float(rec["width"]), float(rec["height"])]
            n += 1
            ann = {"id": n, "image_id": image_id[rec["image"]], "category_id": cat_id[rec["class"]],
                   "keypoints": kps, "num_keypoints": len(rec["parts"]), "bbox": [round(v, 2) for v in bbox],
                   "area": round(bbox[2] * bbox[3], 2), "iscrowd": 0, "job": rec["job"],
                   "predicted_class": rec["predicted"]}
            fh.write(("\n  " if n == 1 else ",\n  ") + json.dumps(ann))
        fh.write("]\n}\n")

    atomic_write(path, write, "w")


__all__ = ["STATE", "CSV_COLUMNS", "read_records", "write_csv", "write_coco"]
