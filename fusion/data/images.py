"""Reading X-ray images of any accepted format into one grayscale channel at model size.

Every image the library sees, in training or prediction, passes through
:func:`load_image`, so a file, a PIL image, an array and raw bytes of the same picture
give the same pixels. Images are stored as uint8 at the model's size: 8 bits are what
the networks see after normalisation anyway, and they keep decoded datasets small.

What each kind of input does:

- The formats read are :data:`ACCEPTED_FORMATS` (PNG, JPEG, TIFF, BMP, GIF, DICOM) and no
  other: a file of another format (EPS, which Pillow would hand to Ghostscript, XBM,
  TGA, WEBP...) is refused unopened, and so is a PIL image opened from one (an image
  made in memory, of no format, is accepted).
- 8-bit gray, RGB (luma), RGBA/LA (composited on black), palette images; 16-bit and
  float images are windowed to their own min..max, band by band in float64 (a float32
  image near its limits would overflow a float32 window) into one float32 image.
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
- Animated GIF/PNG: the first frame. CMYK: converted to gray.
- A path, a PIL image, an array and the bytes of the same picture give identical
  pixels (no decoder shortcut is taken for one kind of input and not another).
- Refused with ``ValueError`` naming the image: missing or unreadable files, folders,
  devices and FIFOs (never opened, so never waited on), truncated or corrupt data,
  zero-size images, images under 8 px a side, images over 64 megapixels (decompression
  bombs; checked before decoding), files over 512 MB (checked before reading), arrays
  with NaN or infinite values.
- Refused with ``TypeError``: anything that is not a path, PIL image, numpy array or
  bytes (an int, a list...).
"""

from __future__ import annotations

import io
import itertools
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

ImageSource = Any  # str | Path | PIL.Image.Image | numpy.ndarray | bytes

# The formats read, as messages, the README and the service's /schema name them: import
# FORMATS_TEXT rather than repeating the list.
ACCEPTED_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "DICOM")
FORMATS_TEXT = ", ".join(ACCEPTED_FORMATS[:-1]) + " or " + ACCEPTED_FORMATS[-1]
# Pillow opens only these (pydicom reads DICOM): any other plugin is code that no
# radiograph needs (EPS runs Ghostscript on the file).
_PILLOW_FORMATS = ACCEPTED_FORMATS[:-1]
# Pillow names a JPEG holding several pictures (phones, cameras write them) "MPO".
_PILLOW_ALIASES = {"MPO": "JPEG"}
_DICOM_SUFFIXES = (".dcm", ".dicom")
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
# What precedes a DICOM's pixel data is kB, a few MB with overlays or icons; a deflated
# DICOM is inflated this far at most before its header is checked.
MAX_DICOM_HEADER_BYTES = 16 * 1024 * 1024
MIN_SIDE = 8
REDUCING_GAP = 3.0
# Deep images are windowed in bands of rows of about this many pixels, so the float64
# arithmetic needs a few MB however large the film.
_BAND_PIXELS = 1 << 18
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as PIL's convert("L") uses
_PIXEL_DATA_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def _cut(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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


def _bomb_error(what: str) -> ValueError:
    """Pillow refused the image as a bomb from its header: say it as the library does."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    over = f"over {2 * pillow_limit // 1_000_000} megapixels, which " if pillow_limit else ""
    return ValueError(
        f"image {what}: {over}exceeds the limit of {MAX_PIXELS // 1_000_000} megapixels "
        "(a decompression bomb, or not a radiograph)"
    )


# ------------------------------------------------------------------ deep images
def _bands(height: int, row_values: int) -> list[tuple[int, int]]:
    """Row ranges of about _BAND_PIXELS values each (``row_values``: width x channels)."""
    step = max(1, _BAND_PIXELS // max(row_values, 1))
    return [(top, min(top + step, height)) for top in range(0, height, step)]


def _float_image(
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
            raise ValueError(f"image {what}: contains NaN or infinite pixel values")
        lo, hi = min(lo, float(band_lo)), max(hi, float(band_hi))
    return lo, hi


def _windowed(
    size: tuple[int, int],
    band_of: Callable[[int, int], np.ndarray],
    dtype: np.dtype,
    what: str,
    luma: bool = False,
    invert: bool = False,
) -> Image.Image:
    """``band_of(top, bottom)``'s values mapped to [0, 1] as a float image: uint8 divided
    by 255, bool and floats already in [0, 1] kept, anything else windowed to the image's
    own min..max (12- or 16-bit detectors rarely use their whole range). ``luma``: bands
    of (rows, width, 3) channels become gray."""
    channels = 3 if luma else 1
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

    return _float_image(size, unit, channels, invert)


def _check_dtype(dtype: np.dtype, what: str) -> None:
    numeric = np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == np.bool_
    if not numeric or np.issubdtype(dtype, np.timedelta64):
        raise ValueError(f"image {what}: unsupported pixel type {dtype}; expected uint8, uint16 or float")


def _array_image(array: np.ndarray, what: str) -> Image.Image:
    """An array as a PIL "L" image (8-bit) or "F" image (anything deeper)."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    luma = array.ndim == 3 and array.shape[-1] in (3, 4)
    if array.dtype == np.uint8 and array.size and (array.ndim == 2 or luma):
        # Through PIL, so an array gives exactly the pixels of the same picture as a file.
        return _pil_to_gray(Image.fromarray(np.ascontiguousarray(array)), what)
    if array.ndim != 2 and not luma:
        raise ValueError(
            f"image {what}: expected an array of shape (H, W) or (H, W, C) with C in 1, 3, 4; got {array.shape}"
        )
    _check_size((array.shape[1], array.shape[0]), what)
    _check_dtype(array.dtype, what)
    plane = array[..., :3] if luma else array
    size = (array.shape[1], array.shape[0])
    return _windowed(size, lambda top, bottom: plane[top:bottom], array.dtype, what, luma=luma)


def _pil_to_gray(image: Image.Image, what: str) -> Image.Image:
    """An 8-bit image becomes a PIL "L" image (fast resize); deeper ones an "F" image."""
    _check_size(image.size, what)
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):

        def band_of(top: int, bottom: int) -> np.ndarray:
            return np.asarray(image.crop((0, top, image.width, bottom)))

        return _windowed(image.size, band_of, band_of(0, 1).dtype, what)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels of screenshots are background: composite on black.
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("L")
    return image.convert("L")


