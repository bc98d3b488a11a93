"""What decoded pixels become: the size limits, deep images windowed to [0, 1], and
every pixel layout as one gray channel or as three colour channels.

Shared by :mod:`fusion.data.images` (files, bytes, PIL images, arrays) and
:mod:`fusion.data.dicom`: both hand over a PIL "L" image (8-bit) or "F" image (deeper,
values in [0, 1]), and for colour a PIL "RGB" image or :class:`Planes` (a deep colour
image, one "F" image per channel, made one at a time), so the resize that follows is
one code path.

Deep images (16-bit, 32-bit, float) are windowed band by band: each band of about
``_BAND_PIXELS`` values is computed in float64 (a float32 image near its limits would
overflow a float32 window) and pasted into one float32 image, the only full-size float
buffer, so a 64-megapixel 16-bit film costs its native decode plus 4 bytes a pixel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fusion.errors import ImageError

# Chest films are at most ~4,300 px a side (18 MP); anything far beyond is refused
# before it is decoded, so a decompression bomb cannot exhaust memory.
MAX_PIXELS = 64_000_000
# A 64-megapixel 16-bit film is 128 MB uncompressed; a file four times that is not one
# radiograph, and is refused before it is read into memory. All the frames a DICOM
# header declares, decoded, are held to the same limit.
MAX_FILE_BYTES = 512 * 1024 * 1024
# One decoded image or DICOM frame: a 64-megapixel film in float32, what it becomes to
# be resized, is this size.
MAX_DECODED_BYTES = 256 * 1024 * 1024
MIN_SIDE = 8
# Deep images are windowed in bands of rows of about this many pixels, so the float64
# arithmetic needs a few MB however large the film.
_BAND_PIXELS = 1 << 18
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as PIL's convert("L") uses


def cut_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_size(size: tuple[int, int], what: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"image {what}: has zero size {size}")
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            f"image {what}: {width}x{height} px is too small to be a radiograph (at least {MIN_SIDE} px a side)"
        )
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"image {what}: {width}x{height} px exceeds the limit of {MAX_PIXELS // 1_000_000} megapixels "
            "(a decompression bomb, or not a radiograph)"
        )


def bomb_error(what: str) -> ImageError:
    """Pillow refused the image as a bomb from its header: say it as the library does."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    over = f"over {2 * pillow_limit // 1_000_000} megapixels, which " if pillow_limit else ""
    return ImageError(
        f"image {what}: {over}exceeds the limit of {MAX_PIXELS // 1_000_000} megapixels "
        "(a decompression bomb, or not a radiograph)"
    )


def _bands(height: int, row_values: int) -> list[tuple[int, int]]:
    """Row ranges of about _BAND_PIXELS values each (``row_values``: width x channels)."""
    step = max(1, _BAND_PIXELS // max(row_values, 1))
    return [(top, min(top + step, height)) for top in range(0, height, step)]


def float_image(
    size: tuple[int, int], unit_band: Callable[[int, int], np.ndarray], channels: int = 1, invert: bool = False
) -> Image.Image:
    """A mode "F" image filled band by band with ``unit_band(top, bottom)`` (values in
    [0, 1]): the one full-size float buffer is Pillow's, which the resize reads."""
    image = Image.new("F", size)
    for top, bottom in _bands(size[1], size[0] * channels):
        band = np.ascontiguousarray(unit_band(top, bottom), dtype=np.float32)
        if invert:
            band = 1.0 - band  # MONOCHROME1 stores bright as low values
        image.paste(Image.fromarray(band), (0, top))
    return image


def _extrema(
    size: tuple[int, int], band_of: Callable[[int, int], np.ndarray], channels: int, what: str
) -> tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for top, bottom in _bands(size[1], size[0] * channels):
        band = band_of(top, bottom)
        band_lo, band_hi = band.min(), band.max()  # NaN propagates to both
        if not (np.isfinite(band_lo) and np.isfinite(band_hi)):
            raise ImageError(f"image {what}: contains NaN or infinite pixel values")
        lo, hi = min(lo, float(band_lo)), max(hi, float(band_hi))
    return lo, hi


@dataclass(frozen=True)
class Planes:
    """A deep colour image windowed to [0, 1], its channels made one at a time: each is
    a full-size float32 "F" image, so holding one at a time keeps a deep colour image to
    the grey path's cost (its native decode plus 4 bytes a pixel)."""

    size: tuple[int, int]
    unit_band: Callable[[int, int], np.ndarray]  # (top, bottom) -> (rows, width, 3) in [0, 1]

    def __iter__(self) -> Iterator[Image.Image]:
        for c in range(3):
            yield float_image(self.size, lambda top, bottom, c=c: self.unit_band(top, bottom)[..., c], 3)


def windowed(
    size: tuple[int, int],
    band_of: Callable[[int, int], np.ndarray],
    dtype: np.dtype,
    what: str,
    luma: bool = False,
    invert: bool = False,
    colour: bool = False,
) -> Image.Image | Planes:
    """``band_of(top, bottom)``'s values mapped to [0, 1] as a float image: uint8 divided
    by 255, bool and floats already in [0, 1] kept, anything else windowed to the image's
    own min..max (12- or 16-bit detectors rarely use their whole range). ``luma``: bands
    of (rows, width, 3) channels become gray; ``colour``: they stay three channels, one
    window for all three (so the hues are kept), as :class:`Planes`."""
    channels = 3 if luma or colour else 1
    lo, hi = _extrema(size, band_of, channels, what)
    if dtype == np.uint8:
        offset, span = 0.0, 255.0
    elif dtype == np.bool_ or (np.issubdtype(dtype, np.floating) and lo >= 0.0 and hi <= 1.0):
        offset, span = 0.0, 1.0
    else:
        offset, span = lo, hi - lo

    def unit(top: int, bottom: int) -> np.ndarray:
        # float64 per band: the window of a float32 image near its limits (hi - lo ~ 6e38)
        # would overflow to infinity in float32 and turn every pixel into NaN.
        values = band_of(top, bottom).astype(np.float64)
        if span > 0:
            values -= offset
            values /= span
        else:
            values[...] = 0.0
        return values @ _LUMA if luma else values

    if colour:
        return Planes(size, unit)
    return float_image(size, unit, channels, invert)


def _check_dtype(dtype: np.dtype, what: str) -> None:
    numeric = np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == np.bool_
    if not numeric or np.issubdtype(dtype, np.timedelta64):
        raise ImageError(f"image {what}: unsupported pixel type {dtype}; expected uint8, uint16 or float")


def array_image(array: np.ndarray, what: str, channels: int = 1) -> Image.Image | Planes:
    """An array as a PIL "L" image (8-bit) or "F" image (anything deeper); with
    ``channels`` 3, a colour array as a PIL "RGB" image or :class:`Planes` (a gray array
    stays gray: the caller replicates it)."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    luma = array.ndim == 3 and array.shape[-1] in (3, 4)
    if array.dtype == np.uint8 and array.size and (array.ndim == 2 or luma):
        # Through PIL, so an array gives exactly the pixels of the same picture as a file.
        return pil_pixels(Image.fromarray(np.ascontiguousarray(array)), what, channels)
    if array.ndim != 2 and not luma:
        raise ImageError(
            f"image {what}: expected an array of shape (H, W) or (H, W, C) with C in 1, 3, 4; got {array.shape}"
        )
    check_size((array.shape[1], array.shape[0]), what)
    _check_dtype(array.dtype, what)
    plane = array[..., :3] if luma else array
    size = (array.shape[1], array.shape[0])
    colour = luma and channels == 3
    return windowed(
        size, lambda top, bottom: plane[top:bottom], array.dtype, what, luma=luma and not colour, colour=colour
    )


def pil_pixels(image: Image.Image, what: str, channels: int = 1) -> Image.Image | Planes:
    """An opened PIL image as one gray channel (:func:`pil_to_gray`) or, with
    ``channels`` 3, as colour (:func:`pil_to_colour`)."""
    return pil_to_colour(image, what) if channels == 3 else pil_to_gray(image, what)


def pil_to_colour(image: Image.Image, what: str) -> Image.Image:
    """An image with colour becomes a PIL "RGB" image (transparency composited on black,
    as for gray); a gray one stays as :func:`pil_to_gray` makes it ("L" or "F"), for the
    caller to replicate into three equal channels once it is resized."""
    check_size(image.size, what)
    mode = image.mode
    if mode in ("L", "1", "I", "F", "LA") or mode.startswith("I;16"):
        return pil_to_gray(image, what)
    if mode in ("RGBA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def pil_to_gray(image: Image.Image, what: str) -> Image.Image:
    """An 8-bit image becomes a PIL "L" image (fast resize); deeper ones an "F" image."""
    check_size(image.size, what)
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):

        def band_of(top: int, bottom: int) -> np.ndarray:
            return np.asarray(image.crop((0, top, image.width, bottom)))

        return windowed(image.size, band_of, band_of(0, 1).dtype, what)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels of screenshots are background: composite on black.
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("L")
    return image.convert("L")
