"""The demo's images, from the data files scikit-learn ships.

    image       the digits (1,797 8x8 scans, randomly rotated and shifted) and random crops of the
                two sample photos (china.jpg, flower.jpg)                      CC BY 4.0 / CC BY 2.0
    image-text  the 1,797 digits with captions such as "a handwritten digit 7"  CC BY 4.0
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from ..errors import MmlmError
from ..progress import Progress
from .common import SEED, png, write_jsonl

N_PHOTO_CROPS = 1200
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_CAPTIONS = [
    "a handwritten digit {d}",
    "the digit {d}, written by hand",
    "a small scan of the number {w}",
    "handwritten {w}",
    "an 8 by 8 pixel image of a {d}",
    "the number {w} in white on black",
]


def _sklearn_file(*parts: str) -> Path:
    """A data file shipped inside scikit-learn, found without importing it (that takes seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise MmlmError("the demo corpus needs scikit-learn's bundled images: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0], "datasets", *parts)
    if not path.is_file():
        raise MmlmError(f"{path}: missing from this scikit-learn install")
    return path


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (what `load_digits()` returns): 1,797 images 8x8 as uint8 0..255, labels."""
    import gzip

    with gzip.open(_sklearn_file("data", "digits.csv.gz")) as f:
        rows = np.loadtxt(f, delimiter=",")
    images = rows[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)
    return images.round().astype(np.uint8), rows[:, -1].astype(int)


def _demo_digit(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """One demo digit: 8x8 scan -> 32x32 RGB, randomly rotated and shifted."""
    from PIL import Image

    big = Image.fromarray(img).resize((32, 32), Image.Resampling.BICUBIC)
    big = big.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BILINEAR,
                     translate=(rng.randint(-3, 3), rng.randint(-3, 3)))
    return np.asarray(big.convert("RGB"))


def demo_digits() -> list[np.ndarray]:
    """The demo image dataset's digits, as the PNGs `build_image` writes hold them (uint8 32x32x3)."""
    rng = random.Random(SEED)
    return [_demo_digit(img, rng) for img in digits()[0]]


def build_image(out: Path, on_progress: Progress) -> None:
    from PIL import Image

    rng = random.Random(SEED)
    images, _ = digits()
    for i, img in enumerate(images):
        (out / f"digit_{i:04d}.png").write_bytes(png(_demo_digit(img, rng)))
        if i % 200 == 0:
            on_progress("raw image", i, len(images) + N_PHOTO_CROPS, 0)
    photos = []  # what load_sample_images() returns: china.jpg, flower.jpg, 427 x 640 x 3
    for name in ("china.jpg", "flower.jpg"):
        with Image.open(_sklearn_file("images", name)) as im:
            photos.append(np.asarray(im.convert("RGB")))
    for i in range(N_PHOTO_CROPS):
        photo = photos[i % len(photos)]
        side = rng.randint(48, 256)
        y, x = rng.randint(0, photo.shape[0] - side), rng.randint(0, photo.shape[1] - side)
        crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((64, 64), Image.Resampling.BICUBIC)
        (out / f"photo_{i:04d}.png").write_bytes(png(np.asarray(crop)))
    on_progress("raw image", len(images) + N_PHOTO_CROPS, len(images) + N_PHOTO_CROPS, 0)


def build_image_text(out: Path, on_progress: Progress) -> None:
    from PIL import Image

    rng = random.Random(SEED + 1)
    images, labels = digits()
    (out / "images").mkdir()
    rows = []
    for i, (img, label) in enumerate(zip(images, labels)):
        big = Image.fromarray(img).resize((32, 32), Image.Resampling.BICUBIC).convert("RGB")
        (out / "images" / f"digit_{i:04d}.png").write_bytes(png(np.asarray(big)))
        caption = rng.choice(_CAPTIONS).format(d=label, w=_NUMBER_WORDS[label])
        rows.append({"image": f"images/digit_{i:04d}.png", "text": caption})
    write_jsonl(out / "manifest.jsonl", rows)
    on_progress("raw image-text", len(images), len(images), 0)