def _given_pil(image: Image.Image, what: str) -> Image.Image:
    """A PIL image the caller opened: refused if Pillow opened it from a format the library
    does not read (it would be decoded here, EPS by Ghostscript); one made in memory has no
    format and is the caller's own."""
    fmt = image.format
    if fmt is not None and _PILLOW_ALIASES.get(fmt, fmt) not in _PILLOW_FORMATS:
        raise ValueError(
            f"image {what}: a {fmt} image; the accepted formats are {FORMATS_TEXT} (or an image made in memory)"
        )
    _check_size(image.size, what)
    return _pil_to_gray(_oriented(image), what)


def _oriented(image: Image.Image) -> Image.Image:
    """The image turned upright by its EXIF orientation tag, if it has one that turns it."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:
        return image
    if orientation in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


# ------------------------------------------------------------------ DICOM
def _read_dicom(fp: BinaryIO, what: str) -> Image.Image:
    try:
        return _dicom_to_gray(fp, what)
    except (ValueError, ImportError) as err:
        if isinstance(err, ImportError) or str(err).startswith("image "):
            raise
        raise ValueError(f"image {what}: not a readable DICOM file ({err})") from None
    except Image.DecompressionBombError:
        raise _bomb_error(what) from None
    except Exception as err:  # pydicom raises many kinds for corrupt files
        raise ValueError(f"image {what}: not a readable DICOM file ({type(err).__name__}: {err})") from None


def _dicom_to_gray(fp: BinaryIO, what: str) -> Image.Image:
    try:
        from pydicom.pixels import pixel_array
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading DICOM ({what}) needs pydicom: pip install pydicom") from err
    ds = _dicom_dataset(fp, what)
    _check_encoded_frame(ds, what)
    return _dicom_gray(pixel_array(ds, index=0), ds, what)


def _dicom_dataset(fp: BinaryIO, what: str):
    """The dataset in ``fp``, its header checked before its pixel data are read."""
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    # The file meta alone first: dcmread inflates a deflated dataset whole, without bound.
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return _inflated_dataset(fp, meta, what)
    fp.seek(0)
    _check_dicom_header(pydicom.dcmread(fp, stop_before_pixels=True), what)
    fp.seek(0)
    return pydicom.dcmread(fp)


def _dicom_count(ds, keyword: str, what: str, default: int | None = None) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise ValueError(f"image {what}: the DICOM header has no {keyword} (not an image)")
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or number != value:
        raise ValueError(f"image {what}: the DICOM {keyword} must be a whole number of at least 1; got {_cut(value)}")
    return number


def _check_dicom_header(ds, what: str) -> None:
    """Rows x columns x samples x bits x frames against the budgets, before any pixel is decoded."""
    rows, columns = _dicom_count(ds, "Rows", what), _dicom_count(ds, "Columns", what)
    samples = _dicom_count(ds, "SamplesPerPixel", what, default=1)
    bits = _dicom_count(ds, "BitsAllocated", what)
    frames = _dicom_count(ds, "NumberOfFrames", what, default=1)
    if samples not in (1, 3):
        raise ValueError(f"image {what}: the DICOM SamplesPerPixel must be 1 or 3; got {samples}")
    if bits not in (1, 8, 16, 32, 64):
        raise ValueError(f"image {what}: the DICOM BitsAllocated must be 1, 8, 16, 32 or 64; got {bits}")
    _check_size((columns, rows), what)
    frame = -(-rows * columns * samples * bits // 8)
    if frame > MAX_DECODED_BYTES:
        raise ValueError(
            f"image {what}: a DICOM frame of {columns}x{rows} px, {samples} sample(s) of {bits} bits, is "
            f"{frame / 2**20:.0f} MB decoded, over the limit of {MAX_DECODED_BYTES // 2**20} MB"
        )
    if frame * frames > MAX_FILE_BYTES:
        raise ValueError(
            f"image {what}: the DICOM's {frames} frames of {columns}x{rows} px are {frame * frames / 2**20:.0f} MB "
            f"decoded, over the limit of {MAX_FILE_BYTES // 2**20} MB (not one radiograph)"
        )


def _parse_head(head: bytes):
    """The dataset in ``head`` up to its pixel data or to an element longer than what
    remains (left unread, so no value is copied past the bound): (dataset, offset where
    it stopped, where that cut element would end or 0)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset

    buffer, cut = DicomBytesIO(head), []

    def stop(tag: int, vr: str | None, length: int) -> bool:
        if length != 0xFFFFFFFF and length > len(head) - buffer.tell():
            cut.append(buffer.tell() + length)
        return tag in _PIXEL_DATA_TAGS or bool(cut)

    ds = read_dataset(buffer, is_implicit_VR=False, is_little_endian=True, stop_when=stop)
    return ds, buffer.tell(), cut[0] if cut else 0


