"""Image decoding under hostile input (fusion/data/images.py): DICOM decompression bombs
refused from their header before anything is inflated or decoded, only the declared
formats opened, deep images windowed without float64 copies, paths that are not
regular files named for what they are.

Hostile files are built here, small on disk: a lying header costs a few bytes, a run of
zeros in a deflate stream about 1 KB per MB, so no test ever allocates what it describes.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

import fusion.data.images as images
from fusion.data.images import FORMATS_TEXT, load_image, read_gray

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.filebase import DicomBytesIO  # noqa: E402
from pydicom.filewriter import write_dataset, write_file_meta_info  # noqa: E402
from pydicom.uid import (  # noqa: E402
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

MB = 1 << 20


# ------------------------------------------------------------------ builders
def _dataset(
    rows: int, columns: int, *, bits: int = 8, frames: int | None = None, samples: int = 1, **extra
) -> Dataset:
    """A secondary-capture dataset whose header says what the caller wants (true or not)."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if frames is not None:
        ds.NumberOfFrames = frames
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def _meta(syntax) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    return meta


def _file(ds: Dataset, syntax, pixel_data: bytes | list[bytes]) -> bytes:
    """``ds`` saved with ``syntax``; a list of frames is encapsulated (RLE, JPEG)."""
    ds.file_meta = _meta(syntax)
    ds.PixelData = encapsulate(pixel_data) if isinstance(pixel_data, list) else pixel_data
    ds["PixelData"].VR = "OB" if isinstance(pixel_data, list) or ds.BitsAllocated <= 8 else "OW"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _rle_frame(*segments: bytes) -> bytes:
    """An RLE frame: the 64-byte header of segment offsets, then the segments."""
    offsets, position = [], 64
    for segment in segments:
        offsets.append(position)
        position += len(segment)
    return struct.pack("<16L", len(segments), *offsets, *[0] * (15 - len(segments))) + b"".join(segments)


def _rle_literal(data: bytes) -> bytes:
    """``data`` as RLE literal runs (what an encoder writes for noise)."""
    runs = b"".join(bytes([len(data[i : i + 128]) - 1]) + data[i : i + 128] for i in range(0, len(data), 128))
    return runs + b"\0" * (len(runs) % 2)


