"""DICOM films: the header checked before any pixel data are inflated or decoded, one frame decoded.

pydicom's ``dcmread`` inflates a deflated dataset whole and ``pixel_array`` decodes every
frame, before anything could check a size; a 408 KB deflated file or a 6 MB RLE file
then costs gigabytes. Here the header comes first: rows x columns x samples x bits x
frames against the budgets of :mod:`fusion.data.pixels`; a deflated dataset is inflated
only as far as its header (at most :data:`MAX_DICOM_HEADER_BYTES`) and first frame; an
RLE or JPEG first frame that would decode to more than its header declares is refused
before it is decoded; then only that frame is decoded and windowed (VOI LUT or window,
stored bits, MONOCHROME1 inverted).
"""

from __future__ import annotations

import io
import itertools
import struct
import zlib
from typing import BinaryIO

import numpy as np
from PIL import Image

from fusion.data.pixels import (
    MAX_DECODED_BYTES,
    MAX_FILE_BYTES,
    Planes,
    array_image,
    bomb_error,
    check_size,
    cut_repr,
    float_image,
    windowed,
)
from fusion.errors import ImageError

# What precedes a DICOM's pixel data is kB, a few MB with overlays or icons; a deflated
# DICOM is inflated this far at most before its header is checked.
MAX_DICOM_HEADER_BYTES = 16 * 1024 * 1024
_PIXEL_DATA_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)


def read_dicom(fp: BinaryIO, what: str, channels: int = 1) -> Image.Image | Planes:
    """The first frame of the DICOM in ``fp``, windowed, as :mod:`fusion.data.pixels`
    hands images over: gray ("L"/"F"), or with ``channels`` 3 and a colour DICOM (three
    samples per pixel, YBR converted to RGB by pydicom), colour ("RGB" or ``Planes``)."""
    try:
        return _dicom_to_gray(fp, what, channels)
    except (ValueError, ImportError) as err:
        if isinstance(err, (ImportError, ImageError)):
            raise
        raise ImageError(f"image {what}: not a readable DICOM file ({err})") from None
    except Image.DecompressionBombError:
        raise bomb_error(what) from None
    except Exception as err:  # pydicom raises many kinds for corrupt files
        raise ImageError(f"image {what}: not a readable DICOM file ({type(err).__name__}: {err})") from None


def _dicom_to_gray(fp: BinaryIO, what: str, channels: int) -> Image.Image | Planes:
    try:
        from pydicom.pixels import pixel_array
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading DICOM ({what}) needs pydicom: pip install pydicom") from err
    ds = _dicom_dataset(fp, what)
    _check_encoded_frame(ds, what)
    return _dicom_gray(pixel_array(ds, index=0), ds, what, channels)


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
            raise ImageError(f"image {what}: the DICOM header has no {keyword} (not an image)")
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or number != value:
        raise ImageError(
            f"image {what}: the DICOM {keyword} must be a whole number of at least 1; got {cut_repr(value)}"
        )
    return number


def _check_dicom_header(ds, what: str) -> None:
    """Rows x columns x samples x bits x frames against the budgets, before any pixel is decoded."""
    rows, columns = _dicom_count(ds, "Rows", what), _dicom_count(ds, "Columns", what)
    samples = _dicom_count(ds, "SamplesPerPixel", what, default=1)
    bits = _dicom_count(ds, "BitsAllocated", what)
    frames = _dicom_count(ds, "NumberOfFrames", what, default=1)
    if samples not in (1, 3):
        raise ImageError(f"image {what}: the DICOM SamplesPerPixel must be 1 or 3; got {samples}")
    if bits not in (1, 8, 16, 32, 64):
        raise ImageError(f"image {what}: the DICOM BitsAllocated must be 1, 8, 16, 32 or 64; got {bits}")
    check_size((columns, rows), what)
    frame = -(-rows * columns * samples * bits // 8)
    if frame > MAX_DECODED_BYTES:
        raise ImageError(
            f"image {what}: a DICOM frame of {columns}x{rows} px, {samples} sample(s) of {bits} bits, is "
            f"{frame / 2**20:.0f} MB decoded, over the limit of {MAX_DECODED_BYTES // 2**20} MB"
        )
    if frame * frames > MAX_FILE_BYTES:
        raise ImageError(
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
            raise ImageError(f"image {what}: the DICOM has no pixel data, or is cut short")
        raise ImageError(
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
        raise ImageError(f"image {what}: the deflated DICOM's pixel data are not native OB or OW data")
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
        raise ImageError(
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
        raise bomb_error(what) from None
    except Exception:
        return  # not one Pillow reads (JPEG-LS...): the decoder plugin checks it
    if codestream.size != (columns, rows):
        width, height = codestream.size
        raise ImageError(
            f"image {what}: its {codestream.format} frame of {width}x{height} px does not match the "
            f"{columns}x{rows} px of its DICOM header"
        )


def _check_rle_frame(frame: bytes, rows: int, columns: int, what: str) -> None:
    if len(frame) < 64:
        raise ImageError(f"image {what}: its RLE frame is cut short ({len(frame)} bytes)")
    count = min(struct.unpack_from("<L", frame)[0], 15)
    bounds = [*struct.unpack_from(f"<{count}L", frame, 4), len(frame)]
    # A segment may carry a padding byte or a few beyond the plane; a run more is not padding.
    allowed = rows * columns + 128
    for start, end in itertools.pairwise(bounds):
        if _rle_decoded_length(frame, start, end, allowed) > allowed:
            raise ImageError(
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


def _dicom_gray(pixels: np.ndarray, ds, what: str, channels: int) -> Image.Image | Planes:
    """One decoded frame, windowed by the header (VOI LUT or window, stored bits,
    MONOCHROME1) band by band into a float image."""
    from pydicom.pixels import apply_voi_lut

    if pixels.ndim != 2:  # several samples per pixel: RGB
        return array_image(pixels, what, channels)
    height, width = pixels.shape
    check_size((width, height), what)
    # The VOI LUT is the reading window the modality chose; its output spans the stored
    # bit range, like the raw values.
    window = "WindowCenter" in ds or "VOILUTSequence" in ds

    def values(top: int, bottom: int) -> np.ndarray:
        band = pixels[top:bottom]
        return (apply_voi_lut(band, ds) if window else band).astype(np.float32)

    invert = ds.get("PhotometricInterpretation", "") == "MONOCHROME1"
    bits = int(ds.get("BitsStored", 0) or 0)
    if not bits:
        return windowed((width, height), values, np.dtype(np.float32), what, invert=invert)
    lo = -(2.0 ** (bits - 1)) if ds.get("PixelRepresentation", 0) == 1 else 0.0
    scale = 2.0**bits - 1.0
    return float_image(
        (width, height), lambda top, bottom: np.clip((values(top, bottom) - lo) / scale, 0.0, 1.0), 1, invert
    )


def is_dicom_bytes(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"
