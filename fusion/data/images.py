"""Reading images of any accepted format into one grayscale channel, or three colour
channels, at model size.

Every image the library sees, in training or prediction, passes through
:func:`load_image`, so a file, a PIL image, an array and raw bytes of the same picture
give the same pixels. Images are stored as uint8 at the model's size: 8 bits are what
the networks see after normalisation anyway, and they keep decoded datasets small.
Films are read as one gray channel (``channels=1``, the default); colour images
(dermatoscopy, fundus, pathology: ``channels=3``) as RGB, shape (size, size, 3).

What each kind of input does:

- The formats read are :data:`ACCEPTED_FORMATS` (PNG, JPEG, TIFF, BMP, GIF, DICOM) and no
  other: a file of another format (EPS, which Pillow would hand to Ghostscript, XBM,
  TGA, WEBP...) is refused unopened, and so is a PIL image opened from one (an image
  made in memory, of no format, is accepted).
- 8-bit gray, RGB (luma), RGBA/LA (composited on black), palette images; 16-bit and
  float images are windowed to their own min..max, band by band in float64 (a float32
  image near its limits would overflow a float32 window) into one float32 image.
- In colour (``channels=3``): RGB as it is, RGBA and transparent palettes composited on
  black, CMYK and YCbCr converted to RGB, gray images (8-bit, 16-bit, float, gray DICOM)
  replicated into three equal channels; a deep colour array (or a 16-bit RGB DICOM) is
  windowed with one window for its three channels, so its hues are kept, and built one
  channel at a time (the memory of the gray path).
- DICOM (``.dcm`` or any bytes with the DICM marker): scaled by the stored bit depth,
  the VOI LUT / window applied when present, MONOCHROME1 inverted, the first frame of
  a multi-frame file (the only one decoded). Its header is checked before any pixel
  data are inflated or decoded: rows x columns against the pixel limit, one frame's
  decoded bytes against :data:`MAX_DECODED_BYTES`, all frames' against
  :data:`MAX_FILE_BYTES`. A deflated file is inflated only as far as its header and first
  frame (the header at most :data:`MAX_DICOM_HEADER_BYTES`); an RLE or JPEG frame that
  would decode to more than its header declares is refused before it is decoded.
- EXIF orientation (phones, some PACS exports store a film sideways with a tag that
  says how to turn it): applied, so the film is read upright.
- Animated GIF/PNG: the first frame. CMYK: converted to gray (or to RGB in colour).
- A path, a PIL image, an array and the bytes of the same picture give identical
  pixels (no decoder shortcut is taken for one kind of input and not another).
- Refused with :class:`~fusion.errors.ImageError` (a ``ValueError`` whose ``field`` is
  ``"image"``) naming the image: missing or unreadable files, folders,
  devices and FIFOs (never opened, so never waited on), truncated or corrupt data,
  zero-size images, images under 8 px a side, images over 64 megapixels (decompression
  bombs; checked before decoding), files over 512 MB (checked before reading), arrays
  with NaN or infinite values.
- Refused with ``TypeError``: anything that is not a path, PIL image, numpy array or
  bytes (an int, a list...).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

from fusion.data.dicom import MAX_DICOM_HEADER_BYTES, is_dicom_bytes, read_dicom
from fusion.data.pixels import (
    MAX_DECODED_BYTES,
    MAX_FILE_BYTES,
    MAX_PIXELS,
    MIN_SIDE,
    Planes,
    array_image,
    bomb_error,
    check_size,
    pil_pixels,
)
from fusion.errors import ImageError

# The limits live with the code that enforces them (fusion.data.pixels, fusion.data.dicom);
# this module, every image's way in, is where callers read them.
__all__ = [
    "ACCEPTED_FORMATS",
    "CHANNELS",
    "FORMATS_TEXT",
    "MAX_DECODED_BYTES",
    "MAX_DICOM_HEADER_BYTES",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "ImageSource",
    "load_image",
    "read_gray",
]

ImageSource = Any  # str | Path | PIL.Image.Image | numpy.ndarray | bytes
# What an image branch reads: one gray channel (films) or three colour channels.
CHANNELS = (1, 3)

# The formats read, as messages, the docs and the service's /schema name them: import
# FORMATS_TEXT rather than repeating the list.
ACCEPTED_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "DICOM")
FORMATS_TEXT = ", ".join(ACCEPTED_FORMATS[:-1]) + " or " + ACCEPTED_FORMATS[-1]
# Pillow opens only these (pydicom reads DICOM): any other plugin is code that no
# radiograph needs (EPS runs Ghostscript on the file).
_PILLOW_FORMATS = ACCEPTED_FORMATS[:-1]
# Pillow names a JPEG holding several pictures (phones, cameras write them) "MPO".
_PILLOW_ALIASES = {"MPO": "JPEG"}
_DICOM_SUFFIXES = (".dcm", ".dicom")
REDUCING_GAP = 3.0


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def _given_pil(image: Image.Image, what: str, channels: int) -> Image.Image | Planes:
    """A PIL image the caller opened: refused if Pillow opened it from a format the library
    does not read (it would be decoded here, EPS by Ghostscript); one made in memory has no
    format and is the caller's own."""
    fmt = image.format
    if fmt is not None and _PILLOW_ALIASES.get(fmt, fmt) not in _PILLOW_FORMATS:
        raise ImageError(
            f"image {what}: a {fmt} image; the accepted formats are {FORMATS_TEXT} (or an image made in memory)"
        )
    check_size(image.size, what)
    return pil_pixels(_oriented(image), what, channels)


