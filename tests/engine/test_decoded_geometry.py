"""Boxes and keypoints of rotated and reduced photos: a data set's annotations are on each file's stored grid; an
image stored turned (with the EXIF orientation that shows it upright) or so large that it is decoded reduced must
be scored by `evaluate` and cut and recorded by `export` exactly as the plain upright copy is.

Each test writes a CUB-layout copy of a data set whose pixels are stored turned back by Pillow (which also checks
that its EXIF view is the original) and whose annotations are moved onto the stored grid by an index image put
through the same Pillow turn, not by the formula under test."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.data import scan
from engine.data.imageio import read_image
from engine.evaluation.evaluate import evaluate_run
from engine.export.crops import export_parts

from .test_evaluate import cub, hand_model, loaded  # noqa: F401  (cub: the hand-made CUB fixture)
from .test_export import run_all, toy  # noqa: F401  (toy: toy birds and a run whose maps are known)

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageOps  # noqa: E402

#: the Pillow turn that stores an upright picture so that EXIF orientation ``o`` shows it upright again
STORE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
         5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
         8: Image.Transpose.ROTATE_270}


def stored_affine(w: int, h: int, o: int) -> np.ndarray:
    """(2, 3) A with stored = A @ (x, y, 1) for upright pixel centres (x, y), read off an index image turned by
    the same Pillow call as the pixels."""
    if o == 1:
        return np.array([[1.0, 0, 0], [0, 1.0, 0]])
    yy, xx = np.mgrid[0:h, 0:w]
    index = yy * w + xx
    turned = np.asarray(Image.fromarray(index.astype(np.int32), "I").transpose(STORE[o]))

    def where(x: int, y: int) -> np.ndarray:
        (r, c), = np.argwhere(turned == y * w + x)
        return np.array([c, r], np.float64)

    p00, p10, p01 = where(0, 0), where(1, 0), where(0, 1)
    return np.column_stack([p10 - p00, p01 - p00, p00])


def to_stored(xy: np.ndarray, a: np.ndarray, k: int) -> np.ndarray:
    """Upright pixel centres → the stored grid of the picture enlarged k times (pixel (x, y) covers k×k)."""
    p = np.asarray(xy, np.float64) @ a[:, :2].T + a[:, 2]
    return (p + 0.5) * k - 0.5


def box_to_stored(box: tuple[float, ...], a: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """(x0, y0, w, h) in edge coordinates → the stored grid, same form."""
    corners = np.array([[box[0], box[1]], [box[0] + box[2], box[1] + box[3]]]) - 0.5
    c = to_stored(corners, a, k) + 0.5
    lo, hi = c.min(0), c.max(0)
    return lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]


def store(upright: np.ndarray, o: int, k: int, fmt: str) -> bytes:
    """The bytes of ``upright`` enlarged k times, stored turned, tagged with orientation ``o``."""
    big = np.repeat(np.repeat(upright, k, 0), k, 1) if k > 1 else upright
    img = Image.fromarray(big)
    img = img.transpose(STORE[o]) if o != 1 else img
    exif = Image.Exif()
    exif[0x0112] = o
    out = io.BytesIO()
    img.save(out, fmt, exif=exif.tobytes(), **({"quality": 100} if fmt == "JPEG" else {}))
    data = out.getvalue()
    if k == 1:
        assert np.array_equal(np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")),
                              upright)
    return data


def rewrite(src: Path, dst: Path, plan: dict[int, tuple[int, int, str]]) -> Path:
    """Copy the CUB folder ``src`` to ``dst`` with image id i stored as ``plan[i]`` = (orientation, k, format),
    and its box and keypoints moved onto the stored grid."""
    shutil.copytree(src, dst)
    rows = dict(line.split(maxsplit=1) for line in (src / "images.txt").read_text().splitlines() if line.strip())
    affine, scale, names = {}, {}, []
    for sid, rel in rows.items():
        i = int(sid)
        o, k, fmt = plan.get(i, (1, 1, "PNG"))
        upright = read_image(src / "images" / rel)
        h, w = upright.shape[:2]
        (dst / "images" / rel).unlink()
        new = str(Path(rel).with_suffix(".jpg" if fmt == "JPEG" else ".png"))
        (dst / "images" / new).write_bytes(store(upright, o, k, fmt))
        affine[i], scale[i] = stored_affine(w, h, o), k
        names.append(f"{i} {new}")
    (dst / "images.txt").write_text("\n".join(names) + "\n")
    boxes = []
    for line in (src / "bounding_boxes.txt").read_text().splitlines():
        i, *box = line.split()
        boxes.append(f"{i} " + " ".join(f"{v:.4f}" for v in box_to_stored(tuple(map(float, box)), affine[int(i)],
                                                                          scale[int(i)])))
    (dst / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    locs = []
    for line in (src / "parts" / "part_locs.txt").read_text().splitlines():
        i, p, x, y, v = line.split()
        sx, sy = to_stored(np.array([float(x), float(y)]), affine[int(i)], scale[int(i)])
        locs.append(f"{i} {p} {sx:.4f} {sy:.4f} {v}")
    (dst / "parts" / "part_locs.txt").write_text("\n".join(locs) + "\n")
    return dst


def _figures(report) -> dict:
    return evaluate_run(loaded(hand_model(), Path(report.root)), report).to_dict()


def _flat(d: dict) -> dict[str, float | None]:
    out = {}
    for key, value in d.items():
        if key == "baselines":
            out.update({f"{name}.{k}": v for name, figures in value.items() for k, v in (figures or {}).items()})
        elif key == "protocol":  # the published protocol's figures of the run, chance and Grad-CAM
            out.update({f"protocol.{name}.{k}": (figures or {}).get(k) for name, figures in value.items()
                        for k in ("keypoint_error", "nmi", "ari")})
        else:
            out[key] = value
    return out


def test_evaluation_scores_turned_photos_as_the_upright_ones(cub, tmp_path):  # noqa: F811
    """Every orientation once over the 8 images (PNG, and JPEG for two): every figure equals the upright data's."""
    plan = {1: (3, 1, "PNG"), 2: (6, 1, "PNG"), 3: (8, 1, "JPEG"), 4: (6, 1, "JPEG"), 5: (2, 1, "PNG"),
            6: (5, 1, "PNG"), 7: (7, 1, "PNG"), 8: (4, 1, "PNG")}
    report = scan(rewrite(cub, tmp_path / "turned" / "CUB_200_2011", plan))
    assert len(report.samples) == 8 and not report.skipped
    plain, again = _flat(_figures(scan(cub))), _flat(_figures(report))
    assert set(plain) == set(again)
    for key, value in plain.items():
        assert again[key] == (None if value is None else pytest.approx(value, rel=1e-9, nan_ok=True)), key


