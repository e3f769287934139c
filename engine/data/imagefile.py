"""What an image file's container says, without decoding a pixel: its format, stored size, EXIF/TIFF orientation,
alpha kind, and whether its data reaches the format's end marker.

:mod:`engine.data.imageio` decodes; this module reads the structure around the pixels: JPEG markers (Exif APP1,
SOF, the scans up to EOI), PNG chunks (IHDR, eXIf, up to IEND), WebP's RIFF chunks (EXIF) and the first TIFF
directory (ImageWidth/Length, Orientation, ExtraSamples). Malformed metadata is ignored (orientation 1), as the
decoders do. A file is *complete* when its data reaches the end marker; bytes after it (cameras and editors write
them: maker notes, a second preview image, padding) are no concern of ours.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: JPEG start-of-frame markers, whose segment holds the image size (not DHT C4, JPG C8, DAC CC).
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def sniff_format(head: bytes) -> str | None:
    """The format from the first bytes, or None when they are no image we read."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == PNG_SIGNATURE:
        return "png"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


@dataclass(frozen=True)
class FileFacts:
    """``size`` (width, height) as stored (before orientation), None when the container does not say;
    ``orientation`` 1-8 (EXIF/TIFF tag 274); ``complete``: the data reaches the end marker (JPEG EOI after the
    last scan, PNG IEND; None for formats without one); ``premultiplied``: a TIFF whose alpha is associated
    (ExtraSamples 1), or unassociated 8-bit (2), which OpenCV returns premultiplied through libtiff's RGBA reader."""

    format: str
    size: tuple[int, int] | None = None
    orientation: int = 1
    complete: bool | None = None
    premultiplied: bool = False


def file_facts(data: bytes, fmt: str | None = None, walk: bool = True) -> FileFacts:
    """The :class:`FileFacts` of encoded bytes (``fmt`` from :func:`sniff_format` when not given). ``walk=False``
    stops a JPEG's walk at its first scan (``complete`` None): enough for its size and orientation."""
    fmt = fmt or sniff_format(data[:32]) or "unknown"
    if fmt == "jpeg":
        return _jpeg(data, walk)
    if fmt == "png":
        return _png(data)
    if fmt == "webp":
        return FileFacts(fmt, None, _webp_orientation(data))
    if fmt == "tiff":
        size, orientation, extra, bits = _tiff_ifd0(data)
        return FileFacts(fmt, size, orientation, None, extra == 1 or (extra == 2 and bits == 8))
    return FileFacts(fmt)


def looks_complete(fmt: str, tail: bytes) -> bool:
    """True when ``tail`` (the file's last bytes) is the format's end marker itself: then the file needs no walk.
    (A stream cut inside its data cannot end so: in JPEG entropy data 0xFF is followed by 0x00 or a restart
    marker.) False says nothing: walk the whole file with :func:`file_facts` to know."""
    if fmt == "jpeg":
        return tail.endswith(b"\xff\xd9")
    if fmt == "png":
        return tail.endswith(PNG_IEND)
    return True


