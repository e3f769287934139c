"""All image decoding lives here: OpenCV in, RGB uint8 (H, W, 3) out.

The EXIF/TIFF orientation is always applied (all eight, mirrored ones included); grayscale, alpha (composited on
white), 16-bit and CMYK images are converted; images larger than :data:`MAX_SIDE` are reduced. :func:`load_image`
also returns an :class:`ImageInfo` (orientation and scale) that maps a data set's boxes and keypoints, given on
the file's stored grid, onto the returned image and back (:mod:`engine.data.orientation`). Problems raise
:class:`DecodeError` with a short reason word, so that a scan can list every unusable file with why, and go on;
OpenCV's own errors become DecodeError too, with the file named.

Truncation is the data ending before the format's end marker (JPEG EOI after the last scan, PNG IEND), found by
walking the file's structure (:mod:`engine.data.imagefile`), never by looking for the marker near the end:
bytes after a complete image are normal (cameras and editors write them).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from engine.data.imagefile import FileFacts, file_facts, jpeg_size, looks_complete, sniff_format
from engine.data.orientation import ImageInfo, orient
from engine.errors import DecodeError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
#: Images larger than this on their long side are decoded reduced (JPEG) or resized down.
MAX_SIDE = 4096

# Reasons, as shown in scan reports.
ZERO_BYTES = "zero bytes"
TRUNCATED = "truncated"
NOT_AN_IMAGE = "not an image"
UNREADABLE = "unreadable"
CORRUPT = "corrupt"
TOO_LARGE = "too large"

cv2.setNumThreads(1)  # decoding runs beside torch's threads; one each is fastest on small CPUs

_NO_SIGNATURE = "the first bytes are no JPEG/PNG/BMP/TIFF/WebP signature"
_ENDS_EARLY = {"jpeg": "the data ends before the JPEG end-of-image marker",
               "png": "the data ends before the PNG IEND chunk"}


class Decoded(NamedTuple):
    """An image as :func:`load_image` returns it: ``rgb`` (H, W, 3) uint8 and its :class:`ImageInfo`."""

    rgb: np.ndarray
    info: ImageInfo


def is_image_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


NOT_A_FILE = "not a regular file (a named pipe, device or socket)"


def _open_regular(path: Path):
    """Open ``path`` for reading, refusing anything but a regular file: a named pipe called x.jpg would block a
    plain ``open`` forever (O_NONBLOCK makes that open return, and the mode check then refuses it)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DecodeError(path, UNREADABLE, NOT_A_FILE)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_bytes(path: Path) -> bytes:
    try:
        with _open_regular(path) as fh:
            return fh.read()
    except OSError as exc:
        raise DecodeError(path, UNREADABLE, exc.strerror or str(exc)) from exc


def check_file(path: str | os.PathLike) -> str:
    """Cheap structural check without decoding pixels. Returns the format, raises DecodeError.

    Reads the signature and the last bytes; only a JPEG or PNG that does not end with its end marker (bytes after
    it, or a cut) is read whole and walked to its end marker (:func:`engine.data.imagefile.file_facts`)."""
    path = Path(path)
    data = None
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise DecodeError(path, UNREADABLE, NOT_A_FILE)
        size = st.st_size
        if size == 0:
            raise DecodeError(path, ZERO_BYTES)
        with _open_regular(path) as fh:
            head = fh.read(32)
            fmt = sniff_format(head)
            if fmt is None:
                raise DecodeError(path, NOT_AN_IMAGE, _NO_SIGNATURE)
            fh.seek(max(0, size - 16))
            if not looks_complete(fmt, fh.read()):
                fh.seek(0)
                data = fh.read()
    except OSError as exc:
        raise DecodeError(path, UNREADABLE, exc.strerror or str(exc)) from exc
    if data is not None and file_facts(data, fmt).complete is False:
        raise DecodeError(path, TRUNCATED, _ENDS_EARLY[fmt])
    return fmt


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    info = np.iinfo(img.dtype)
    scaled = (img.astype(np.float64) - info.min) / (info.max - info.min)
    return (scaled * 255 + 0.5).astype(np.uint8)


def _to_rgb(img: np.ndarray, premultiplied: bool = False) -> np.ndarray:
    """OpenCV BGR/BGRA/gray of any depth → RGB uint8, alpha composited on white (``premultiplied``: the colour
    is already multiplied by alpha)."""
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels == 4:
        alpha = img[:, :, 3:4].astype(np.float32)
        amax = 65535.0 if img.dtype == np.uint16 else (1.0 if np.issubdtype(img.dtype, np.floating) else 255.0)
        a = alpha / amax
        color = _to_uint8(img[:, :, :3]).astype(np.float32)
        img = np.clip((color if premultiplied else color * a) + 255.0 * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)
    elif channels == 2:  # gray + alpha
        return _to_rgb(np.concatenate([img[:, :, :1]] * 3 + [img[:, :, 1:2]], axis=2), premultiplied)
    else:
        img = _to_uint8(img)
    if img.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _reduce_flag(size: tuple[int, int] | None, max_side: int) -> int:
    """IMREAD_REDUCED_COLOR_2/4/8 when a JPEG of ``size`` is larger than ``max_side``: libjpeg then decodes at
    1/2, 1/4 or 1/8 scale, far faster and smaller than decoding all and resizing."""
    if size is None or max(size) <= max_side:
        return cv2.IMREAD_COLOR
    factor = max(size) / max_side
    return cv2.IMREAD_REDUCED_COLOR_8 if factor > 4 else (
        cv2.IMREAD_REDUCED_COLOR_4 if factor > 2 else cv2.IMREAD_REDUCED_COLOR_2)