def _tag_at(head: bytes, at: int) -> int:
    if len(head) - at < 12:
        return 0
    group, element = struct.unpack_from("<HH", head, at)
    return group << 16 | element


def _inflated_header(compressed: bytes, what: str):
    """The header of a deflated dataset, inflated 1 MB first (headers are kB), then at most
    MAX_DICOM_HEADER_BYTES: (the dataset before its pixel data, the inflated bytes, the
    offset of the pixel data element in them, the inflater to go on with)."""
    for limit in (2**20, MAX_DICOM_HEADER_BYTES):
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        head = inflater.decompress(compressed, limit)
        try:
            ds, at, cut_end = _parse_head(head)
        except Exception:
            if inflater.eof or limit == MAX_DICOM_HEADER_BYTES:
                raise
            continue  # a sequence cut off by the first bound
        if _tag_at(head, at) in _PIXEL_DATA_TAGS or inflater.eof or cut_end > MAX_DICOM_HEADER_BYTES:
            break
    if _tag_at(head, at) not in _PIXEL_DATA_TAGS:
        if inflater.eof:
            raise ValueError(f"image {what}: the DICOM has no pixel data, or is cut short")
        raise ValueError(
            f"image {what}: the deflated DICOM's header is over {MAX_DICOM_HEADER_BYTES // 2**20} MB "
            "inflated (a decompression bomb, or not a radiograph)"
        )
    return ds, head, at, inflater


