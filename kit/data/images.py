"""Robust image decoding: any file PIL can read becomes a square uint8 RGB array, or a clear error.

This module imports only numpy and PIL, so decoding worker processes start fast.
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"})
EXIF_ORIENTATION = 0x0112  # the EXIF tag (or XMP tiff:Orientation, which getexif reads too) saying how to turn a photo


class ImageDecodeError(ValueError):
    """A file that cannot be decoded as an image (corrupt, truncated, empty, not an image)."""


def is_image_name(path: str | Path) -> bool:
    """Whether a file name has an image extension (hidden files such as macOS' `._x.jpg` are not images)."""
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb(img: Image.Image) -> Image.Image:
    """Converts any PIL mode to 8-bit RGB.

    16-bit and 32-bit grey images ('I;16', 'I', 'F') are rescaled by their own range: PIL's
    convert('RGB') would clip them to white.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        grey = ((arr - lo) * scale).astype(np.uint8)
        return Image.fromarray(np.stack([grey] * 3, axis=-1))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels become white rather than whatever colour hides under alpha 0.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, P, CMYK, YCbCr, 1, ...


def load_image(path: str | Path, sz: int) -> np.ndarray:
    """Decodes `path` to a (sz, sz, 3) uint8 array: shorter side resized to `sz`, centre crop.

    Args:
        path: str or Path. Any image PIL can read, whatever its extension says.
        sz: int. Side of the square output, in pixels.

    Raises:
        ImageDecodeError: the file is empty, truncated, corrupt or not an image.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # A truncated file is an error here, not a warning PIL prints and moves past.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale straight from the DCT: the
                # biggest single speed-up for large photos, and never below the size we need.
                if img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
                    img.draft(img.mode, (sz, sz))
                img.load()
                # exif_transpose copies even a photo it leaves as it is: asked only when one must turn.
                if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
                    img = ImageOps.exif_transpose(img)
                img = _to_rgb(img)
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as e:
        raise ImageDecodeError(f"Cannot decode image {path}: {_reason(path, e)}") from e
    return resize_center_crop(img, sz)


def _reason(path: Path, e: BaseException) -> str:
    if path.is_symlink() and not path.exists():
        if isinstance(e, OSError) and e.errno == errno.ELOOP:
            return "symbolic link loop"
        return f"dangling symbolic link (to {os.readlink(path)})"
    if path.exists() and path.stat().st_size == 0:
        return "empty file"
    return f"{type(e).__name__}: {e}"


def resize_center_crop(img: Image.Image, sz: int) -> np.ndarray:
    """Scales the shorter side to `sz` (up or down) and crops the centre square."""
    w, h = img.size
    side = min(w, h)
    # Resizing only the centre square (PIL's `box`, which still filters across its edges) gives the
    # same pixels as resize-then-crop and skips the columns the crop would throw away: a quarter of
    # the resize work on a 4:3 photo, and resizing is two thirds of decoding one.
    left, top = (w - side) / 2, (h - side) / 2
    box = (left, top, left + side, top + side)
    if side == sz and left == int(left) and top == int(top):
        img = img.crop(tuple(int(v) for v in box))
    else:
        # reducing_gap makes large downscales both faster and alias-free.
        img = img.resize((sz, sz), Image.BILINEAR, box=box, reducing_gap=2.0 if sz / side < 0.5 else None)
    return np.asarray(img, dtype=np.uint8)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Writes all of `data` at `offset` (os.pwrite may write less); a full disk raises OSError."""
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def decode_into(paths: list[str], sz: int, out_path: str, start: int, header_len: int) -> list[tuple[int, str]]:
    """Decodes `paths` into rows start.. of the preallocated .npy file at `out_path`; returns the failures.

    Runs in worker processes: each writes its rows straight into the file, so no pixels cross a
    pipe, and with ordinary writes (not a memory map), so a full disk is an OSError, never a SIGBUS.
    Rows of files that fail to decode are zeros.
    """
    block = np.zeros((len(paths), sz, sz, 3), dtype=np.uint8)
    failures = []
    for i, p in enumerate(paths):
        try:
            block[i] = load_image(p, sz)
        except ImageDecodeError as e:
            failures.append((start + i, str(e)))
    fd = os.open(out_path, os.O_WRONLY)
    try:
        pwrite_all(fd, block, header_len + start * sz * sz * 3)
    finally:
        os.close(fd)
    return failures


def decode_files(paths: list[str | Path], sz: int, workers: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decodes `paths` as `load_image` does, in `workers` threads, into memory (no cache on disk).

    For a modest number of files at a time (`learn.predict_files` feeds it chunks). PIL releases the
    GIL while it decodes and resizes, so the threads decode in parallel.

    Returns:
        (images, ok, errors): (N, sz, sz, 3) uint8 with zeros where a file failed, a bool mask of the
        files that decoded, and one message per failure naming the file and why.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(p: str | Path) -> np.ndarray | str:
        try:
            return load_image(p, sz)
        except ImageDecodeError as e:
            return str(e)

    if workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(min(workers, len(paths))) as pool:
            results = list(pool.map(one, paths))
    else:
        results = [one(p) for p in paths]
    images = np.zeros((len(paths), sz, sz, 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    errors = []
    for i, r in enumerate(results):
        if isinstance(r, str):
            errors.append(r)
        else:
            images[i], ok[i] = r, True
    return images, ok, errors
