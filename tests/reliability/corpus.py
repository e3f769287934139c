"""A generated corpus of awkward and broken inputs, in the class-folders layout, for the reliability suite.

``build_corpus(root)`` writes it and returns a :class:`Corpus` saying what each file is and how the engine must
treat it: ``bad`` files are reported with a reason and skipped (``decode_only`` among them: found only by decoding,
not by the fast scan), ``odd`` files are unusual but valid and must be used, ``turned`` ones among them shown
upright, and ``notes`` are report notes the scan must give.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

#: When the tests run as root, mode 000 does not stop reads: that one case can only be checked as a normal user.
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class Corpus:
    root: Path
    bad: dict[str, str] = field(default_factory=dict)  # relative path -> scan reason (decoding: verify=True)
    decode_only: list[str] = field(default_factory=list)  # bad files that only decoding finds
    turned: dict[str, tuple[int, int]] = field(default_factory=dict)  # odd files with an EXIF turn: (H, W) shown
    odd: list[str] = field(default_factory=list)  # relative paths of unusual but valid images
    normal: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # entries that are no image files (a folder named x.jpg)
    notes: list[str] = field(default_factory=list)  # substrings of report notes
    loop: str = ""  # the symlink that closes a loop

    def usable(self) -> list[str]:
        return self.normal + self.odd

    def entries(self) -> list[Path]:
        """Every path the corpus holds below its class folders, as a user would pass them one by one."""
        return [self.root / p for p in sorted(self.normal + self.odd + list(self.bad) + self.others)]


def _img(rng: np.random.Generator, h: int, w: int, k: int) -> np.ndarray:
    img = (rng.random((h, w, 3)) * 70).astype(np.uint8)
    img[h // 4: h // 2, (k * 9) % max(1, w - 8):(k * 9) % max(1, w - 8) + 8] = (250, 60 * k % 255, 200)
    return img


def _png_with_bad_crc() -> bytes:
    """A valid 16x16 PNG whose IDAT chunk has a wrong CRC (the data itself is intact)."""
    data = bytearray(cv2.imencode(".png", np.full((16, 16, 3), 90, np.uint8))[1].tobytes())
    i = 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i:i + 4])
        kind = bytes(data[i + 4:i + 8])
        if kind == b"IDAT":
            crc_at = i + 8 + length
            good = zlib.crc32(bytes(data[i + 4:crc_at])) & 0xFFFFFFFF
            data[crc_at:crc_at + 4] = struct.pack(">I", good ^ 0xDEADBEEF)
            return bytes(data)
        i += 12 + length
    raise AssertionError("no IDAT chunk")


def _png_claiming(w: int, h: int) -> bytes:
    """A 4x4 PNG whose header says w x h (CRC fixed): well formed, and more pixels than OpenCV will decode."""
    data = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", w, h)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _turned(img: np.ndarray, path: Path, orientation: int) -> None:
    """``img`` (RGB or RGBA) stored as it is with an EXIF orientation tag (Pillow)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img, "RGBA" if img.shape[-1] == 4 else "RGB").save(path, exif=exif.tobytes())


