"""The toy-birds generator: marks where the keypoints say, pose maths, class design, layout, determinism."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.toybirds import dataset as T
from engine.errors import Cancelled, ConfigError, DataError
from engine.data.imageio import read_image

SIDES = ("eye", "wing", "leg")


def hue_fraction(rgb: np.ndarray, x: float, y: float, hue: float, radius: int = 3, tol: float = 12.0) -> float:
    """Share of the (2r+1)² window at (x, y) whose colour is the saturated ``hue``."""
    xi, yi = round(x), round(y)
    win = rgb[max(0, yi - radius):yi + radius + 1, max(0, xi - radius):xi + radius + 1]
    hsv = cv2.cvtColor(win.astype(np.float32) / 255, cv2.COLOR_RGB2HSV)
    dh = np.abs((hsv[..., 0] - hue + 180) % 360 - 180)
    return float(((dh < tol) & (hsv[..., 1] > 0.5) & (hsv[..., 2] > 0.3)).mean())


def mark_location(kps: dict, mark: str) -> tuple[float, float]:
    visible = [kps[p] for p in T.MARKS[mark].parts if kps[p][2]]
    assert len(visible) == 1, (mark, visible)
    return visible[0][0], visible[0][1]


def check_marks(rgb: np.ndarray, kps: dict, marks, where: str) -> None:
    for name, spec in T.MARKS.items():
        f = hue_fraction(rgb, *mark_location(kps, name), spec.hue)
        if name in marks:
            assert f >= 0.2, f"{where}: {name} not drawn at its {spec.part} keypoint ({f:.2f})"
        else:
            assert f <= 0.02, f"{where}: {name} colour at its keypoint although the class lacks it ({f:.2f})"


def read_rows(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> T.ToyBirds:
    out = tmp_path_factory.mktemp("tb") / "toy"
    return T.generate(out, classes=8, per_class=4, size=160, seed=3)


# ------------------------------------------------------------------ class design

@pytest.mark.parametrize("n", [2, 3, 5, 8, 9, 16, 17, 40])
def test_classes_unique_two_or_three_marks_and_pairs_differ_in_one(n):
    classes, pairs = T.design_classes(n)
    assert len(classes) == n
    sets = [frozenset(c.marks) for c in classes]
    assert len(set(sets)) == n, "mark combinations must be unique"
    assert len({c.name for c in classes}) == n, "names must be unique"
    assert all(2 <= len(s) <= 3 and s <= set(T.MARKS) for s in sets)
    assert [(i, j) for i, j, _ in pairs] == [(2 * k, 2 * k + 1) for k in range(n // 2)]
    for i, j, m in pairs:
        assert sets[i] ^ sets[j] == {m}, (classes[i], classes[j], m)


def test_default_classes_use_only_designated_pairs_as_near_neighbours():
    classes, pairs = T.design_classes(8)
    near = {(i, j) for i in range(8) for j in range(i + 1, 8)
            if len(set(classes[i].marks) ^ set(classes[j].marks)) == 1}
    assert near == {(i, j) for i, j, _ in pairs}
    assert len({m for _, _, m in pairs}) == 4, "each pair differs in its own mark"
    assert classes[0].name == "Cyan_winged_Orange_breasted_Finch"


@pytest.mark.parametrize("bad", [0, 1, -3, 10 ** 4, "8", True, 2.5])
def test_bad_class_count_is_a_config_error(tmp_path, bad):
    with pytest.raises(ConfigError, match=f"classes={bad!r}"):
        T.generate(tmp_path / "x", classes=bad, per_class=1)
    assert T.max_classes() >= 16
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("kw", [{"per_class": 0}, {"size": 10}, {"test_fraction": 1.5}, {"seed": -1}])
def test_other_bad_settings_are_config_errors(tmp_path, kw):
    name, value = next(iter(kw.items()))
    with pytest.raises(ConfigError, match=f"{name}={value!r}"):
        T.generate(tmp_path / "x", classes=2, **{"per_class": 2, **kw})


# ------------------------------------------------------------------ drawing and pose

def test_marks_are_drawn_at_their_part_keypoints_in_every_image(dataset):
    root = dataset.root
    images = dict(read_rows(root / "images.txt"))
    labels = {int(i): int(c) for i, c in read_rows(root / "image_class_labels.txt")}
    locs: dict[int, dict[str, tuple]] = {}
    for i, p, x, y, v in read_rows(root / "parts" / "part_locs.txt"):
        locs.setdefault(int(i), {})[T.PARTS[int(p) - 1]] = (float(x), float(y), int(v))
    assert len(images) == 32
    for image_id, rel in images.items():
        rgb = read_image(root / "images" / rel)
        marks = dataset.classes[labels[int(image_id)] - 1].marks
        check_marks(rgb, locs[int(image_id)], marks, rel)


def test_marks_at_keypoints_for_random_poses_and_mark_sets():
    for i in range(30):
        marks = [m for k, m in enumerate(T.MARKS) if (i >> (k % 5)) & 1 or k == i % 9]
        rgb, kps, _ = T.draw_bird(np.random.default_rng(i), 160, marks)
        check_marks(rgb, kps, marks, f"bird {i}")


def test_a_mark_changes_only_a_small_patch_of_the_same_bird():
    for i, mark in enumerate(T.MARKS):
        plain, k0, b0 = T.draw_bird(np.random.default_rng(40 + i), 160, [])
        marked, k1, b1 = T.draw_bird(np.random.default_rng(40 + i), 160, [mark])
        assert k0 == k1 and b0 == b1
        changed = np.abs(plain.astype(int) - marked.astype(int)).max(axis=2) > 40
        assert 0.003 < changed.mean() < 0.03, (mark, changed.mean())  # ~0.5-1.2 % of the image
        ys, xs = np.nonzero(changed)
        x, y, w, h = b0
        assert xs.min() >= x - 1 and xs.max() <= x + w + 1 and ys.min() >= y - 1 and ys.max() <= y + h + 1
        assert changed.sum() < 0.08 * w * h, "a mark is small relative to the bird"


def test_flip_mirrors_keypoints_and_swaps_sides():
    c, s = (80.0, 84.0), 30.0
    _, k0, b0 = T.draw_bird(np.random.default_rng(7), 160, ["eye_ring"], flip=False, angle=0, scale=s, center=c)
    img, k1, b1 = T.draw_bird(np.random.default_rng(7), 160, ["eye_ring"], flip=True, angle=0, scale=s, center=c)
    for part in T.PARTS:
        side, _, base = part.partition(" ")
        if base in SIDES:
            assert k0[f"right {base}"][2] == 1 and k0[f"left {base}"] == (0.0, 0.0, 0)  # facing right
            assert k1[f"left {base}"][2] == 1 and k1[f"right {base}"] == (0.0, 0.0, 0)
            if side == "left":
                continue
            a, b = k0[f"right {base}"], k1[f"left {base}"]
        else:
            a, b = k0[part], k1[part]
        assert b[0] == pytest.approx(2 * c[0] - a[0], abs=1e-6) and b[1] == pytest.approx(a[1], abs=1e-6), part
    assert k0["beak"][0] > c[0] > k1["beak"][0]
    assert b1[0] == pytest.approx(2 * c[0] - b0[0] - b0[2], abs=1e-6) and b1[1:] == pytest.approx(b0[1:], abs=1e-6)
    assert hue_fraction(img, *k1["left eye"][:2], T.MARKS["eye_ring"].hue) >= 0.2


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("angle", [25.0, -18.0])
def test_rotation_turns_keypoints_about_the_bird_centre(flip, angle):
    c, s = (81.0, 79.0), 28.0
    _, k0, _ = T.draw_bird(np.random.default_rng(11), 160, [], flip=flip, angle=0, scale=s, center=c)
    img, k1, box = T.draw_bird(np.random.default_rng(11), 160, ["crown_patch", "tail_tip"], flip=flip,
                               angle=angle, scale=s, center=c)
    a = math.radians(angle)  # counter-clockwise on screen, y down
    for part in T.PARTS:
        x, y, v = k0[part]
        if not v:
            assert k1[part] == (0.0, 0.0, 0)
            continue
        dx, dy = x - c[0], y - c[1]
        want = (c[0] + dx * math.cos(a) + dy * math.sin(a), c[1] - dx * math.sin(a) + dy * math.cos(a))
        assert k1[part][:2] == pytest.approx(want, abs=1e-6), part
    if angle > 0:  # counter-clockwise lifts the head of a right-facing bird, lowers a left-facing one's
        assert (k1["crown"][1] < k0["crown"][1]) != flip
    for m in ("crown_patch", "tail_tip"):
        assert hue_fraction(img, *mark_location(k1, m), T.MARKS[m].hue) >= 0.2


def test_random_poses_keep_the_bird_inside_the_image():
    for i in range(40):
        _, kps, (x, y, w, h) = T.draw_bird(np.random.default_rng(100 + i), 128, [])
        assert 0 <= x and 0 <= y and x + w <= 127 and y + h <= 127
        assert 0.35 * 128 < w < 128


# ------------------------------------------------------------------ layout

def test_layout_files_parse_and_agree(dataset):
    root, n = dataset.root, 32
    images = read_rows(root / "images.txt")
    assert [int(r[0]) for r in images] == list(range(1, n + 1))
    classes = read_rows(root / "classes.txt")
    assert [r[1] for r in classes] == [f"{i + 1:03d}.{c.name}" for i, c in enumerate(dataset.classes)]
    labels = dict((int(i), int(c)) for i, c in read_rows(root / "image_class_labels.txt"))
    for image_id, rel in images:
        folder, name = rel.split("/")
        cls = dataset.classes[labels[int(image_id)] - 1].name
        assert folder == f"{labels[int(image_id)]:03d}.{cls}" and name == f"{cls}_{int(image_id):04d}.jpg"
        assert (root / "images" / rel).read_bytes()[:3] == b"\xff\xd8\xff"
    assert sum(1 for _ in (root / "images").rglob("*.jpg")) == n
    split = {int(i): int(t) for i, t in read_rows(root / "train_test_split.txt")}
    assert set(split) == set(range(1, n + 1))
    for cid in range(1, 9):  # stratified: half of every class is test
        assert sum(split[i] == 0 for i in split if labels[i] == cid) == 2
    assert read_rows(root / "parts" / "parts.txt") == [[str(i + 1), *p.split()] for i, p in enumerate(T.PARTS)]
    assert T.PARTS[6] == "left eye" and T.PARTS[13] == "tail" and len(T.PARTS) == 15
    boxes = {int(r[0]): tuple(map(float, r[1:])) for r in read_rows(root / "bounding_boxes.txt")}
    locs = read_rows(root / "parts" / "part_locs.txt")
    assert len(locs) == 15 * n
    for row in locs:
        i, p, x, y, v = int(row[0]), int(row[1]), float(row[2]), float(row[3]), int(row[4])
        assert 1 <= p <= 15 and v in (0, 1)
        bx, by, bw, bh = boxes[i]
        assert 0 <= bx and 0 <= by and bx + bw <= 160 and by + bh <= 160
        if v:
            assert bx - 0.1 <= x <= bx + bw + 0.1 and by - 0.1 <= y <= by + bh + 0.1, row
        else:
            assert (x, y) == (0.0, 0.0) and T.PARTS[p - 1].split()[-1] in SIDES
    by_image: dict[int, dict[str, int]] = {}
    for row in locs:
        by_image.setdefault(int(row[0]), {})[T.PARTS[int(row[1]) - 1]] = int(row[4])
    for vis in by_image.values():  # one side shown, the same for eye, wing and leg
        assert vis["left eye"] + vis["right eye"] == 1
        assert vis["left eye"] == vis["left wing"] == vis["left leg"]
    assert len({vis["left eye"] for vis in by_image.values()}) == 2, "both facings occur"


def test_truth_file_and_readers(dataset):
    doc = json.loads((dataset.root / "toybirds.json").read_text())
    assert doc["format"] == "fieldmark-toybirds" and doc["version"] == 1
    assert doc["seed"] == 3 and doc["size"] == 160
    assert [c["name"] for c in doc["classes"]] == dataset.class_names
    assert doc["confusable_pairs"] == [list(p) for p in dataset.pairs]
    for name, m in doc["marks"].items():
        assert m["part"] in T.PARTS and set(m["parts"]) <= set(T.PARTS) and len(m["colour"]) == 3
    truth = T.load_truth(dataset.root)
    assert truth.classes == dataset.classes and truth.pairs == dataset.pairs and truth.n_images == 32
    cm = T.class_marks(dataset.root)
    assert cm[dataset.classes[1].name] == [(m, T.MARKS[m].part) for m in dataset.classes[1].marks]
    assert ("crown_patch", "crown") in cm[dataset.classes[1].name]
    with pytest.raises(DataError, match="toybirds.json"):
        T.load_truth(dataset.root / "images")


# ------------------------------------------------------------------ determinism and safety

def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = T.generate(tmp_path / "a", classes=3, per_class=3, size=96, seed=5)
    b = T.generate(tmp_path / "b", classes=3, per_class=3, size=96, seed=5)
    c = T.generate(tmp_path / "c", classes=3, per_class=3, size=96, seed=6)
    fa, fb, fc = _files(a.root), _files(b.root), _files(c.root)
    assert fa == fb
    assert fa.keys() == fc.keys()
    jpgs = [k for k in fa if k.endswith(".jpg")]
    assert len(jpgs) == 9 and all(fa[k] != fc[k] for k in jpgs)
    assert fa["parts/part_locs.txt"] != fc["parts/part_locs.txt"]


def test_refuses_unrelated_folder_and_replaces_old_output(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="photos"):
        T.generate(other, classes=2, per_class=1)
    assert [p.name for p in other.iterdir()] == ["holiday.jpg"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="file"):
        T.generate(tmp_path / "file", classes=2, per_class=1)

    out = tmp_path / "toy"
    out.mkdir()  # an empty folder is fine
    T.generate(out, classes=2, per_class=2, size=64)
    (out / "stale.txt").write_text("old")
    calls = []
    tb = T.generate(out, classes=3, per_class=2, size=64, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 6) for i in range(1, 7)]
    assert tb.n_images == 6 and not (out / "stale.txt").exists()
    assert len(read_rows(out / "images.txt")) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "photos", "toy"], "no temporary folders left"


def test_interrupted_run_leaves_nothing(tmp_path):
    def stop(done, total):
        if done == 3:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        T.generate(tmp_path / "toy", classes=2, per_class=4, size=64, progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_cli(tmp_path, capsys):
    from engine.cli import toybirds as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["toybirds", str(tmp_path / "tb"), "--classes", "4", "--per-class", "2",
                              "--size", "64", "--seed", "1", "--test-fraction", "0.5"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "tb") in out and "Blue_crowned" in out and "crown_patch" in out
    assert T.load_truth(tmp_path / "tb").n_images == 8