def _pixels(buf: np.ndarray, facts: FileFacts, max_side: int) -> tuple[np.ndarray | None, tuple[int, int]]:
    """(oriented RGB or None, the stored (width, height))."""
    reduced = False
    if facts.format == "jpeg":  # IMREAD_COLOR converts gray and CMYK; the orientation is applied below
        size = facts.size if facts.size and min(facts.size) > 0 else None
        flag = _reduce_flag(size, max_side)
        reduced = flag != cv2.IMREAD_COLOR
        raw = cv2.imdecode(buf, flag | cv2.IMREAD_IGNORE_ORIENTATION)
        if raw is None:
            return None, (0, 0)
        rgb = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
    else:
        raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        if raw is None or raw.size == 0:
            return None, (0, 0)
        rgb = _to_rgb(raw, facts.premultiplied)
    h, w = rgb.shape[:2]
    if facts.format == "tiff":
        # OpenCV's TIFF reader applies the orientation tag itself, whatever the flags (measured with 5.0 on
        # 8/16-bit, gray, RGB(A), LZW, JPEG-compressed and tiled files; tests/engine/test_imageio.py pins it)
        transposed = facts.orientation >= 5
        return rgb, ((h, w) if transposed else (w, h))
    return orient(rgb, facts.orientation), (facts.size if reduced else (w, h))


def _cv_message(exc: cv2.error) -> str:
    """The gist of an OpenCV error: its last line without the source location."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1].split("error: ", 1)[-1].strip() if lines else type(exc).__name__


def _opencv_refused(path: Path, facts: FileFacts, exc: cv2.error) -> DecodeError:
    msg = _cv_message(exc)
    if "MAX_IMAGE_PIXELS" in msg:
        claim = f"{facts.size[0]} x {facts.size[1]} pixels" if facts.size else "more pixels"
        return DecodeError(path, TOO_LARGE, f"its header says {claim}, more than OpenCV decodes: set "
                                            "OPENCV_IO_MAX_IMAGE_PIXELS higher if the image is real, else the "
                                            "header is damaged")
    return DecodeError(path, CORRUPT, f"OpenCV refused this {facts.format.upper()} file: {msg}")


def decode(data: bytes, path: str | os.PathLike = "<bytes>", max_side: int | None = None) -> Decoded:
    """Decode encoded image bytes to :class:`Decoded` (RGB uint8 upright, reduced to ``max_side``, default
    :data:`MAX_SIDE`, and its :class:`ImageInfo`). Raises DecodeError."""
    path = Path(path)
    max_side = MAX_SIDE if max_side is None else int(max_side)
    if len(data) == 0:
        raise DecodeError(path, ZERO_BYTES)
    fmt = sniff_format(data[:32])
    if fmt is None:
        raise DecodeError(path, NOT_AN_IMAGE, _NO_SIGNATURE)
    facts = file_facts(data, fmt, walk=not looks_complete(fmt, data[-16:]))
    try:
        img, stored = _pixels(np.frombuffer(data, np.uint8), facts, max_side)
        if img is not None and facts.complete is False and fmt == "jpeg":
            img = None  # libjpeg fills a premature end with grey and only warns: the walk found it
        if img is None:
            if facts.complete is False:
                raise DecodeError(path, TRUNCATED, _ENDS_EARLY[fmt])
            raise DecodeError(path, CORRUPT, f"OpenCV could not decode this {fmt.upper()} file")
        orient_wh = (img.shape[1], img.shape[0])
        if max(orient_wh) > max_side:
            scale = max_side / max(orient_wh)
            img = cv2.resize(img, (max(1, round(orient_wh[0] * scale)), max(1, round(orient_wh[1] * scale))),
                             interpolation=cv2.INTER_AREA)
            log.debug("%s: %dx%d reduced to %dx%d", path, *orient_wh, img.shape[1], img.shape[0])
    except cv2.error as exc:
        raise _opencv_refused(path, facts, exc) from exc
    img = np.ascontiguousarray(img)
    return Decoded(img, ImageInfo((int(stored[0]), int(stored[1])), facts.orientation, (img.shape[1], img.shape[0])))


def decode_bytes(data: bytes, path: str | os.PathLike = "<bytes>", max_side: int | None = None) -> np.ndarray:
    """Decode encoded image bytes to RGB uint8 (H, W, 3). Raises DecodeError."""
    return decode(data, path, max_side).rgb


def load_image(path: str | os.PathLike, max_side: int | None = None) -> Decoded:
    """Read an image file as :class:`Decoded` (RGB and its :class:`ImageInfo`). Raises DecodeError."""
    path = Path(path)
    return decode(_read_bytes(path), path, max_side=max_side)


def read_image(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3). Raises DecodeError with a reason."""
    return load_image(path, max_side).rgb


def write_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 92) -> None:
    """Write an RGB uint8 image atomically (temporary file, fsync, rename)."""
    from engine.fileio import atomic_write_bytes

    path = Path(path)
    ext = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    try:
        ok, enc = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), params)
    except cv2.error as exc:
        raise DecodeError(path, CORRUPT, f"OpenCV could not encode {ext}: {_cv_message(exc)}") from exc
    if not ok:
        raise DecodeError(path, CORRUPT, f"OpenCV could not encode {ext}")
    atomic_write_bytes(path, enc.tobytes())


__all__ = ["CORRUPT", "Decoded", "IMAGE_SUFFIXES", "ImageInfo", "MAX_SIDE", "NOT_AN_IMAGE", "TOO_LARGE", "TRUNCATED",
           "UNREADABLE", "ZERO_BYTES", "check_file", "decode", "decode_bytes", "is_image_name",
           "jpeg_size", "load_image", "read_image", "sniff_format", "write_image"]