def _inflated_dataset(fp: BinaryIO, meta, what: str):
    """A deflated dataset inflated only as far as its header and first frame, with that
    frame as its pixel data; the header is checked before the frame is inflated, so a
    stream of zeros behind a small header costs nothing."""
    from pydicom.pixels.utils import get_expected_length
    from pydicom.uid import ExplicitVRLittleEndian

    ds, head, at, inflater = _inflated_header(fp.read(), what)
    vr, length = head[at + 4 : at + 6], struct.unpack_from("<L", head, at + 8)[0]
    if head[at : at + 4] != b"\xe0\x7f\x10\x00" or vr not in (b"OB", b"OW") or length == 0xFFFFFFFF:
        raise ValueError(f"image {what}: the deflated DICOM's pixel data are not native OB or OW data")
    _check_dicom_header(ds, what)
    ds.file_meta = meta
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "NumberOfFrames" in ds:
        ds.NumberOfFrames = 1  # the film is the first frame; no other is inflated
    size = min(get_expected_length(ds, "bytes"), length)
    start = at + 12  # the value, after tag, VR, two reserved bytes and length
    pixels = head[start : start + size]
    if len(pixels) < size:  # max_length 0 would mean no limit
        pixels += inflater.decompress(inflater.unconsumed_tail, size - len(pixels))
    if len(pixels) < get_expected_length(ds, "bytes"):
        raise ValueError(
            f"image {what}: the DICOM's pixel data end after {len(pixels)} of the "
            f"{get_expected_length(ds, 'bytes')} bytes its header declares"
        )
    ds.PixelData = pixels
    ds["PixelData"].VR = vr.decode()
    return ds


def _check_encoded_frame(ds, what: str) -> None:
    """An RLE or JPEG first frame that would decode to more than the header declares is
    refused before it is decoded (pydicom's RLE decoder grows each segment without bound;
    Pillow decodes a JPEG at its own size, whatever the header says)."""
    from pydicom.encaps import get_frame
    from pydicom.uid import RLELossless

    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None or not syntax.is_encapsulated:
        return
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    frames = int(ds.get("NumberOfFrames") or 1)
    frame = get_frame(ds.PixelData, 0, number_of_frames=frames, extended_offsets=offsets)
    rows, columns = int(ds.Rows), int(ds.Columns)
    if syntax == RLELossless:
        _check_rle_frame(frame, rows, columns, what)
        return
    try:
        codestream = Image.open(io.BytesIO(frame), formats=("JPEG", "JPEG2000"))
    except Image.DecompressionBombError:
        raise _bomb_error(what) from None
    except Exception:
        return  # not one Pillow reads (JPEG-LS...): the decoder plugin checks it
    if codestream.size != (columns, rows):
        width, height = codestream.size
        raise ValueError(
            f"image {what}: its {codestream.format} frame of {width}x{height} px does not match the "
            f"{columns}x{rows} px of its DICOM header"
        )


def _check_rle_frame(frame: bytes, rows: int, columns: int, what: str) -> None:
    if len(frame) < 64:
        raise ValueError(f"image {what}: its RLE frame is cut short ({len(frame)} bytes)")
    count = min(struct.unpack_from("<L", frame)[0], 15)
    bounds = [*struct.unpack_from(f"<{count}L", frame, 4), len(frame)]
    # A segment may carry a padding byte or a few beyond the plane; a run more is not padding.
    allowed = rows * columns + 128
    for start, end in itertools.pairwise(bounds):
        if _rle_decoded_length(frame, start, end, allowed) > allowed:
            raise ValueError(
                f"image {what}: an RLE segment decodes to more than the {columns}x{rows} px its header declares "
                "(a decompression bomb, or a corrupt file)"
            )


def _rle_decoded_length(data: bytes, start: int, end: int, limit: int) -> int:
    """How many bytes the PackBits segment ``data[start:end]`` decodes to, counted without
    decoding, and only until it passes ``limit``."""
    length, position, end = 0, start, min(end, len(data))
    while position < end and length <= limit:
        header = data[position]
        if header > 128:  # the next byte, 257 - header times
            length += 257 - header
            position += 2
        elif header < 128:  # the next header + 1 bytes, literally
            length += min(header + 1, end - position - 1)
            position += header + 2
        else:  # 128: no operation
            position += 1
    return length