def build_corpus(root: Path, per_class: int = 6) -> Corpus:
    """Write the corpus under ``root`` (4 classes: two ordinary, one with a non-ASCII, spaced name, one with a
    single image) and return its description."""
    from PIL import Image

    rng = np.random.default_rng(7)
    c = Corpus(root)
    classes = ["alpha", "bravo", "grive à tête"]
    for k, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            stem = f"ça va {i}" if k == 2 else f"{name}_{i}"
            cv2.imwrite(str(d / f"{stem}.jpg"), _img(rng, 40, 44, k))
            c.normal.append(f"{name}/{stem}.jpg")
    solo = root / "solo"
    solo.mkdir()
    cv2.imwrite(str(solo / "only.jpg"), _img(rng, 40, 40, 3))
    c.normal.append("solo/only.jpg")
    c.notes.append("class solo has only one image")

    a, b = root / "alpha", root / "bravo"
    # odd but valid: each must decode and be used
    Image.new("CMYK", (40, 30), (0, 200, 255, 0)).save(a / "cmyk.jpg", "JPEG")
    deep = (rng.random((30, 40, 3)) * 65535).astype(np.uint16)
    cv2.imwrite(str(a / "deep16.png"), deep)
    cv2.imwrite(str(a / "gray.png"), (rng.random((30, 40)) * 255).astype(np.uint8))
    rgba = np.dstack([_img(rng, 30, 40, 0), np.full((30, 40), 128, np.uint8)])
    cv2.imwrite(str(a / "alpha.png"), rgba)
    wide = np.zeros((50, 20000, 3), np.uint8)
    wide[:, ::500] = 255
    cv2.imwrite(str(a / "wide 20000px.jpg"), wide, [cv2.IMWRITE_JPEG_QUALITY, 60])
    cv2.imwrite(str(a / "tiny.png"), np.full((1, 1, 3), 200, np.uint8))
    cv2.imwrite(str(a / "sliver.png"), (rng.random((2, 20000, 3)) * 255).astype(np.uint8))  # 10000:1
    c.odd += ["alpha/cmyk.jpg", "alpha/deep16.png", "alpha/gray.png", "alpha/alpha.png", "alpha/wide 20000px.jpg",
              "alpha/tiny.png", "alpha/sliver.png"]
    # bytes after the end marker (maker notes, a second preview, padding): a whole image
    (a / "trailing bytes.jpg").write_bytes(cv2.imencode(".jpg", _img(rng, 30, 40, 0))[1].tobytes() + b"\0junk" * 60)
    (a / "trailing bytes.png").write_bytes(cv2.imencode(".png", _img(rng, 30, 40, 0))[1].tobytes() + b"\0" * 300)
    # stored turned, with the EXIF orientation that shows them upright: 180° with alpha, 90° clockwise
    _turned(np.dstack([_img(rng, 30, 40, 0), np.full((30, 40), 160, np.uint8)]), a / "turned 180.png", 3)
    _turned(_img(rng, 30, 40, 0), a / "turned 90.jpg", 6)
    c.turned.update({"alpha/turned 180.png": (30, 40), "alpha/turned 90.jpg": (40, 30)})
    c.odd += ["alpha/trailing bytes.jpg", "alpha/trailing bytes.png", *c.turned]

    # broken: each must be reported with its reason and skipped
    good = cv2.imencode(".jpg", _img(rng, 32, 32, 1))[1].tobytes()
    (b / "zero.jpg").write_bytes(b"")
    (b / "truncated.jpg").write_bytes(good[: len(good) // 2])
    png = cv2.imencode(".png", _img(rng, 32, 32, 1))[1].tobytes()
    (b / "truncated.png").write_bytes(png[: len(png) // 2])
    (b / "huge header.png").write_bytes(_png_claiming(60000, 60000))  # OpenCV raises cv2.error on it
    (b / "bad crc.png").write_bytes(_png_with_bad_crc())
    (b / "text.jpg").write_text("not an image, just text\n", encoding="utf-8")
    os.symlink(root / "no such file.jpg", b / "dangling.jpg")
    os.mkfifo(b / "pipe.jpg")  # a named pipe: opening it for reading would block forever
    c.bad.update({"bravo/zero.jpg": "zero bytes", "bravo/truncated.jpg": "truncated", "bravo/bad crc.png": "corrupt",
                  "bravo/text.jpg": "not an image", "bravo/dangling.jpg": "unreadable",
                  "bravo/pipe.jpg": "unreadable", "bravo/truncated.png": "truncated",
                  "bravo/huge header.png": "too large"})
    c.decode_only += ["bravo/bad crc.png", "bravo/huge header.png"]
    locked = b / "locked.jpg"
    locked.write_bytes(good)
    locked.chmod(0)
    if IS_ROOT:  # root reads it anyway: it is a valid image then
        c.normal.append("bravo/locked.jpg")
    else:
        c.bad["bravo/locked.jpg"] = "unreadable"
    (b / "folder.jpg").mkdir()  # a folder with an image's name: not a file, and not an error
    c.others.append("bravo/folder.jpg")
    os.symlink(b, b / "loop")
    c.loop = "bravo/loop"
    return c