def _rle_zeros(count: int) -> bytes:
    """``count`` zero bytes as RLE replicate runs: 2 bytes per 128 decoded."""
    return bytes([0x81, 0]) * (count // 128) + (bytes([257 - count % 128, 0]) if count % 128 > 1 else b"")


def _deflate(*parts: bytes | int) -> bytes:
    """A raw deflate stream of ``parts``: bytes as they are, an int as that many zero bytes.

    Zeros are compressed one MB at a time behind a full flush, which resets the
    compressor, so one compressed MB repeated is the stream of many: a 96 MB run costs
    96 KB and no time.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = []
    for part in parts:
        if isinstance(part, int):
            out.append(compressor.flush(zlib.Z_FULL_FLUSH))
            block = compressor.compress(bytes(MB)) + compressor.flush(zlib.Z_FULL_FLUSH)
            out.append(block * (part // MB))
            out.append(compressor.compress(bytes(part % MB)))
        else:
            out.append(compressor.compress(part))
    out.append(compressor.flush())
    return b"".join(out)


def _element(group: int, element: int, vr: bytes, length: int) -> bytes:
    """The explicit-VR little-endian header of an OB/OW/UN element of ``length`` bytes."""
    return struct.pack("<HH2sHL", group, element, vr, 0, length)


def _deflated_file(ds: Dataset, *body: bytes | int) -> bytes:
    """A deflated-syntax DICOM file: ``ds`` (no pixel data), then ``body`` in the stream."""
    meta = DicomBytesIO()
    write_file_meta_info(meta, _meta(DeflatedExplicitVRLittleEndian), enforce_standard=True)
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    write_dataset(encoded, ds)
    return bytes(128) + b"DICM" + meta.getvalue() + _deflate(encoded.getvalue(), *body)


def _peak_bytes(function, *args) -> tuple[int, object]:
    """Peak memory that Python and numpy allocate while ``function(*args)`` runs, and its
    result (or the exception it raised)."""
    tracemalloc.start()
    try:
        result = function(*args)
    except Exception as err:
        result = err
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, result


@pytest.fixture()
def no_decoding(monkeypatch):
    """Fails a test whose DICOM pixel data reach a decoder (records, then raises)."""
    from pydicom.pixels.decoders.base import Decoder

    calls = []

    def refuse(self, *args, **kwargs):
        calls.append(self.UID)
        raise RuntimeError("pixel data decoded")

    monkeypatch.setattr(Decoder, "as_array", refuse)
    monkeypatch.setattr(Decoder, "iter_array", refuse)
    return calls


def test_builders_make_what_they_say():
    stream = _deflate(b"head", 3 * MB + 5, b"tail")
    assert len(stream) < 8000
    assert zlib.decompress(stream, -zlib.MAX_WBITS) == b"head" + bytes(3 * MB + 5) + b"tail"
    pixels = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)
    data = _file(_dataset(64, 64), RLELossless, [_rle_frame(_rle_literal(pixels.tobytes()))])
    np.testing.assert_array_equal(pydicom.dcmread(io.BytesIO(data)).pixel_array, pixels)


# ------------------------------------------------------------------ item 4: deflate bombs
def _deflated_with_pixels(rows: int, columns: int, pixels: bytes | int, *after: bytes | int) -> bytes:
    length = pixels if isinstance(pixels, int) else len(pixels)
    return _deflated_file(_dataset(rows, columns), _element(0x7FE0, 0x0010, b"OB", length), pixels, *after)


DEFLATE_BOMBS = {
    # A small film, then 96 MB of trailing padding: the film is read, the padding never inflated.
    "trailing padding": (
        lambda: _deflated_with_pixels(64, 64, bytes(range(64)) * 64, _element(0xFFFC, 0xFFFC, b"OB", 96 * MB), 96 * MB),
        None,
    ),
    # 96 MB of a private element before the pixel data: the header alone is too large.
    "huge header": (
        lambda: _deflated_file(_dataset(64, 64), _element(0x0009, 0x1010, b"OB", 96 * MB), 96 * MB),
        "header is over",
    ),
    # A header that declares 20,000 x 20,000 px: refused before its pixel data are inflated.
    "lying header": (lambda: _deflated_with_pixels(20_000, 20_000, 96 * MB), "exceeds the limit of 64 megapixels"),
}


@pytest.mark.parametrize("kind", list(DEFLATE_BOMBS))
def test_a_dicom_deflate_bomb_is_refused_before_inflating(tmp_path, kind):
    make, refusal = DEFLATE_BOMBS[kind]
    path = tmp_path / "bomb.dcm"
    path.write_bytes(make())
    assert path.stat().st_size < 200_000  # 96 MB and more once inflated
    for source in (path, path.read_bytes()):
        peak, result = _peak_bytes(load_image, source, 32)
        assert peak < 32 * MB, f"{kind}: {peak / MB:.0f} MB allocated"
        if refusal is None:
            assert isinstance(result, np.ndarray) and result.shape == (32, 32)
        else:
            assert isinstance(result, ValueError) and refusal in str(result), result
            assert "bomb.dcm" in str(result) or "bytes>" in str(result)


def test_a_deflated_dicom_within_limits_gives_the_pixels_of_the_uncompressed_one():
    pixels = (np.add.outer(np.arange(96), np.arange(80)) % 256).astype(np.uint8)
    plain = _file(_dataset(96, 80), ExplicitVRLittleEndian, pixels.tobytes())
    deflated = _file(_dataset(96, 80), DeflatedExplicitVRLittleEndian, pixels.tobytes())
    assert len(deflated) < len(plain)
    np.testing.assert_array_equal(load_image(deflated, 40), load_image(plain, 40))
    # Several frames: the first is the film, and only it is inflated.
    frames = np.stack([pixels, 255 - pixels, pixels // 2])
    multi = _file(_dataset(96, 80, frames=3), DeflatedExplicitVRLittleEndian, frames.tobytes())
    np.testing.assert_array_equal(load_image(multi, 40), load_image(plain, 40))


def test_a_deflated_dicom_cut_short_is_refused_naming_it():
    data = _deflated_with_pixels(64, 64, bytes(1000))  # 1,000 of the 4,096 pixel bytes
    with pytest.raises(ValueError, match=r"<\d+ bytes>: .*pixel data"):
        load_image(data, 32)


# ------------------------------------------------------------------ item 5: header first, one frame
HEADER_BOMBS = {
    # The 6 MB 20,000 x 20,000 RLE file of the issue, with one tiny frame: a lie, refused from the header.
    "20000 px a side": (_dataset(20_000, 20_000), RLELossless, "20000x20000 px exceeds the limit of 64 megapixels"),
    # 40 frames of 4,000 x 4,000 (640 MP decoded): over the byte budget as a whole.
    "40 frames": (_dataset(4000, 4000, frames=40), RLELossless, "40 frames"),
    # One frame under the pixel limit but of 64-bit samples: over the decoded-bytes budget.
    "64-bit RGB": (_dataset(6000, 6000, bits=64, samples=3), ExplicitVRLittleEndian, "over the limit of"),
    "no rows": (_dataset(64, 64, Rows=None), ExplicitVRLittleEndian, "Rows"),
    "zero frames": (_dataset(64, 64, frames=0), ExplicitVRLittleEndian, "NumberOfFrames"),
    "12 bits allocated": (_dataset(64, 64, bits=12), ExplicitVRLittleEndian, "BitsAllocated"),
}


@pytest.mark.parametrize("kind", list(HEADER_BOMBS))
def test_a_dicom_is_refused_from_its_header_before_its_pixel_data_are_decoded(no_decoding, kind):
    ds, syntax, refusal = HEADER_BOMBS[kind]
    frame = [_rle_frame(_rle_zeros(4096))] if syntax == RLELossless else bytes(4096)
    data = _file(ds, syntax, frame)
    with pytest.raises(ValueError, match=r"image <\d+ bytes>: ") as err:
        load_image(data, 32)
    assert refusal in str(err.value) and no_decoding == []


def _rle_film(frames: int, side: int = 256) -> tuple[bytes, np.ndarray]:
    """A 16-bit RLE file whose first frame is a ramp and the others are flat."""
    first = (np.add.outer(np.arange(side), np.arange(side)) * 7).astype(np.uint16)
    encoded = [
        _rle_frame(
            _rle_literal((first >> 8).astype(np.uint8).tobytes()), _rle_literal(first.astype(np.uint8).tobytes())
        )
    ]
    encoded += [_rle_frame(_rle_zeros(side * side), _rle_zeros(side * side))] * (frames - 1)
    return _file(_dataset(side, side, bits=16, frames=frames), RLELossless, encoded), first


def test_only_the_first_frame_of_a_multi_frame_dicom_is_decoded():
    data, first = _rle_film(frames=40)
    plain = _file(_dataset(256, 256, bits=16), ExplicitVRLittleEndian, first.tobytes())
    peak, got = _peak_bytes(load_image, data, 64)
    np.testing.assert_array_equal(got, load_image(plain, 64))
    assert peak < 8 * 256 * 256 * 2  # all 40 frames would be 40 times one (128 KB)


def test_an_rle_segment_that_decodes_past_its_header_is_refused_before_decoding(no_decoding):
    # 256 KB of replicate runs decode to 16 MB, where the header declares 64 x 64 px.
    data = _file(_dataset(64, 64), RLELossless, [_rle_frame(_rle_zeros(16 * MB))])
    with pytest.raises(ValueError, match="RLE segment decodes to more than the 64x64 px its header declares"):
        load_image(data, 32)
    assert no_decoding == []


@pytest.mark.parametrize("fmt", ["JPEG", "JPEG2000"])
def test_a_jpeg_frame_larger_than_its_dicom_header_is_refused_before_decoding(no_decoding, fmt):
    if fmt == "JPEG2000" and not features.check("jpg_2000"):
        pytest.skip(f"Pillow cannot write {fmt} here")
    buffer = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buffer, format=fmt)
    data = _file(_dataset(64, 64), JPEGBaseline8Bit if fmt == "JPEG" else JPEG2000Lossless, [buffer.getvalue()])
    with pytest.raises(ValueError, match=rf"its {fmt} frame of 3000x3000 px does not match the 64x64 px"):
        load_image(data, 32)
    assert no_decoding == []


def test_rle_and_jpeg_dicoms_within_limits_are_read():
    pixels = (np.add.outer(np.arange(64), np.arange(48)) * 2 % 256).astype(np.uint8)
    reference = load_image(_file(_dataset(64, 48), ExplicitVRLittleEndian, pixels.tobytes()), 32).astype(int)
    rle = _file(_dataset(64, 48), RLELossless, [_rle_frame(_rle_literal(pixels.tobytes()))])
    np.testing.assert_array_equal(load_image(rle, 32), reference)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    jpeg = _file(_dataset(64, 48), JPEGBaseline8Bit, [buffer.getvalue()])
    assert np.abs(load_image(jpeg, 32).astype(int) - reference).mean() < 3


# ------------------------------------------------------------------ item 6: declared formats only
def _eps() -> bytes:
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n/x { quit } def x\nshowpage\n%%EOF\n"


def _saved(fmt: str, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (64, 64), 128 if mode != "1" else 1).save(buffer, format=fmt)
    return buffer.getvalue()


OTHER_FORMATS = {
    "EPS": _eps,
    "XBM": lambda: _saved("XBM", "1"),
    "TGA": lambda: _saved("TGA"),
    "PPM": lambda: _saved("PPM"),
    "PCX": lambda: _saved("PCX"),
    "SGI": lambda: _saved("SGI"),
    "ICO": lambda: _saved("ICO"),
    "QOI": lambda: _saved("QOI", "RGB"),
}
if features.check("webp"):
    OTHER_FORMATS["WEBP"] = lambda: _saved("WEBP")


@pytest.mark.parametrize("fmt", list(OTHER_FORMATS))
def test_formats_other_than_the_declared_ones_are_refused_unopened(tmp_path, monkeypatch, fmt):
    from PIL import EpsImagePlugin

    ghostscript = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: ghostscript.append(args))
    data = OTHER_FORMATS[fmt]()
    path = tmp_path / f"film.{fmt.lower()}"
    path.write_bytes(data)
    for source in (path, data):
        with pytest.raises(ValueError, match=f"not a {FORMATS_TEXT} file"):
            load_image(source, 32)
    assert ghostscript == []


def test_the_declared_formats_are_one_constant_shared_with_the_messages():
    assert FORMATS_TEXT == "PNG, JPEG, TIFF, BMP, GIF or DICOM"
    assert images.ACCEPTED_FORMATS == ("PNG", "JPEG", "TIFF", "BMP", "GIF", "DICOM")


@pytest.mark.parametrize("fmt", ["TGA", "PPM", "QOI"])
def test_a_pil_image_opened_from_another_format_is_refused(fmt):
    opened = Image.open(io.BytesIO(OTHER_FORMATS[fmt]()))
    assert opened.format == fmt
    with pytest.raises(ValueError, match=f"a {fmt} image; the accepted formats are {FORMATS_TEXT}"):
        load_image(opened, 32)
    # The caller's own conversion (an image made in memory has no format) is theirs to make.
    assert load_image(opened.convert("L"), 32).shape == (32, 32)


def test_a_pil_image_of_a_declared_format_and_a_phone_jpeg_are_accepted(tmp_path):
    gray = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    for fmt in ("PNG", "JPEG", "TIFF", "BMP", "GIF"):
        opened = Image.open(io.BytesIO(_saved_image(gray, fmt)))
        assert load_image(opened, 32).shape == (32, 32)
    # Phones and cameras write multi-picture JPEGs, which Pillow names MPO.
    path = tmp_path / "phone.jpg"
    gray.save(path, format="MPO", save_all=True, append_images=[gray])
    assert Image.open(path).format == "MPO"
    for source in (path, Image.open(path), path.read_bytes()):
        assert load_image(source, 32).shape == (32, 32)


def _saved_image(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


# ------------------------------------------------------------------ item 7: deep images without float64
@pytest.mark.parametrize("kind", ["png", "array", "rgb array"])
def test_a_deep_image_is_windowed_without_float64_copies(kind):
    side = 1500
    ramp = (np.add.outer(np.arange(side), np.arange(side)) * 9 + 1000).astype(np.uint16)
    source = {
        "png": lambda: _saved_image(Image.fromarray(ramp), "PNG"),
        "array": lambda: ramp,
        "rgb array": lambda: np.stack([ramp, ramp, ramp], axis=-1),
    }[kind]()
    float32_image = side * side * 4  # 9 MB
    peak, got = _peak_bytes(load_image, source, 64)
    # The float64 path made four float64 copies (8x this); Pillow's own buffers are not counted here.
    assert peak < float32_image // 2, f"{peak / MB:.1f} MB"
    values = ramp.astype(np.float64)
    expected = ((values - values.min()) / (values.max() - values.min())).astype(np.float32)
    reference = np.asarray(Image.fromarray(expected).resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=3.0))
    np.testing.assert_array_equal(got, np.clip(np.round(reference * 255.0), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("window", [{}, {"WindowCenter": 9000, "WindowWidth": 8000}])
def test_a_deep_dicom_is_windowed_without_float64_copies(window):
    side = 1500
    ramp = (np.add.outer(np.arange(side), np.arange(side)) * 9 + 1000).astype(np.uint16)
    data = _file(_dataset(side, side, bits=16, **window), ExplicitVRLittleEndian, ramp.tobytes())
    peak, got = _peak_bytes(load_image, data, 64)
    assert isinstance(got, np.ndarray)
    # The pixel data read and decoded (4.5 MB each) and a few bands; the float64 path made 34 MB or more.
    assert peak < 2 * side * side * 4, f"{peak / MB:.1f} MB"


def test_deep_images_give_the_same_pixels_from_a_path_a_pil_image_an_array_and_bytes(tmp_path):
    rng = np.random.default_rng(2)
    deep = rng.integers(200, 3800, (90, 70)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    reference = load_image(path, 24)
    for source in (Image.open(path), deep, path.read_bytes(), deep.astype(np.int32), deep.astype(np.float32)):
        np.testing.assert_array_equal(load_image(source, 24), reference)
    gray = read_gray(deep)
    assert isinstance(gray, np.ndarray) and gray.dtype == np.float32 and gray.min() == 0.0 and gray.max() == 1.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_deep_image_with_a_non_finite_value_is_refused(bad):
    array = np.ones((32, 32), np.float32)
    array[20, 5] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        read_gray(array)
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_image(Image.fromarray(array), 16)


# ------------------------------------------------------------------ item 27: paths that are not files
def test_an_image_path_that_is_not_a_regular_file_says_what_it_is(tmp_path):
    with pytest.raises(ValueError, match=rf"image {tmp_path}: is a folder, not an image file"):
        load_image(tmp_path, 32)
    with pytest.raises(ValueError, match=r"image /dev/zero: is not a regular file \(a device"):
        load_image("/dev/zero", 32)
    with pytest.raises(ValueError, match="no such file"):
        load_image(tmp_path / "missing.png", 32)
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(ValueError, match=r"loop\.png: cannot read the file"):
        load_image(loop, 32)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_given_as_an_image_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "film.png"
    os.mkfifo(fifo)
    # Opening a FIFO for reading waits for a writer: the test would hang, not fail, if it were opened.
    dicom = tmp_path / "film.dcm"
    os.mkfifo(dicom)
    with _deadline(5):
        with pytest.raises(ValueError, match=r"film.png: is not a regular file \(a device, FIFO or socket\)"):
            load_image(fifo, 32)
        with pytest.raises(ValueError, match=r"film.dcm: is not a regular file"):
            load_image(str(dicom), 32)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_swapped_in_after_the_check_is_still_not_waited_for(tmp_path, monkeypatch):
    fifo = tmp_path / "film.png"
    os.mkfifo(fifo)
    real_stat = os.stat
    regular = real_stat(__file__)
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: regular if Path(path) == fifo else real_stat(path, *a, **k))
    with _deadline(5), pytest.raises(ValueError, match="is not a regular file"):
        load_image(fifo, 32)


@contextlib.contextmanager
def _deadline(seconds: int):
    """Turns a hang (a FIFO opened for reading waits for a writer) into a failure."""

    def expire(signum, frame):
        raise TimeoutError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------ item 29: Pillow's bomb in our words
def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` px (its pixel data never come)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">L", len(body)) + kind + body + struct.pack(">L", zlib.crc32(kind + body))

    ihdr = struct.pack(">LLBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_pillow_decompression_bomb_is_refused_in_the_librarys_words(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(50_000, 50_000))
    for source, name in ((path, "bomb.png"), (path.read_bytes(), "bytes>")):
        with pytest.raises(ValueError, match="exceeds the limit of 64 megapixels") as err:
            load_image(source, 32)
        assert name in str(err.value) and "DecompressionBomb" not in str(err.value)
        assert "could be decompression bomb DOS attack" not in str(err.value)


# ------------------------------------------------------------------ colour (issue 23): three channels
def _rgb(height: int = 50, width: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)


def test_a_colour_image_gives_the_same_rgb_pixels_from_a_path_a_pil_image_an_array_and_bytes(tmp_path):
    rgb = _rgb()
    path = tmp_path / "lesion.png"
    Image.fromarray(rgb).save(path)
    reference = load_image(path, 24, 3)
    assert reference.shape == (24, 24, 3) and reference.dtype == np.uint8
    for source in (Image.open(path), rgb, path.read_bytes()):
        np.testing.assert_array_equal(load_image(source, 24, 3), reference)
    # Read as one channel, the same picture is its luma, as before colour existed.
    np.testing.assert_array_equal(load_image(path, 24), load_image(Image.fromarray(rgb).convert("L"), 24))
    assert reference.std(axis=2).mean() > 10  # the channels differ: it is colour, not gray


def test_in_colour_a_gray_image_is_replicated_and_transparency_is_composited_on_black():
    gray = _rgb()[..., 0]
    colour = load_image(gray, 24, 3)
    for c in range(3):
        np.testing.assert_array_equal(colour[..., c], load_image(gray, 24))
    deep = gray.astype(np.uint16) * 257 + 3  # 16 bit gray: windowed, then replicated
    np.testing.assert_array_equal(load_image(deep, 24, 3)[..., 1], load_image(deep, 24))
    rgba = np.concatenate([_rgb(), np.zeros((50, 60, 1), np.uint8)], axis=2)  # fully transparent
    assert load_image(rgba, 24, 3).max() == 0
    cmyk = Image.fromarray(_rgb()).convert("CMYK")
    assert load_image(cmyk, 24, 3).shape == (24, 24, 3)


def test_a_deep_colour_image_is_windowed_with_one_window_for_its_channels():
    rgb = _rgb().astype(np.float64)
    deep = (rgb * 10 + 500).astype(np.uint16)  # one range for all three channels
    got = load_image(deep, 24, 3).astype(int)
    eight_bit = load_image(((deep - deep.min()) / (deep.max() - deep.min()) * 255).round().astype(np.uint8), 24, 3)
    assert np.abs(got - eight_bit).max() <= 2  # hues kept: no channel stretched on its own
    floats = load_image((rgb / 255).astype(np.float32), 24, 3).astype(int)
    assert np.abs(floats - load_image(_rgb(), 24, 3).astype(int)).max() <= 1


def test_a_deep_colour_image_is_built_one_channel_at_a_time_without_float64_copies():
    side = 1500
    ramp = (np.add.outer(np.arange(side), np.arange(side)) * 9 + 1000).astype(np.uint16)
    source = np.stack([ramp, ramp // 2, ramp // 3], axis=-1)
    peak, got = _peak_bytes(load_image, source, 64, 3)
    assert isinstance(got, np.ndarray) and got.shape == (64, 64, 3), got
    assert peak < side * side * 4 // 2, f"{peak / MB:.1f} MB"  # under one float32 plane
    assert got[..., 0].mean() > got[..., 1].mean() > got[..., 2].mean()


@pytest.mark.parametrize("bits", [8, 16])
def test_a_colour_dicom_is_read_in_colour_and_as_its_luma_in_gray(bits):
    rgb = _rgb(48, 64)
    pixels = rgb.astype(np.uint16) * 257 if bits == 16 else rgb
    data = _file(_dataset(48, 64, bits=bits, samples=3), ExplicitVRLittleEndian, pixels.tobytes())
    colour = load_image(data, 32, 3).astype(int)
    assert colour.shape == (32, 32, 3)
    assert np.abs(colour - load_image(rgb, 32, 3).astype(int)).max() <= 1
    assert load_image(data, 32).shape == (32, 32)


def test_channels_other_than_one_or_three_are_refused():
    for channels in (0, 2, 4):
        with pytest.raises(ValueError, match="channels must be 1 or 3"):
            load_image(_rgb(), 16, channels)


def test_a_colour_bomb_is_refused_before_decoding_as_a_gray_one_is(tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (9000, 8000)).save(big)  # 72 megapixels, a few hundred KB of PNG
    for channels in (1, 3):
        with pytest.raises(ValueError, match="exceeds the limit of 64 megapixels"):
            load_image(big, 32, channels)