def test_evaluation_scores_reduced_photos_as_the_upright_ones(cub, tmp_path):  # noqa: F811
    """Every image stored 33 times larger (4224 x 2112 before turning, beyond MAX_SIDE: libjpeg decodes it at
    1/2) and turned: the figures that do not depend on the pixel grid are the upright data's."""
    plan = {i: (1 + (i * 3) % 8, 33, "JPEG") for i in range(1, 9)}
    report = scan(rewrite(cub, tmp_path / "big" / "CUB_200_2011", plan))
    plain, again = _flat(_figures(scan(cub))), _flat(_figures(report))
    assert set(plain) == set(again)
    for key, value in plain.items():
        if value is None:
            assert again[key] is None, key
        elif "keypoint_error" in key:
            # the regression normalises pixel centres by the box: x is x / 128 of the upright box but
            # (16.5 x + 7.75) / 2112 of the decoded one, and parts below half the peak are set to 0 rather than
            # moved: keypoint_error_all (empty channels sit at the map centre) moves by 0.016 % of the box
            assert again[key] == pytest.approx(value, abs=0.05), key  # measured: 0.016
        else:
            assert again[key] == pytest.approx(value, rel=1e-6, nan_ok=True), key


def _records(out: Path) -> dict[str, list[dict]]:
    with open(out / "parts.csv", newline="", encoding="utf-8") as fh:
        by: dict[str, list[dict]] = {}
        for r in csv.DictReader(fh):
            by.setdefault(Path(r["image"]).with_suffix("").as_posix(), []).append(r)
    return by