def _oriented(image: Image.Image) -> Image.Image:
    """The image turned upright by its EXIF orientation tag, if it has one that turns it."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:
        return image
    if orientation in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


# ------------------------------------------------------------------ files and dispatch
def _check_regular(status: os.stat_result, what: str) -> None:
    if stat.S_ISDIR(status.st_mode):
        raise ImageError(f"image {what}: is a folder, not an image file")
    if not stat.S_ISREG(status.st_mode):
        raise ImageError(f"image {what}: is not a regular file (a device, FIFO or socket)")
    if status.st_size > MAX_FILE_BYTES:
        raise ImageError(
            f"image {what}: the file is {status.st_size / 2**20:.0f} MB, over the limit of {MAX_FILE_BYTES // 2**20} MB"
        )


def _open_regular(path: Path, what: str) -> BinaryIO:
    """``path`` opened for reading if it is a regular file within the size limit.

    A folder, device or FIFO is refused from its status, unopened (a FIFO opened for
    reading waits for a writer; /dev/zero never ends); the file is then opened without
    blocking and checked again, so one swapped in between is not waited on either.
    """
    try:
        _check_regular(os.stat(path), what)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as err:
        if isinstance(err, (FileNotFoundError, NotADirectoryError)):
            raise ImageError(f"image {what}: no such file") from None
        raise ImageError(f"image {what}: cannot read the file ({err.strerror or err})") from None
    try:
        _check_regular(os.fstat(fd), what)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _read_stream(fp: BinaryIO, dicom: bool, what: str, channels: int) -> Image.Image | Planes:
    """The image in ``fp``: DICOM if named so or marked so, else one of Pillow's accepted
    formats, opened lazily (header first, so a bomb is refused before it is decoded)."""
    if dicom or is_dicom_bytes(fp.read(132)):
        fp.seek(0)
        return read_dicom(fp, what, channels)
    fp.seek(0)
    with Image.open(fp, formats=_PILLOW_FORMATS) as image:
        check_size(image.size, what)
        image.seek(0)  # animated GIF/PNG/TIFF: the first frame
        image.load()
        return pil_pixels(_oriented(image), what, channels)


def _decode(source: ImageSource, channels: int = 1) -> Image.Image | Planes:
    """``source`` as a PIL "L" image (8-bit) or "F" image (deeper, values in [0, 1]);
    with ``channels`` 3, a colour image as a PIL "RGB" image or :class:`Planes` (deeper)
    and a gray one as for one channel."""
    what = _describe(source)
    if isinstance(source, np.ndarray):
        return array_image(source, what, channels)
    if isinstance(source, Image.Image):
        return _given_pil(source, what, channels)
    if not isinstance(source, (str, Path, bytes, bytearray, memoryview)):
        raise TypeError(f"image must be a path, PIL image, numpy array or bytes; got {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            # Size is checked against our own, lower limit; PIL's warning for large
            # images would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if isinstance(source, (str, Path)):
                with _open_regular(Path(source), what) as fp:
                    return _read_stream(fp, Path(source).suffix.lower() in _DICOM_SUFFIXES, what, channels)
            return _read_stream(io.BytesIO(bytes(source)), False, what, channels)
    except ValueError as err:
        if isinstance(err, ImageError):  # already names the image and what is wrong with it
            raise
        raise ImageError(f"image {what}: not a readable image ({err})") from None
    except Image.DecompressionBombError:
        raise bomb_error(what) from None
    except Image.UnidentifiedImageError:
        # PIL's own message shows the in-memory buffer's address for bytes: say what is accepted.
        raise ImageError(f"image {what}: not a readable image (not a {FORMATS_TEXT} file)") from None
    except Exception as err:
        raise ImageError(f"image {what}: not a readable image ({type(err).__name__}: {err})") from None


def read_gray(source: ImageSource) -> np.ndarray | Image.Image:
    """Decode ``source`` to one gray channel: a PIL "L" image or a float32 array in [0, 1].

    Raises
    ------
    ValueError
        The file is missing, not a regular file, unreadable, corrupt, empty, too large or
        of a format other than :data:`ACCEPTED_FORMATS`; the message names the file.
    TypeError
        ``source`` is none of path, PIL image, numpy array or bytes.
    """
    gray = _decode(source)
    return gray if gray.mode == "L" else np.array(gray)


def load_image(source: ImageSource, size: int, channels: int = 1) -> np.ndarray:
    """Decode and resize one image to a ``size`` x ``size`` uint8 array.

    The image is resized to the square directly (no crop, so no lung field is cut
    off), with an antialiasing filter.

    Parameters
    ----------
    source : str, Path, PIL.Image.Image, numpy.ndarray or bytes
        PNG, JPEG, TIFF, BMP, GIF or DICOM; 8 or 16 bit; grayscale, RGB or RGBA; any size
        up to :data:`MAX_PIXELS`.
    size : int
        Output side in pixels.
    channels : {1, 3}
        1: one gray channel (a colour image becomes its luma); 3: RGB (a gray image is
        replicated into three equal channels).

    Returns
    -------
    numpy.ndarray
        uint8, shape (size, size) for one channel, (size, size, 3) for three.

    Raises
    ------
    ValueError
        As :func:`read_gray`, or ``channels`` other than 1 or 3.
    """
    if channels not in CHANNELS:
        raise ValueError(f"channels must be 1 or 3; got {channels!r}")
    decoded = _decode(source, channels)
    if isinstance(decoded, Planes):  # deep colour: one float plane at a time
        return np.stack([_resized(plane, size) for plane in decoded], axis=-1)
    pixels = _resized(decoded, size)
    if channels == 3 and pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=2)
    return pixels


def _resized(image: Image.Image, size: int) -> np.ndarray:
    """A decoded "L", "RGB" or "F" image at ``size`` x ``size``, as uint8."""
    # reducing_gap: shrink by an integer box filter first, then resample; much faster for
    # large films and, per Pillow, indistinguishable from the exact result at 3.0.
    resized = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
    if image.mode == "F":
        return np.clip(np.round(np.asarray(resized) * 255.0), 0, 255).astype(np.uint8)
    return np.array(resized, dtype=np.uint8)
