"""All image decoding lives here: OpenCV in, RGB uint8 (H, W, 3) out.

EXIF orientation is applied; grayscale, alpha (composited on white), 16-bit and CMYK images are
converted. Problems raise :class:`DecodeError` with a short reason word, so that a scan can list
every unusable file with why, and go on.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
from pathlib import Path

import cv2
import numpy as np

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

cv2.setNumThreads(1)  # decoding runs beside torch's threads; one each is fastest on small CPUs


def is_image_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def sniff_format(head: bytes) -> str | None:
    """The format from the first bytes, or None when they are no image we read."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


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
    """Cheap structural check without decoding pixels. Returns the format, raises DecodeError."""
    path = Path(path)
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
                raise DecodeError(path, NOT_AN_IMAGE, "the first bytes are no JPEG/PNG/BMP/TIFF/WebP signature")
            fh.seek(max(0, size - 64))
            tail = fh.read()
    except OSError as exc:
        raise DecodeError(path, UNREADABLE, exc.strerror or str(exc)) from exc
    _check_complete(path, fmt, tail)
    return fmt


def _check_complete(path: Path, fmt: str, tail: bytes) -> None:
    if fmt == "jpeg" and b"\xff\xd9" not in tail:
        raise DecodeError(path, TRUNCATED, "the JPEG end-of-image marker is missing")
    if fmt == "png" and b"IEND" not in tail:
        raise DecodeError(path, TRUNCATED, "the PNG IEND chunk is missing")


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF marker, or None."""
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


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


def _to_rgb(img: np.ndarray) -> np.ndarray:
    """OpenCV BGR/BGRA/gray of any depth → RGB uint8, alpha composited on white."""
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels == 4:
        alpha = img[:, :, 3:4].astype(np.float32)
        amax = 65535.0 if img.dtype == np.uint16 else (1.0 if np.issubdtype(img.dtype, np.floating) else 255.0)
        a = alpha / amax
        color = _to_uint8(img[:, :, :3]).astype(np.float32)
        img = (color * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)
    elif channels == 2:  # gray + alpha
        return _to_rgb(np.concatenate([img[:, :, :1]] * 3 + [img[:, :, 1:2]], axis=2))
    else:
        img = _to_uint8(img)
    if img.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_bytes(data: bytes, path: str | os.PathLike = "<bytes>", max_side: int = MAX_SIDE) -> np.ndarray:
    """Decode encoded image bytes to RGB uint8 (H, W, 3). Raises DecodeError."""
    path = Path(path)
    if len(data) == 0:
        raise DecodeError(path, ZERO_BYTES)
    fmt = sniff_format(data[:32])
    if fmt is None:
        raise DecodeError(path, NOT_AN_IMAGE, "the first bytes are no JPEG/PNG/BMP/TIFF/WebP signature")
    _check_complete(path, fmt, data[-64:])
    buf = np.frombuffer(data, np.uint8)
    img = None
    if fmt == "jpeg":
        # IMREAD_COLOR applies EXIF orientation and converts gray/CMYK; reduce huge photos while decoding.
        flag = cv2.IMREAD_COLOR
        size = jpeg_size(data)
        if size is not None and max(size) > max_side:
            factor = max(size) / max_side
            flag = cv2.IMREAD_REDUCED_COLOR_8 if factor > 4 else (
                cv2.IMREAD_REDUCED_COLOR_4 if factor > 2 else cv2.IMREAD_REDUCED_COLOR_2)
        img = cv2.imdecode(buf, flag)
        if img is not None:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if raw is not None:
            img = _to_rgb(raw)
            if fmt in ("tiff", "webp"):
                # these may carry EXIF orientation: let OpenCV apply it when it can
                oriented = cv2.imdecode(buf, cv2.IMREAD_COLOR)
                if oriented is not None and oriented.shape[:2] != img.shape[:2]:
                    img = cv2.cvtColor(oriented, cv2.COLOR_BGR2RGB)
    if img is None or img.size == 0:
        raise DecodeError(path, CORRUPT, f"OpenCV could not decode this {fmt.upper()} file")
    h, w = img.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        log.debug("%s: %dx%d reduced to %dx%d", path, w, h, img.shape[1], img.shape[0])
    return np.ascontiguousarray(img)


def read_image(path: str | os.PathLike, max_side: int = MAX_SIDE) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3). Raises DecodeError with a reason."""
    path = Path(path)
    return decode_bytes(_read_bytes(path), path, max_side=max_side)


def write_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 92) -> None:
    """Write an RGB uint8 image atomically (temporary file, fsync, rename)."""
    from engine.fileio import atomic_write_bytes

    path = Path(path)
    ext = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, enc = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise DecodeError(path, CORRUPT, f"OpenCV could not encode {ext}")
    atomic_write_bytes(path, enc.tobytes())
