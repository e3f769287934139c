"""Preprocessing that travels with a model: ImageNet normalisation, sizes, and the train/test transforms.

Images stay uint8 (H, W, 3) RGB until the batch is on the device, where :func:`normalize` turns it into float.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    img_size: int = 224
    resize: int = 256  # shorter side before the crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_scale: tuple[float, float] = (0.35, 1.0)  # train: random resized crop area fraction
    hflip: bool = True
    rotate: float = 0.0  # train: a random rotation in [-rotate, rotate] degrees after the crop (0: none)

    @classmethod
    def for_size(cls, img_size: int, crop_scale=(0.35, 1.0), rotate: float = 0.0) -> "Preprocessing":
        return cls(img_size=img_size, resize=int(round(img_size / 0.875)), crop_scale=tuple(crop_scale),
                   rotate=float(rotate))

    def to_dict(self) -> dict:
        d = asdict(self)
        rotation = f", rotation up to ±{self.rotate:g}°" if self.rotate else ""
        d["description"] = (f"train: random resized crop {self.img_size}px (area {self.crop_scale[0]}-"
                            f"{self.crop_scale[1]}), horizontal flip{rotation}; test: shorter side {self.resize}px, "
                            f"centre crop {self.img_size}px; ImageNet mean/std")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(img_size=int(d["img_size"]), resize=int(d["resize"]), mean=tuple(d["mean"]),
                   std=tuple(d["std"]), crop_scale=tuple(d.get("crop_scale", (0.35, 1.0))),
                   hflip=bool(d.get("hflip", True)), rotate=float(d.get("rotate", 0.0)))


def resize_shorter(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    scale = side / min(h, w)
    if abs(scale - 1.0) < 1e-6:
        return img
    size = (max(side, round(w * scale)), max(side, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    if h < size or w < size:
        img = resize_shorter(img, size)
        h, w = img.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return img[y:y + size, x:x + size]


def test_transform(img: np.ndarray, pp: Preprocessing, cached: bool = False) -> np.ndarray:
    """Shorter side to ``resize``, centre crop ``img_size`` (``cached``: already resized)."""
    return np.ascontiguousarray(center_crop(img if cached else resize_shorter(img, pp.resize), pp.img_size))


def train_transform(img: np.ndarray, pp: Preprocessing, rng: np.random.Generator) -> np.ndarray:
    """Random resized crop (area fraction ``crop_scale``, aspect 3/4..4/3), horizontal flip, then (when
    ``rotate`` > 0) a rotation about the centre by an angle drawn uniformly in [−rotate, rotate] degrees, the
    corners it uncovers filled with the ImageNet mean colour (0 after normalisation)."""
    h, w = img.shape[:2]
    area = h * w
    lo, hi = pp.crop_scale
    for _ in range(10):
        target = area * rng.uniform(lo, hi)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            break
    else:
        cw = ch = min(h, w)
        x, y = (w - cw) // 2, (h - ch) // 2
    crop = img[y:y + ch, x:x + cw]
    out = cv2.resize(crop, (pp.img_size, pp.img_size),
                     interpolation=cv2.INTER_AREA if cw > pp.img_size else cv2.INTER_LINEAR)
    if pp.hflip and rng.random() < 0.5:
        out = out[:, ::-1]
    if pp.rotate:
        angle = float(rng.uniform(-pp.rotate, pp.rotate))
        size = pp.img_size
        m = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle, 1.0)
        fill = tuple(int(round(255 * v)) for v in pp.mean)
        out = cv2.warpAffine(np.ascontiguousarray(out), m, (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return np.ascontiguousarray(out)


def normalize(batch: torch.Tensor, pp: Preprocessing, dtype: torch.dtype | None = None) -> torch.Tensor:
    """uint8 (B, H, W, 3) → normalised float (B, 3, H, W), on the batch's device; ``dtype`` defaults to torch's
    default dtype (float32 unless changed: models are built in it too)."""
    dtype = dtype or torch.get_default_dtype()
    x = batch.permute(0, 3, 1, 2).to(dtype).div_(255.0)
    mean = torch.tensor(pp.mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pp.std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)

