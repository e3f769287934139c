"""Data: layout detection, splits, decoding of odd images, and the bad-file report."""

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.data import require_trainable, scan
from engine.errors import DataError, DecodeError
from engine.data.imageio import read_image

from ..conftest import BIRDS_DEV, make_class_folders, need


def write_png_rgba(path: Path, rgba: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))


def cmyk_jpeg(path: Path) -> None:
    from PIL import Image

    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(path, "JPEG")  # pure red in CMYK


def exif_rotated_jpeg(path: Path) -> None:
    """A 30 wide x 10 high JPEG with EXIF orientation 6 (rotate 90° clockwise to view): shown 10 x 30."""
    from PIL import Image

    img = Image.new("RGB", (30, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, "JPEG", exif=exif.tobytes())


def test_decode_odd_images(tmp_path):
    gray = (np.arange(100, dtype=np.uint8).reshape(10, 10))
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert read_image(tmp_path / "g.png").shape == (10, 10, 3)
    deep = np.full((8, 8, 3), 65535, np.uint16)
    deep[..., 0] = 0  # BGR: blue channel 0
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    img = read_image(tmp_path / "d.png")
    assert img.dtype == np.uint8 and tuple(img[0, 0]) == (255, 255, 0)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent -> white on composite
    rgba[0, 0, 3] = 255  # one opaque red pixel
    write_png_rgba(tmp_path / "a.png", rgba)
    img = read_image(tmp_path / "a.png")
    assert tuple(img[0, 0]) == (255, 0, 0) and tuple(img[1, 1]) == (255, 255, 255)


def test_cmyk_and_exif_orientation(tmp_path):
    pytest.importorskip("PIL")
    cmyk_jpeg(tmp_path / "c.jpg")
    img = read_image(tmp_path / "c.jpg")
    assert img.shape == (10, 20, 3) and img[5, 10, 0] > 200 and img[5, 10, 1] < 60
    exif_rotated_jpeg(tmp_path / "r.jpg")
    assert read_image(tmp_path / "r.jpg").shape == (30, 10, 3)


def test_huge_image_is_reduced(tmp_path):
    big = np.zeros((50, 9000, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "wide.jpg"), big)
    img = read_image(tmp_path / "wide.jpg")
    assert max(img.shape[:2]) <= 4096


def bad_corpus(root: Path) -> dict[str, str]:
    """Broken files in a class folder, with the reason each must be reported with."""
    d = root / "bad_class"
    d.mkdir(parents=True)
    good = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes()
    (d / "zero.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (d / "text.jpg").write_text("this is not an image")
    png = cv2.imencode(".png", np.full((16, 16, 3), 50, np.uint8))[1].tobytes()
    broken = bytearray(png)
    broken[33 + 8: 33 + 12] = b"\x00\x00\x00\x00"  # clobber the first IDAT's data
    (d / "badcrc.png").write_bytes(bytes(broken))
    (d / "ok.jpg").write_bytes(good)
    return {"zero.jpg": "zero bytes", "truncated.jpg": "truncated", "text.jpg": "not an image"}


def test_bad_files_are_reported_with_reasons_and_skipped(tmp_path):
    make_class_folders(tmp_path, classes=2, per_class=4)
    expected = bad_corpus(tmp_path)
    report = scan(tmp_path)
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    for name, reason in expected.items():
        assert reasons.get(name) == reason, (name, reasons)
    assert sum(1 for s in report.samples if Path(s.path).name == "ok.jpg") == 1
    verified = scan(tmp_path, verify=True)
    assert {Path(s.path).name for s in verified.skipped} >= {"zero.jpg", "truncated.jpg", "text.jpg", "badcrc.png"}
    text = verified.describe()
    assert "skipped" in text and "badcrc.png" in text and "not an image" in text
    with pytest.raises(DecodeError) as info:
        read_image(tmp_path / "bad_class" / "badcrc.png")
    assert info.value.reason == "corrupt"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    make_class_folders(tmp_path, classes=2, per_class=2)
    p = tmp_path / "class_0" / "img_000.jpg"
    p.chmod(0)
    report = scan(tmp_path)
    assert any(s.reason == "unreadable" for s in report.skipped)


def test_class_folders_split_is_seeded_and_stratified(tmp_path):
    make_class_folders(tmp_path, classes=3, per_class=10)
    a, b = scan(tmp_path, seed=1), scan(tmp_path, seed=1)
    assert a.layout == "class-folders" and a.classes == ["class_0", "class_1", "class_2"]
    assert [s.split for s in a.samples] == [s.split for s in b.samples]
    assert all(c == {"train": 8, "test": 2} for c in a.counts().values())
    c = scan(tmp_path, seed=2)
    assert [s.split for s in a.samples] != [s.split for s in c.samples]


def test_nested_images_symlink_loop_and_unicode_paths(tmp_path):
    root = tmp_path / "données birds"
    make_class_folders(root, classes=2, per_class=3)
    nested = root / "class_0" / "sub dir é"
    nested.mkdir()
    (nested / "x.jpg").write_bytes((root / "class_0" / "img_000.jpg").read_bytes())
    os.symlink(root / "class_0", root / "class_0" / "loop")
    report = scan(root)
    assert sum(1 for s in report.samples if s.label == 0) == 4
    assert any(s.reason == "symlink loop" for s in report.skipped)


def test_train_test_folders(tmp_path):
    make_class_folders(tmp_path / "train", classes=2, per_class=3)
    make_class_folders(tmp_path / "test", classes=2, per_class=2)
    r = scan(tmp_path)
    assert r.layout == "train-test-folders"
    assert r.counts() == {"class_0": {"train": 3, "test": 2}, "class_1": {"train": 3, "test": 2}}


def test_flat_folder_cannot_train(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    r = scan(tmp_path)
    assert r.layout == "flat" and len(r.samples) == 3 and r.classes == []
    with pytest.raises(DataError, match="flat folder of 3 images"):
        require_trainable(r)


def test_one_class_and_empty_folder_are_clear_errors(tmp_path):
    make_class_folders(tmp_path / "one", classes=1, per_class=3)
    with pytest.raises(DataError, match="at least two"):
        require_trainable(scan(tmp_path / "one"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable image"):
        scan(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        scan(tmp_path / "missing")


def test_single_image_class_goes_to_train_with_a_note(tmp_path):
    make_class_folders(tmp_path, classes=2, per_class=4)
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "a.jpg").write_bytes((tmp_path / "class_0" / "img_000.jpg").read_bytes())
    r = scan(tmp_path)
    assert r.counts()["lonely"] == {"train": 1, "test": 0}
    assert any("lonely" in n for n in r.notes)


def write_cub(root: Path, n_per_class: int = 2) -> Path:
    (root / "images" / "001.A_bird").mkdir(parents=True)
    (root / "images" / "002.B_bird").mkdir(parents=True)
    (root / "parts").mkdir()
    lines, labels, split, boxes, locs = [], [], [], [], []
    i = 0
    for c, folder in ((1, "001.A_bird"), (2, "002.B_bird")):
        for k in range(n_per_class):
            i += 1
            rel = f"{folder}/img_{k}.jpg"
            cv2.imwrite(str(root / "images" / rel), np.full((30, 40, 3), 90 * c, np.uint8))
            lines.append(f"{i} {rel}")
            labels.append(f"{i} {c}")
            split.append(f"{i} {1 if k == 0 else 0}")
            boxes.append(f"{i} 5.0 6.0 20.0 15.0")
            locs += [f"{i} {p} {10 + p}.0 12.0 {1 if p != 3 else 0}" for p in range(1, 16)]
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("1 001.A_bird\n2 002.B_bird\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    names = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
             "right eye", "right leg", "right wing", "tail", "throat"]
    (root / "parts" / "parts.txt").write_text("".join(f"{k + 1} {n}\n" for k, n in enumerate(names)))
    (root / "parts" / "part_locs.txt").write_text("\n".join(locs) + "\n")
    return root


def test_cub_layout_uses_its_split_boxes_and_parts(tmp_path):
    write_cub(tmp_path / "CUB_200_2011")
    r = scan(tmp_path)  # the CUB_200_2011 sub-folder is found
    assert r.layout == "cub" and r.classes == ["A_bird", "B_bird"]
    assert r.counts() == {"A_bird": {"train": 1, "test": 1}, "B_bird": {"train": 1, "test": 1}}
    s = r.samples[0]
    assert s.bbox == (5.0, 6.0, 20.0, 15.0)
    kp = s.keypoints()
    assert kp.shape == (15, 3) and kp[1].tolist() == [12.0, 12.0, 1.0] and kp[2, 2] == 0
    assert len(r.part_names) == 15 and r.has_parts


def test_split_csv_is_honoured(tmp_path):
    make_class_folders(tmp_path, classes=2, per_class=2)
    (tmp_path / "split.csv").write_text("path,split\nclass_0/img_000.jpg,test\nclass_0/img_001.jpg,train\n"
                                        "class_1/img_000.jpg,train\nclass_1/img_001.jpg,test\n")
    r = scan(tmp_path)
    assert r.split_source == "split.csv"
    assert {(Path(s.path).parent.name, Path(s.path).name): s.split for s in r.samples}[("class_0", "img_000.jpg")] == "test"
    (tmp_path / "split.csv").write_text("path,split\nclass_0/img_000.jpg,holdout\n")
    with pytest.raises(DataError, match="holdout"):
        scan(tmp_path)


def test_birds_dev_report():
    r = scan(need(BIRDS_DEV))
    assert r.layout == "class-folders" and len(r.classes) == 16 and len(r.samples) == 950
    assert sum(1 for s in r.samples if s.split == "train") == 470 and not r.skipped
