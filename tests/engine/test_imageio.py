"""The decoder (engine.data.imageio): bytes after the end marker, truncation, all eight orientations in every format
with alpha on white (Pillow as the reference), OpenCV's errors as DecodeError, and the ImageInfo that maps a file's
points onto the decoded image (checked against dots drawn in the file, not against the formula)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.data import scan
from engine.data.imageio import check_file, load_image, read_image, write_image
from engine.errors import DecodeError

from ..conftest import make_class_folders

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageOps  # noqa: E402


def photo(h: int = 48, w: int = 80, alpha: bool = False) -> np.ndarray:
    """RGB(A) with no symmetry: every orientation of it differs."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 3, yy * 5, (xx * 2 + yy) % 256], -1).astype(np.uint8)
    rgb[4:12, 6:30] = (250, 20, 20)
    if not alpha:
        return rgb
    a = ((xx * 255) // max(1, w - 1)).astype(np.uint8)  # from transparent (left) to opaque (right)
    return np.dstack([rgb, a])


def encode(arr: np.ndarray, fmt: str, orientation: int = 1) -> bytes:
    """``arr`` stored as it is, tagged with ``orientation`` (EXIF; TIFF: tag 274 in the first directory)."""
    img = Image.fromarray(arr, "RGBA" if arr.shape[-1] == 4 else "RGB")
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    if fmt == "TIFF":
        img.save(out, fmt, tiffinfo={274: orientation})
    elif fmt == "JPEG":
        img.save(out, fmt, exif=exif.tobytes(), quality=98)
    else:
        img.save(out, fmt, exif=exif.tobytes(), **({"lossless": True} if fmt == "WEBP" else {}))
    return out.getvalue()


def pillow_view(data: bytes) -> np.ndarray:
    """What Pillow shows: orientation applied, alpha composited on white."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if img.mode == "RGBA":
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
    return np.asarray(img.convert("RGB"))


# -------------------------------------------------------------------------------------- end marker, truncation
def test_bytes_after_the_end_marker_are_a_normal_file(tmp_path):
    """Cameras and editors append data after EOI / IEND (maker notes, a second JPEG, padding): the file is
    whole and must decode like the bare image."""
    make_class_folders(tmp_path, classes=2, per_class=2)
    rgb = photo()
    jpg = cv2.imencode(".jpg", rgb)[1].tobytes()
    png = cv2.imencode(".png", rgb)[1].tobytes()
    cases = {"junk.jpg": jpg + b"\x00" * 200, "second.jpg": jpg + jpg[: len(jpg) // 2],
             "junk.png": png + b"x" * 200, "padded.png": png + b"\x00" * 4096}
    for name, data in cases.items():
        (tmp_path / "class_0" / name).write_bytes(data)
    report = scan(tmp_path, verify=True)
    used = {Path(s.path).name for s in report.samples}
    assert set(cases) <= used, report.describe()
    for name in cases:
        path = tmp_path / "class_0" / name
        assert check_file(path) in ("jpeg", "png")
        bare = jpg if name.endswith(".jpg") else png
        assert np.array_equal(read_image(path), cv2.cvtColor(cv2.imdecode(np.frombuffer(bare, np.uint8), 1),
                                                             cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize("cut", ["half", "before EOI", "in the header", "half, then zeros"])
def test_a_truncated_jpeg_is_still_truncated(tmp_path, cut):
    jpg = cv2.imencode(".jpg", photo())[1].tobytes()
    data = {"half": jpg[: len(jpg) // 2], "before EOI": jpg[:-2], "in the header": jpg[:120],
            "half, then zeros": jpg[: len(jpg) // 2] + b"\x00" * 300}[cut]
    path = tmp_path / "cut.jpg"
    path.write_bytes(data)
    for call in (check_file, read_image):
        with pytest.raises(DecodeError) as info:
            call(path)
        assert info.value.reason == "truncated" and str(path) in str(info.value)


def test_a_truncated_png_is_still_truncated(tmp_path):
    png = cv2.imencode(".png", photo())[1].tobytes()
    for k, data in enumerate([png[: len(png) // 2], png[:-12]]):
        path = tmp_path / f"cut{k}.png"
        path.write_bytes(data)
        for call in (check_file, read_image):
            with pytest.raises(DecodeError) as info:
                call(path)
            assert info.value.reason == "truncated"


# ------------------------------------------------------------------------------------------------ orientation
@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt,alpha", [("JPEG", False), ("PNG", False), ("PNG", True), ("WEBP", False),
                                       ("WEBP", True), ("TIFF", False), ("TIFF", True)])
def test_every_orientation_and_alpha_as_pillow_shows_them(tmp_path, fmt, alpha, orientation):
    data = encode(photo(alpha=alpha), fmt, orientation)
    path = tmp_path / f"o{orientation}.{fmt.lower()}"
    path.write_bytes(data)
    img = read_image(path)
    expected = pillow_view(data)
    assert img.shape == expected.shape
    assert np.abs(img.astype(int) - expected).max() <= 1
    info = load_image(path).info
    assert info.orientation == orientation and info.file_size == (80, 48)
    assert info.size == (img.shape[1], img.shape[0])


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_image_info_maps_a_file_point_to_where_it_shows(tmp_path, fmt, orientation):
    """A dot drawn at a known place of the stored grid must be found, after decoding, where
    ``info.points_to_image`` says; and ``points_to_file`` brings it back. Boxes follow their corners."""
    raw = np.full((60, 100, 3), 40, np.uint8)
    x, y = 17, 9
    raw[y - 1:y + 2, x - 1:x + 2] = 255  # a 3x3 dot centred on (17, 9)
    raw[30:50, 60:90] = (0, 0, 200)  # a box, edges x 60..90, y 30..50
    path = tmp_path / f"dot.{fmt.lower()}"
    path.write_bytes(encode(raw, fmt, orientation))
    img, info = load_image(path)
    lum = img.astype(int).sum(-1)
    found = np.argwhere(lum > 600).mean(axis=0)[::-1]  # (x, y) of the dot
    assert np.allclose(info.points_to_image((x, y)), found, atol=0.25)
    assert np.allclose(info.points_to_file(found), (x, y), atol=0.25)
    blue = np.argwhere((img[..., 2] > 150) & (img[..., 0] < 80))
    shown = (blue[:, 1].min(), blue[:, 0].min(), blue[:, 1].max() + 1, blue[:, 0].max() + 1)
    assert np.allclose(info.box_to_image((60, 30, 90, 50)), shown, atol=1)


def test_a_reduced_rotated_jpeg_maps_its_points(tmp_path):
    """A JPEG beyond MAX_SIDE is decoded reduced by libjpeg (here 1/2): points map through the scale too."""
    raw = np.full((300, 4400, 3), 30, np.uint8)
    x, y = 3001, 120
    raw[y - 4:y + 5, x - 4:x + 5] = 255
    path = tmp_path / "wide.jpg"
    path.write_bytes(encode(raw, "JPEG", 6))
    img, info = load_image(path)
    assert info.file_size == (4400, 300) and info.orientation == 6 and info.size == (150, 2200)
    assert img.shape == (2200, 150, 3)
    found = np.argwhere(img.astype(int).sum(-1) > 450).mean(axis=0)[::-1]
    assert np.allclose(info.points_to_image((x, y)), found, atol=0.6)


# ------------------------------------------------------------------------------------------------ cv2.error
def _png_claiming(w: int, h: int) -> bytes:
    data = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", w, h)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def test_opencv_errors_become_decode_errors_naming_the_file(tmp_path):
    png = tmp_path / "huge header.png"
    png.write_bytes(_png_claiming(60000, 60000))
    jpg = tmp_path / "huge header.jpg"
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    jpg.write_bytes(bytes(data))
    for path in (png, jpg):
        assert check_file(path)  # the structure is fine: only the decoder can refuse it
        with pytest.raises(DecodeError) as info:
            read_image(path, max_side=100000)
        assert info.value.reason == "too large" and str(path) in str(info.value)
        assert "60000 x 60000" in info.value.detail
    with pytest.raises(DecodeError) as info:
        write_image(tmp_path / "out.nosuchformat", np.zeros((4, 4, 3), np.uint8))
    assert "out.nosuchformat" in str(info.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_damaged_bytes_give_an_image_or_a_decode_error(fmt):
    """Cut, overwritten and bit-flipped copies of a tagged file: the decoder returns an image or raises
    DecodeError, never OpenCV's or struct's own exceptions (seeded)."""
    from engine.data.imageio import decode

    good = encode(photo(alpha=fmt != "JPEG"), fmt, 6)
    rng = np.random.default_rng(16)
    outcomes = {"image": 0, "error": 0}
    for _ in range(150):
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 6))):
            at = int(rng.integers(0, len(data)))
            data[at:at + int(rng.integers(1, 9))] = rng.integers(0, 256, int(rng.integers(1, 9)), np.uint8).tobytes()
        if rng.random() < 0.3:
            data = data[: int(rng.integers(8, len(data)))]
        try:
            img, info = decode(bytes(data), f"fuzz.{fmt.lower()}")
            assert img.dtype == np.uint8 and img.ndim == 3 and info.size == (img.shape[1], img.shape[0])
            outcomes["image"] += 1
        except DecodeError as exc:
            assert f"fuzz.{fmt.lower()}" in str(exc)
            outcomes["error"] += 1
    assert outcomes["error"] > 0
