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
- EXIF orientation (phones, some PACS exports store a film sideways with a tag that
  says how to turn it): applied, so the film is read upright.
- Animated GIF/PNG: the first frame. CMYK: converted to gray.
- A path, a PIL image, an array and the bytes of the same picture give identical
  pixels (no decoder shortcut is taken for one kind of input and not another).
- Refused with ``ValueError`` naming the image: missing or unreadable files, truncated
  or corrupt data, zero-size images, images under 8 px a side, images over 64
  megapixels (decompression bombs; checked before decoding), files over 512 MB
  (checked before reading), arrays with NaN or infinite values.
- Refused with ``TypeError``: anything that is not a path, PIL image, numpy array or
  bytes (an int, a list...).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

ImageSource = Any  # str | Path | PIL.Image.Image | numpy.ndarray | bytes

_DICOM_SUFFIXES = (".dcm", ".dicom")
# Chest films are at most ~4,300 px a side (18 MP); anything far beyond is refused
# before it is decoded, so a decompression bomb cannot exhaust memory.
MAX_PIXELS = 64_000_000
# A 64-megapixel 16-bit film is 128 MB uncompressed; a file four times that is not one
# radiograph, and is refused before it is read into memory.
MAX_FILE_BYTES = 512 * 1024 * 1024
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
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)) or np.issubdtype(
        array.dtype, np.timedelta64
    ):
        raise ValueError(f"image {what}: unsupported pixel type {array.dtype}; expected uint8, uint16 or float")
    # float64: the window of a float32 image near its limits (hi - lo ~ 6e38) would
    # overflow to infinity in float32 and turn every pixel into NaN.
    values = array.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"image {what}: contains NaN or infinite pixel values")
    if np.issubdtype(array.dtype, np.floating) and values.min() >= 0.0 and values.max() <= 1.0:
        return values.astype(np.float32)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)


def _array_to_gray(array: np.ndarray, what: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        if array.shape[-1] == 1:
            array = array[..., 0]
        else:
            rgb = _scale_to_unit(array[..., :3], what)
            # ITU-R 601-2 luma, as PIL's convert("L") uses.
            return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(
            f"image {what}: expected an array of shape (H, W) or (H, W, C) with C in 1, 3, 4; got {array.shape}"
        )
    _check_size((array.shape[1], array.shape[0]), what)
    return _scale_to_unit(array, what)


def _check_size(size: tuple[int, int], what: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"image {what}: has zero size {size}")
    if min(width, height) < MIN_SIDE:
        raise ValueError(
            f"image {what}: {width}x{height} px is too small to be a radiograph (at least {MIN_SIDE} px a side)"
        )
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
    except Exception as err:
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


def _oriented(image: Image.Image) -> Image.Image:
    """The image turned upright by its EXIF orientation tag, if it has one that turns it."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:
        return image
    if orientation in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


def _open_file(path: Path, what: str) -> tuple[bytes | None, Image.Image | None]:
    """A file's DICOM bytes, or its PIL image opened lazily (only the header read), so a
    large file that is not an image is refused without being read into memory."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(
                f"image {what}: the file is {size / 2**20:.0f} MB, over the limit of {MAX_FILE_BYTES // 2**20} MB"
            )
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as err:
        raise ValueError(f"image {what}: cannot read the file ({err.strerror or err})") from None
    if path.suffix.lower() in _DICOM_SUFFIXES or _is_dicom_bytes(head):
        return path.read_bytes(), None
    return None, Image.open(path)


def read_gray(source: ImageSource) -> np.ndarray | Image.Image:
    """Decode ``source`` to one gray channel: a PIL "L" image or a float32 array in [0, 1].

    Raises
    ------
    ValueError
        The file is missing, unreadable, corrupt, empty, too large or of an unsupported
        kind; the message names the file.
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
        _check_size(source.size, what)
        return _pil_to_gray(_oriented(source), what)
    if not isinstance(source, (str, Path, bytes, bytearray, memoryview)):
        raise TypeError(f"image must be a path, PIL image, numpy array or bytes; got {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            # Size is checked against our own, lower limit just below; PIL's warning
            # for large images would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if isinstance(source, (str, Path)):
                path = Path(source)
                if not path.is_file():
                    raise ValueError(f"image {what}: no such file")
                dicom, image = _open_file(path, what)
            else:
                data = bytes(source)
                dicom, image = (data, None) if _is_dicom_bytes(data) else (None, Image.open(io.BytesIO(data)))
        if dicom is not None:
            return _read_dicom(dicom, what)
        with image:
            _check_size(image.size, what)
            image.seek(0)  # animated GIF/PNG/TIFF: the first frame
            image.load()
            return _pil_to_gray(_oriented(image), what)
    except ValueError as err:
        if str(err).startswith("image "):
            raise
        raise ValueError(f"image {what}: not a readable image ({err})") from None
    except Image.UnidentifiedImageError:
        # PIL's own message shows the in-memory buffer's address for bytes: say what is accepted.
        raise ValueError(
            f"image {what}: not a readable image (not a PNG, JPEG, TIFF, BMP, GIF or DICOM file)"
        ) from None
    except Exception as err:
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
    gray = read_gray(source)
    # reducing_gap: shrink by an integer box filter first, then resample; much faster for
    # large films and, per Pillow, indistinguishable from the exact result at 3.0.
    if isinstance(gray, np.ndarray):
        gray = Image.fromarray(gray.astype(np.float32))  # mode "F"
        resized = np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP))
        return np.clip(np.round(resized * 255.0), 0, 255).astype(np.uint8)
    return np.array(gray.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP), dtype=np.uint8)