# ------------------------------------------------------------------------------------------------------ JPEG
def _jpeg(data: bytes, walk: bool = True) -> FileFacts:
    """Walk the markers from SOI: Exif APP1 and SOF before the first scan, then every scan's entropy-coded data
    (0xFF is followed by 0x00 or a restart marker inside it) up to EOI."""
    n, i = len(data), 2
    size, orientation = None, 1
    while True:
        j = data.find(b"\xff", i)
        if j < 0:
            return FileFacts("jpeg", size, orientation, False)
        i = j
        while i < n and data[i] == 0xFF:  # fill bytes before a marker
            i += 1
        if i >= n:
            return FileFacts("jpeg", size, orientation, False)
        marker = data[i]
        i += 1
        if marker == 0xD9:
            return FileFacts("jpeg", size, orientation, True)
        if marker in (0x00, 0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length
            continue
        if i + 2 > n:
            return FileFacts("jpeg", size, orientation, False)
        (length,) = struct.unpack(">H", data[i:i + 2])
        end = i + length
        if length < 2 or end > n:
            return FileFacts("jpeg", size, orientation, False)
        segment = data[i + 2:end]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00" and orientation == 1:
            orientation = _tiff_ifd0(segment[6:])[1]
        elif marker in _SOF and size is None and len(segment) >= 5:
            h, w = struct.unpack(">HH", segment[1:5])
            size = (w, h)
        i = end
        if marker == 0xDA and not walk:
            return FileFacts("jpeg", size, orientation, None)
        if marker == 0xDA:  # a scan: skip its entropy-coded data up to the next real marker
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return FileFacts("jpeg", size, orientation, False)
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    i = j + 2
                elif nxt == 0xFF:
                    i = j + 1
                else:
                    i = j
                    break


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF marker, or None."""
    return _jpeg(data, walk=False).size


# ------------------------------------------------------------------------------------------------------- PNG
def _png(data: bytes) -> FileFacts:
    n, i = len(data), 8
    size, orientation = None, 1
    while i + 8 <= n:
        length, kind = struct.unpack(">I", data[i:i + 4])[0], data[i + 4:i + 8]
        body = data[i + 8:i + 8 + length]
        if kind == b"IEND":
            return FileFacts("png", size, orientation, True)
        if i + 12 + length > n:
            break
        if kind == b"IHDR" and len(body) >= 8:
            w, h = struct.unpack(">II", body[:8])
            size = (w, h)
        elif kind == b"eXIf":
            orientation = _tiff_ifd0(body[6:] if body[:6] == b"Exif\x00\x00" else body)[1]
        i += 12 + length
    return FileFacts("png", size, orientation, False)


# ------------------------------------------------------------------------------------------------------ WebP
def _webp_orientation(data: bytes) -> int:
    n, i = len(data), 12
    while i + 8 <= n:
        kind, length = data[i:i + 4], struct.unpack("<I", data[i + 4:i + 8])[0]
        if kind == b"EXIF":
            body = data[i + 8:i + 8 + length]
            return _tiff_ifd0(body[6:] if body[:6] == b"Exif\x00\x00" else body)[1]
        i += 8 + length + (length & 1)
    return 1


# ------------------------------------------------------------------------------------------------------ TIFF
def _tiff_ifd0(tiff: bytes) -> tuple[tuple[int, int] | None, int, int, int]:
    """(size, orientation, first ExtraSamples value, first BitsPerSample) from a TIFF header's first directory
    (a TIFF file, or the Exif block of a JPEG/PNG/WebP); defaults where absent or malformed."""
    size, orientation, extra, bits = None, 1, 0, 8
    if len(tiff) < 8 or tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return size, orientation, extra, bits
    e = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(e + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return size, orientation, extra, bits
    (count,) = struct.unpack(e + "H", tiff[ifd:ifd + 2])
    values: dict[int, int] = {}
    for k in range(count):
        at = ifd + 2 + 12 * k
        if at + 12 > len(tiff):
            break
        tag, kind, n = struct.unpack(e + "HHI", tiff[at:at + 8])
        if tag not in (256, 257, 258, 274, 338) or n < 1:
            continue
        field = tiff[at + 8:at + 12]
        if kind == 3:  # SHORT: inline when it fits, else at the offset
            if n > 2:
                (off,) = struct.unpack(e + "I", field)
                field = tiff[off:off + 2]
            if len(field) >= 2:
                values[tag] = struct.unpack(e + "H", field[:2])[0]
        elif kind == 4 and n == 1:  # LONG
            values[tag] = struct.unpack(e + "I", field)[0]
    if 256 in values and 257 in values:
        size = (values[256], values[257])
    orientation = values.get(274, 1)
    return size, orientation if 1 <= orientation <= 8 else 1, values.get(338, 0), values.get(258, 8)


__all__ = ["FileFacts", "file_facts", "jpeg_size", "looks_complete", "sniff_format"]
