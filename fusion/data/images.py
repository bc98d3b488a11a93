"""Reading X-ray images of any common format into one grayscale channel at model size.

Every image the library sees, in training or prediction, passes through
:func:`load_image`, so a file, a PIL image, an array and raw bytes of the same picture
give the same pixels. Images are stored as uint8 at the model's size: 8 bits are what
the networks see after normalisation anyway, and they keep decoded datasets small.

What each kind of input does:

- PNG, JPEG, TIFF, BMP, GIF...: 8-bit gray, RGB (luma), RGBA/LA (composited on black),
  palette images; 16-bit and float images are windowed to their own min..max.
- DICOM (``.dcm`` or any bytes with the DICM marker): scaled by the stored bit depth,
  the VOI LUT / window applied when present, MONOCHROME1 inverted, the first frame of
  a multi-frame file.
- Animated GIF/PNG: the first frame. CMYK: converted to gray.
- Refused with ``ValueError`` naming the image: missing or unreadable files, truncated
  or corrupt data, zero-size images, images under 8 px a side, images over 64
  megapixels (decompression bombs; checked before decoding), arrays with NaN.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ImageSource = Any  # str | Path | PIL.Image.Image | numpy.ndarray | bytes

_DICOM_SUFFIXES = (".dcm", ".dicom")
# Chest films are at most ~4,300 px a side (18 MP); anything far beyond is refused
# before it is decoded, so a decompression bomb cannot exhaust memory.
MAX_PIXELS = 64_000_000
MIN_SIDE = 8
REDUCING_GAP = 3.0


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def _scale_to_unit(array: np.ndarray, what: str) -> np.ndarray:
    """Map pixel values to float32 in [0, 1].

    uint8 is divided by 255. Wider integers (12- or 16-bit detectors rarely use their
    whole range) and floats outside [0, 1] are windowed to the image's own min..max.
    """
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)) or np.issubdtype(array.dtype, np.timedelta64):
        raise ValueError(f"image {what}: unsupported pixel type {array.dtype}; expected uint8, uint16 or float")
    values = array.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"image {what}: contains NaN or infinite pixel values")
    if np.issubdtype(array.dtype, np.floating) and values.min() >= 0.0 and values.max() <= 1.0:
        return values
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def _array_to_gray(array: np.ndarray, what: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        if array.shape[-1] == 1:
            array = array[..., 0]
        else:
            rgb = _scale_to_unit(array[..., :3], what)
            # ITU-R 601-2 luma, as PIL's convert("L") uses.
            return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"image {what}: expected an array of shape (H, W) or (H, W, C) with C in 1, 3, 4; got {array.shape}")
    _check_size((array.shape[1], array.shape[0]), what)
    return _scale_to_unit(array, what)


def _check_size(size: tuple[int, int], what: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"image {what}: has zero size {size}")
    if min(width, height) < MIN_SIDE:
        raise ValueError(f"image {what}: {width}x{height} px is too small to be a radiograph (at least {MIN_SIDE} px a side)")
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"image {what}: {width}x{height} px exceeds the limit of {MAX_PIXELS // 1_000_000} megapixels "
            "(a decompression bomb, or not a radiograph)"
        )


def _pil_to_gray(image: Image.Image, what: str) -> np.ndarray | Image.Image:
    """An 8-bit image stays a PIL "L" image (fast resize); deeper ones become float arrays."""
    _check_size(image.size, what)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _array_to_gray(np.asarray(image), what)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels of screenshots are background: composite on black.
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("L")
    return image.convert("L")


def _read_dicom(data: bytes | str | Path, what: str) -> np.ndarray:
    try:
        return _dicom_to_gray(data, what)
    except (ValueError, ImportError) as err:
        if isinstance(err, ImportError) or str(err).startswith("image "):
            raise
        raise ValueError(f"image {what}: not a readable DICOM file ({err})") from None
    except Exception as err:  # noqa: BLE001 - pydicom raises many kinds on corrupt files
        raise ValueError(f"image {what}: not a readable DICOM file ({type(err).__name__}: {err})") from None


def _dicom_to_gray(data: bytes | str | Path, what: str) -> np.ndarray:
    try:
        import pydicom
        from pydicom.pixels import apply_voi_lut
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading DICOM ({what}) needs pydicom: pip install pydicom") from err
    try:
        ds = pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data)
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many kinds for corrupt files
        raise ValueError(f"image {what}: not a readable DICOM file ({err})") from None
    if pixels.ndim == 3 and getattr(ds, "SamplesPerPixel", 1) == 1:
        pixels = pixels[0]  # a multi-frame file: the first frame
    _check_size((pixels.shape[1], pixels.shape[0]), what)
    if getattr(ds, "SamplesPerPixel", 1) != 1:
        gray = _array_to_gray(pixels, what)
    else:
        values = pixels.astype(np.float32)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            # The VOI LUT is the reading window the modality chose; its output spans
            # the stored bit range, like the raw values.
            values = apply_voi_lut(pixels, ds).astype(np.float32)
        bits = int(getattr(ds, "BitsStored", 0) or 0)
        if bits:
            lo = -(2.0 ** (bits - 1)) if getattr(ds, "PixelRepresentation", 0) == 1 else 0.0
            gray = np.clip((values - lo) / (2.0**bits - 1.0), 0.0, 1.0)
        else:
            gray = _array_to_gray(values, what)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        gray = 1.0 - gray  # MONOCHROME1 stores bright as low values
    return gray.astype(np.float32)


def _is_dicom_bytes(data: bytes) -> bool:
    return len(data) > 132 and data[128:132] == b"DICM"


def read_gray(source: ImageSource, size_hint: int | None = None) -> np.ndarray | Image.Image:
    """Decode ``source`` to one gray channel: a PIL "L" image or a float32 array in [0, 1].

    ``size_hint``, the size the image will be resized to, lets JPEG decoding skip
    detail that the resize would discard.

    Raises
    ------
    ValueError
        The file is missing, unreadable, corrupt, empty or of an unsupported kind; the
        message names the file.
    TypeError
        ``source`` is none of path, PIL image, numpy array or bytes.
    """
    what = _describe(source)
    if isinstance(source, np.ndarray):
        if source.dtype == np.uint8 and source.size:
            # Through PIL, so an array gives exactly the pixels of the same picture as a file.
            array = source[..., 0] if source.ndim == 3 and source.shape[-1] == 1 else source
            if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4)):
                return _pil_to_gray(Image.fromarray(np.ascontiguousarray(array)), what)
        return _array_to_gray(source, what)
    if isinstance(source, Image.Image):
        return _pil_to_gray(source, what)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"image {what}: no such file")
        if path.suffix.lower() in _DICOM_SUFFIXES:
            return _read_dicom(path, what)
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        raise TypeError(
            f"image must be a path, PIL image, numpy array or bytes; got {type(source).__name__}"
        )
    if _is_dicom_bytes(data):
        return _read_dicom(data, what)
    try:
        with warnings.catch_warnings():
            # Size is checked against our own, lower limit just below; PIL's warning
            # for large images would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            _check_size(image.size, what)
            image.seek(0)  # animated GIF/PNG/TIFF: the first frame
            if image.format == "JPEG" and size_hint:
                # Decode at a reduced DCT scale, still >= 4x the model size: about twice
                # as fast for large films, with no visible change after the resize.
                image.draft("L", (4 * size_hint, 4 * size_hint))
            image.load()
            return _pil_to_gray(image, what)
    except ValueError as err:
        if str(err).startswith("image "):
            raise
        raise ValueError(f"image {what}: not a readable image ({err})") from None
    except Exception as err:  # noqa: BLE001 - decoders raise many kinds on corrupt input
        raise ValueError(f"image {what}: not a readable image ({type(err).__name__}: {err})") from None


def load_image(source: ImageSource, size: int) -> np.ndarray:
    """Decode and resize one image to a ``size`` x ``size`` uint8 array.

    The image is resized to the square directly (no crop, so no lung field is cut
    off), with an antialiasing filter.

    Parameters
    ----------
    source : str, Path, PIL.Image.Image, numpy.ndarray or bytes
        PNG, JPEG or DICOM; 8 or 16 bit; grayscale, RGB or RGBA; any size.
    size : int
        Output side in pixels.

    Returns
    -------
    numpy.ndarray
        uint8, shape (size, size).
    """
    gray = read_gray(source, size_hint=size)
    # reducing_gap: shrink by an integer box filter first, then resample; 4x faster for
    # large films and, per Pillow, indistinguishable from the exact result at 3.0.
    if isinstance(gray, np.ndarray):
        gray = Image.fromarray(gray.astype(np.float32))  # mode "F"
        resized = np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP))
        return np.clip(np.round(resized * 255.0), 0, 255).astype(np.uint8)
    return np.array(gray.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP), dtype=np.uint8)