def test_export_cuts_turned_photos_upright_and_records_the_stored_grid(toy, tmp_path):  # noqa: F811
    """The toy birds' test images, stored turned (all eight orientations, PNG: the decoded pixels are the
    originals') and one 66 times larger (4224 px, JPEG, decoded at 1/2): the same crops, and every point and box
    in the stored grid's coordinates (the frame of the data's own annotations)."""
    root, report, run = toy
    test_ids = sorted(s.image_id for s in report.split("test"))
    big = test_ids[0]
    plan = {i: (1 + n % 8, 1, "PNG") for n, i in enumerate(test_ids)}
    plan[big] = (6, 66, "JPEG")
    plain_root = rewrite(root, tmp_path / "plain", {i: (1, 1, "PNG") for i in test_ids})
    turned_root = rewrite(root, tmp_path / "turned", plan)
    plain_report, turned_report = scan(plain_root), scan(turned_root)
    run_all(export_parts(run, plain_report, tmp_path / "a", crop_size=32))
    run_all(export_parts(run, turned_report, tmp_path / "b", crop_size=32))
    a, b = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert set(a) == set(b) and len(a) == len(test_ids)
    recs = {Path(r["image"]).with_suffix("").as_posix(): r for r in map(
        json.loads, (tmp_path / "b" / ".fieldmark-export" / "done.jsonl").read_text().splitlines())}
    by_id = {s.image_id: Path(s.path).relative_to(plain_report.root).with_suffix("").as_posix()
             for s in plain_report.samples}
    for i in test_ids:
        o, k, _ = plan[i]
        key = by_id[i]
        upright = read_image(plain_root / (key + ".png"))
        h, w = upright.shape[:2]
        aff = stored_affine(w, h, o)
        stored_wh = (w * k, h * k) if o < 5 else (h * k, w * k)
        assert (recs[key]["width"], recs[key]["height"]) == stored_wh
        rows_a = {r["part_k"]: r for r in a[key]}
        rows_b = {r["part_k"]: r for r in b[key]}
        if k > 1:  # decoded through JPEG and a 1/2 reduction: the same parts within one map cell (4 px)
            for part in set(rows_a) & set(rows_b):
                want = to_stored(np.array([float(rows_a[part]["x"]), float(rows_a[part]["y"])]), aff, k)
                got = np.array([float(rows_b[part]["x"]), float(rows_b[part]["y"])])
                assert np.abs(got - want).max() <= 4 * k, (part, got, want)
                assert 0 <= float(rows_b[part]["x0"]) < float(rows_b[part]["x1"]) <= stored_wh[0]
            assert rows_b
            continue
        assert set(rows_a) == set(rows_b), key
        for part, ra in rows_a.items():
            rb = rows_b[part]
            want = to_stored(np.array([float(ra["x"]), float(ra["y"])]), aff, 1)
            assert np.allclose([float(rb["x"]), float(rb["y"])], want, atol=0.011), (key, part)
            x0, y0, bw, bh = box_to_stored((float(ra["x0"]), float(ra["y0"]), float(ra["x1"]) - float(ra["x0"]),
                                            float(ra["y1"]) - float(ra["y0"])), aff, 1)
            assert np.allclose([float(rb[c]) for c in ("x0", "y0", "x1", "y1")], [x0, y0, x0 + bw, y0 + bh],
                               atol=0.011), (key, part)
            crop_a = cv2.imread(str(tmp_path / "a" / ra["crop"]))
            crop_b = cv2.imread(str(tmp_path / "b" / rb["crop"]))
            assert np.array_equal(crop_a, crop_b), (key, part)  # cut upright from the same pixels