def _dicom_gray(pixels: np.ndarray, ds, what: str) -> Image.Image:
    """One decoded frame, windowed by the header (VOI LUT or window, stored bits,
    MONOCHROME1) band by band into a float image."""
    from pydicom.pixels import apply_voi_lut

    if pixels.ndim != 2:  # several samples per pixel: RGB
        return _array_image(pixels, what)
    height, width = pixels.shape
    _check_size((width, height), what)
    # The VOI LUT is the reading window the modality chose; its output spans the stored
    # bit range, like the raw values.
    window = "WindowCenter" in ds or "VOILUTSequence" in ds

    def values(top: int, bottom: int) -> np.ndarray:
        band = pixels[top:bottom]
        return (apply_voi_lut(band, ds) if window else band).astype(np.float32)

    invert = ds.get("PhotometricInterpretation", "") == "MONOCHROME1"
    bits = int(ds.get("BitsStored", 0) or 0)
    if not bits:
        return _windowed((width, height), values, np.dtype(np.float32), what, invert=invert)
    lo = -(2.0 ** (bits - 1)) if ds.get("PixelRepresentation", 0) == 1 else 0.0
    scale = 2.0**bits - 1.0
    return _float_image(
        (width, height), lambda top, bottom: np.clip((values(top, bottom) - lo) / scale, 0.0, 1.0), 1, invert
    )


def _is_dicom_bytes(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


# ------------------------------------------------------------------ files and dispatch
def _check_regular(status: os.stat_result, what: str) -> None:
    if stat.S_ISDIR(status.st_mode):
        raise ValueError(f"image {what}: is a folder, not an image file")
    if not stat.S_ISREG(status.st_mode):
        raise ValueError(f"image {what}: is not a regular file (a device, FIFO or socket)")
    if status.st_size > MAX_FILE_BYTES:
        raise ValueError(
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
            raise ValueError(f"image {what}: no such file") from None
        raise ValueError(f"image {what}: cannot read the file ({err.strerror or err})") from None
    try:
        _check_regular(os.fstat(fd), what)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _read_stream(fp: BinaryIO, dicom: bool, what: str) -> Image.Image:
    """The image in ``fp``: DICOM if named so or marked so, else one of Pillow's accepted
    formats, opened lazily (header first, so a bomb is refused before it is decoded)."""
    if dicom or _is_dicom_bytes(fp.read(132)):
        fp.seek(0)
        return _read_dicom(fp, what)
    fp.seek(0)
    with Image.open(fp, formats=_PILLOW_FORMATS) as image:
        _check_size(image.size, what)
        image.seek(0)  # animated GIF/PNG/TIFF: the first frame
        image.load()
        return _pil_to_gray(_oriented(image), what)


def _decode(source: ImageSource) -> Image.Image:
    """``source`` as a PIL "L" image (8-bit) or "F" image (deeper, values in [0, 1])."""
    what = _describe(source)
    if isinstance(source, np.ndarray):
        return _array_image(source, what)
    if isinstance(source, Image.Image):
        return _given_pil(source, what)
    if not isinstance(source, (str, Path, bytes, bytearray, memoryview)):
        raise TypeError(f"image must be a path, PIL image, numpy array or bytes; got {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            # Size is checked against our own, lower limit; PIL's warning for large
            # images would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if isinstance(source, (str, Path)):
                with _open_regular(Path(source), what) as fp:
                    return _read_stream(fp, Path(source).suffix.lower() in _DICOM_SUFFIXES, what)
            return _read_stream(io.BytesIO(bytes(source)), False, what)
    except ValueError as err:
        if str(err).startswith("image "):
            raise
        raise ValueError(f"image {what}: not a readable image ({err})") from None
    except Image.DecompressionBombError:
        raise _bomb_error(what) from None
    except Image.UnidentifiedImageError:
        # PIL's own message shows the in-memory buffer's address for bytes: say what is accepted.
        raise ValueError(f"image {what}: not a readable image (not a {FORMATS_TEXT} file)") from None
    except Exception as err:
        raise ValueError(f"image {what}: not a readable image ({type(err).__name__}: {err})") from None


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


def load_image(source: ImageSource, size: int) -> np.ndarray:
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

    Returns
    -------
    numpy.ndarray
        uint8, shape (size, size).
    """
    gray = _decode(source)
    # reducing_gap: shrink by an integer box filter first, then resample; much faster for
    # large films and, per Pillow, indistinguishable from the exact result at 3.0.
    resized = gray.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
    if gray.mode == "F":
        return np.clip(np.round(np.asarray(resized) * 255.0), 0, 255).astype(np.uint8)
    return np.array(resized, dtype=np.uint8)
