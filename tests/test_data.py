from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusion.data import load_dataset, load_image, read_table
from fusion.data.images import read_gray
from fusion.data.splits import grouped_split
from tests.conftest import SHARED_DATA, write_png


def test_synthetic_dataset_in_memory():
    ds = load_dataset(None, image_size=32, synthetic_n=50, seed=1)
    assert len(ds) == 50 and ds.modalities == {"image", "tabular"}
    assert ds.images.shape == (50, 32, 32) and ds.records.shape[1] == 9
    assert ds.skipped == []


def test_grouped_split_never_shares_a_patient():
    ds = load_dataset(None, image_size=16, synthetic_n=400, seed=0)
    parts = ds.split(seed=5)
    groups = {k: set(v.groups) for k, v in parts.items()}
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(len(v) for v in parts.values()) == 400
    for part in parts.values():  # stratified: every class in every split
        assert set(part.labels) == {0, 1, 2}
    assert 0.1 < len(parts["test"]) / 400 < 0.2


def test_grouped_split_is_seeded():
    labels = np.repeat([0, 1, 2], 40)
    groups = np.arange(120) // 2
    a, b = grouped_split(labels, groups, seed=1), grouped_split(labels, groups, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = grouped_split(labels, groups, seed=2)
    assert not np.array_equal(a["test"], c["test"])


def test_folder_dataset_loads(folder_dataset):
    ds = load_dataset(folder_dataset, "synthetic", image_size=24)
    assert len(ds) == 90 and ds.images.shape == (90, 24, 24)
    assert ds.skipped == []


def test_bad_rows_and_images_are_skipped_and_reported(folder_dataset):
    table = read_table(folder_dataset / "metadata.csv")
    table.loc[0, "age"] = "abc"
    table.loc[1, "spo2"] = "140"
    table.loc[2, "image"] = "missing.png"
    (folder_dataset / "images" / table.loc[3, "image"]).write_bytes(b"not an image at all")
    png = (folder_dataset / "images" / table.loc[4, "image"]).read_bytes()
    (folder_dataset / "images" / table.loc[4, "image"]).write_bytes(png[: len(png) // 2])  # truncated
    table.loc[5, "diagnosis"] = "Tuberculosis"
    table.loc[6, "image"] = table.loc[7, "image"]  # one file used twice
    table.to_csv(folder_dataset / "metadata.csv", index=False)
    ds = load_dataset(folder_dataset, "synthetic", image_size=24)
    reasons = {s["row"]: s for s in ds.skipped}
    assert set(reasons) == {0, 1, 2, 3, 4, 5, 7}
    assert "'age' must be a number in [0, 120] years; got 'abc'" in reasons[0]["reason"]
    assert "'spo2'" in reasons[1]["reason"] and "140" in reasons[1]["reason"]
    assert "no such file" in reasons[2]["reason"] and reasons[2]["file"] == "missing.png"
    assert "not a readable image" in reasons[3]["reason"]
    assert "not a readable image" in reasons[4]["reason"]
    assert "unknown value 'Tuberculosis'" in reasons[5]["reason"]
    assert "duplicate image" in reasons[7]["reason"]
    assert len(ds) == 90 - 7


def test_folder_without_schema_says_how_to_give_one(folder_dataset):
    with pytest.raises(ValueError, match=r"data\.schema"):
        load_dataset(folder_dataset)


def _gray(h=40, w=60):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16", "P"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_formats_become_one_channel_at_model_size(tmp_path, mode, fmt):
    base = Image.fromarray(_gray())
    if mode == "I;16":
        if fmt == "JPEG":
            pytest.skip("JPEG has no 16-bit mode")
        image = Image.fromarray(np.asarray(base).astype(np.uint16) * 257)
    elif mode == "RGBA":
        if fmt == "JPEG":
            pytest.skip("JPEG has no alpha")
        image = base.convert("RGBA")
    elif mode == "P" and fmt == "JPEG":
        pytest.skip("JPEG has no palette mode")
    else:
        image = base.convert(mode)
    path = tmp_path / f"x.{fmt.lower()}"
    image.save(path, format=fmt)
    out = load_image(path, 32)
    assert out.shape == (32, 32) and out.dtype == np.uint8
    reference = load_image(base, 32).astype(int)
    tolerance = 12 if fmt == "JPEG" else 2  # JPEG is lossy
    assert np.abs(out.astype(int) - reference).mean() < tolerance


def test_path_pil_array_and_bytes_give_the_same_pixels(tmp_path):
    array = _gray()
    path = write_png(tmp_path / "a.png", array)
    ref = load_image(path, 28)
    np.testing.assert_array_equal(load_image(Image.open(path), 28), ref)
    np.testing.assert_array_equal(load_image(array, 28), ref)
    np.testing.assert_array_equal(load_image(path.read_bytes(), 28), ref)
    np.testing.assert_array_equal(load_image(str(path), 28), ref)


def test_sixteen_bit_and_float_arrays_are_windowed():
    ramp = np.linspace(1000, 4000, 64 * 64).reshape(64, 64)
    out16 = load_image(ramp.astype(np.uint16), 16)
    assert out16.min() < 10 and out16.max() > 245  # 12-bit data stretched to the full range
    outf = load_image(ramp / 4000.0 * 0.5, 16)  # floats already in [0, 1] are kept as they are
    assert outf.max() <= 128


@pytest.mark.parametrize(
    "source, match",
    [
        (b"\x89PNG\r\n\x1a\n garbage", "not a readable image"),
        (np.zeros((0, 5), np.uint8), "zero size"),
        (np.zeros((4, 4, 7), np.uint8), "expected an array of shape"),
        (np.full((16, 16), np.nan), "NaN"),
        (np.zeros((1, 1), np.uint8), "too small"),
        (Path("/nonexistent/x.png"), "no such file"),
    ],
)
def test_unreadable_images_raise_value_error_naming_them(source, match):
    with pytest.raises(ValueError, match=match):
        read_gray(source)


def test_wrong_image_type_is_type_error():
    with pytest.raises(TypeError, match="path, PIL image, numpy array or bytes"):
        read_gray(12345)


def test_npz_in_medmnist_layout_keeps_its_splits(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mini.npz"
    np.savez(
        path,
        train_images=rng.integers(0, 255, (30, 28, 28), dtype=np.uint8),
        train_labels=rng.integers(0, 2, (30, 1)),
        val_images=rng.integers(0, 255, (10, 28, 28), dtype=np.uint8),
        val_labels=rng.integers(0, 2, (10, 1)),
    )
    ds = load_dataset(path, image_size=32)
    assert ds.modalities == {"image"} and ds.images.shape == (40, 32, 32)
    parts = ds.split()
    assert set(parts) == {"train", "val"} and len(parts["train"]) == 30 and len(parts["val"]) == 10
    assert ds.classes == ("0", "1")


def test_npz_without_images_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(ValueError, match="train_images"):
        load_dataset(path)


@pytest.mark.skipif(
    not (SHARED_DATA / "pneumoniamnist").is_dir(), reason="../shared/data/pneumoniamnist is not on this machine"
)
def test_pneumoniamnist_loads():
    ds = load_dataset(SHARED_DATA / "pneumoniamnist" / "pneumoniamnist_trainval.npz", "pneumoniamnist", image_size=28)
    assert len(ds.splits["train"]) == 4707 and len(ds.splits["val"]) == 524
    assert ds.classes == ("normal", "pneumonia")


def test_grouped_kfold_covers_every_row_once_without_sharing_patients():
    from fusion.data import grouped_kfold

    labels = np.repeat([0, 1, 2], 30)
    groups = np.arange(90) // 3
    folds = grouped_kfold(labels, groups, k=5, seed=0)
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen.tolist()) == list(range(90))
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
    with pytest.raises(ValueError, match="cannot make 5 folds"):
        grouped_kfold(labels[:6], groups[:6], k=5)


def test_decoded_images_are_cached_by_file_mtime_and_size(folder_dataset, tmp_path, monkeypatch):
    import fusion.data.loaders as data

    calls = []
    real = data.load_image
    monkeypatch.setattr(data, "load_image", lambda path, size: calls.append(path) or real(path, size))
    cache = tmp_path / "cache"
    before = sorted(p.name for p in folder_dataset.rglob("*"))
    first = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache)
    assert len(calls) == 90 and list(cache.glob("images-*.npy"))
    calls.clear()
    second = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache)
    assert calls == [] and np.array_equal(first.images, second.images)
    assert sorted(p.name for p in folder_dataset.rglob("*")) == before  # nothing written beside the data
    # Replacing one image changes the key: decoded again, new pixels used.
    name = first.files[0]
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(folder_dataset / "images" / name)
    third = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache)
    assert len(calls) == 90 and third.images[0].min() == 255
    calls.clear()
    load_dataset(folder_dataset, "synthetic", image_size=32, cache_dir=cache)  # another size: its own entry
    assert len(calls) == 90


def test_unreadable_images_are_cached_as_failures_and_cache_can_be_off(folder_dataset, tmp_path):
    (folder_dataset / "images" / "P00000_0.png").write_bytes(b"junk")
    for cache in (tmp_path / "c", False):
        ds = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache)
        assert [s["file"] for s in ds.skipped] == ["P00000_0.png"] and len(ds) == 89
    again = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=tmp_path / "c")
    assert [s["file"] for s in again.skipped] == ["P00000_0.png"]


# ------------------------------------------------------------------ issue 10
def _film(size: int = 96, seed: int = 0) -> np.ndarray:
    """An asymmetric picture, so a turned copy differs from the upright one."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (size, size), dtype=np.uint8)
    pixels[: size // 3, : size // 2] = 230  # a bright block top-left
    return pixels


def test_exif_orientation_is_applied(tmp_path):
    upright = _film()
    stored = Image.fromarray(np.rot90(upright, k=1).copy())  # stored turned left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    path = tmp_path / "sideways.jpg"
    stored.save(path, quality=100, exif=exif)
    reference = load_image(Image.fromarray(upright), 64).astype(int)
    got = load_image(path, 64).astype(int)
    assert np.abs(got - reference).mean() < 6  # JPEG noise only
    sideways = load_image(stored, 64).astype(int)
    assert np.abs(sideways - reference).mean() > 30  # the test would notice a turn
    # A PIL image opened from the file and its bytes are turned the same way.
    np.testing.assert_array_equal(load_image(Image.open(path), 64), got)
    np.testing.assert_array_equal(load_image(path.read_bytes(), 64), got)


def test_path_pil_array_and_bytes_of_one_large_jpeg_give_identical_pixels(tmp_path):
    rng = np.random.default_rng(1)
    pixels = (np.add.outer(np.arange(1024), np.arange(1024)) // 8 % 256).astype(np.uint8)
    pixels = np.clip(pixels.astype(int) + rng.integers(-20, 20, pixels.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    reference = load_image(path, 64)
    decoded = Image.open(path)
    for source in (str(path), decoded, np.asarray(decoded), path.read_bytes()):
        np.testing.assert_array_equal(load_image(source, 64), reference)


def test_float32_image_near_its_limits_is_windowed_not_nan():
    array = np.zeros((32, 32), np.float32)
    array[:16] = -3e38
    array[16:] = 3e38
    gray = read_gray(array)
    assert np.isfinite(gray).all() and gray.min() == 0.0 and gray.max() == 1.0
    out = load_image(array, 16)
    assert out[:6].max() == 0 and out[-6:].min() == 255


def test_large_non_image_file_is_refused_without_reading_it(tmp_path, monkeypatch):
    import fusion.data.images as images

    monkeypatch.setattr(images, "MAX_FILE_BYTES", 1024 * 1024)
    path = tmp_path / "huge.png"
    with open(path, "wb") as fh:
        fh.truncate(8 * 1024 * 1024)  # sparse: 8 MB of zeros
    read = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or b"")
    with pytest.raises(ValueError, match="over the limit"):
        read_gray(path)
    assert read == []
    small = tmp_path / "junk.png"
    small.write_bytes(b"not an image at all" * 100)
    with pytest.raises(ValueError, match="not a readable image"):
        read_gray(small)
    assert read == []  # refused from its header


def test_duplicated_csv_column_is_refused(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_text("diagnosis,age,age\nCOVID-19,50,60\n")
    with pytest.raises(ValueError, match=r"\['age'\] appear more than once"):
        read_table(path)


# ------------------------------------------------------------------ issue 21
def _point_rows_at(folder: Path, targets: list[str]) -> None:
    """The first rows' image column set to ``targets``."""
    table = read_table(folder / "metadata.csv")
    table.loc[: len(targets) - 1, "image"] = targets
    table.to_csv(folder / "metadata.csv", index=False)


def _spy_on_opened(monkeypatch) -> list[Path]:
    """Every file the loaders hand to load_image, resolved."""
    import fusion.data.loaders as loaders

    opened, real = [], loaders.load_image
    monkeypatch.setattr(
        loaders, "load_image", lambda path, size: opened.append(Path(path).resolve()) or real(path, size)
    )
    return opened


def _outside_targets(folder: Path, tmp_path: Path) -> list[str]:
    """Image paths that all lead out of ``folder``: climbing, absolute, through a symlink."""
    outside = write_png(tmp_path / "outside.png", np.full((32, 32), 200, np.uint8))
    (folder / "images" / "link.png").symlink_to(outside)
    (folder / "images" / "up").symlink_to(tmp_path)
    return [
        "../../../../../../../../etc/passwd",
        "/etc/hostname",
        str(outside),
        "../../outside.png",
        "sub/../../../outside.png",
        "link.png",
        "up/outside.png",
    ]


@pytest.mark.parametrize("cache", ["on", "off"])
def test_image_paths_that_resolve_outside_the_dataset_folder_are_skipped_and_never_opened(
    folder_dataset, tmp_path, monkeypatch, cache
):
    targets = _outside_targets(folder_dataset, tmp_path)
    _point_rows_at(folder_dataset, targets)
    opened = _spy_on_opened(monkeypatch)
    with pytest.warns(UserWarning, match=r"7 row\(s\) name an image outside the dataset folder.*allow_outside = true"):
        ds = load_dataset(
            folder_dataset, "synthetic", image_size=24, cache_dir=tmp_path / "cache" if cache == "on" else False
        )
    assert len(ds) == 90 - len(targets) and len(opened) == 90 - len(targets)
    assert all(p.is_relative_to(folder_dataset.resolve()) for p in opened)
    reasons = {s["file"]: s["reason"] for s in ds.skipped}
    assert set(reasons) == set(targets)
    assert all("outside the dataset folder" in r and "allow_outside" in r for r in reasons.values())


def test_allow_outside_in_the_schema_reads_images_kept_elsewhere(folder_dataset, tmp_path, monkeypatch):
    # The use case: the films live on another disk; the dataset's image folder links there.
    elsewhere = tmp_path / "elsewhere"
    (folder_dataset / "images").rename(elsewhere)
    (folder_dataset / "images").symlink_to(elsewhere)
    with pytest.raises(ValueError, match=r"image folder 'images'.*outside the dataset folder.*allow_outside"):
        load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=False)
    text = (Path(__file__).resolve().parents[1] / "data" / "schema" / "synthetic.toml").read_text()
    opted = tmp_path / "schema.toml"
    opted.write_text(text.replace('folder = "images"', 'folder = "images"\nallow_outside = true'))
    ds = load_dataset(folder_dataset, opted, image_size=24, cache_dir=False)
    assert len(ds) == 90 and not ds.skipped


def test_skipped_rows_hold_plain_numbers(folder_dataset):
    table = read_table(folder_dataset / "metadata.csv")
    table.loc[1, "image"] = table.loc[0, "image"]  # a duplicated image
    table.loc[2, "image"] = "absent.png"  # an unreadable one
    table.loc[3, "age"] = "abc"  # a bad value
    table.to_csv(folder_dataset / "metadata.csv", index=False)
    ds = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=False)
    assert [s["row"] for s in ds.skipped] == [1, 2, 3]
    assert all(type(s["row"]) is int for s in ds.skipped) and "np." not in repr(ds.skipped)


@pytest.mark.parametrize("sep", [";", "\t"])
def test_semicolon_and_tab_separated_csvs_read_like_comma_separated_ones(folder_dataset, sep):
    plain = load_dataset(folder_dataset, "synthetic", modalities=("tabular",))
    read_table(folder_dataset / "metadata.csv").to_csv(folder_dataset / "metadata.csv", sep=sep, index=False)
    other = load_dataset(folder_dataset, "synthetic", modalities=("tabular",))
    assert np.array_equal(other.labels, plain.labels) and other.records.equals(plain.records)


@pytest.mark.parametrize("end", ["\r", "\r\n"])
def test_a_semicolon_csv_with_old_mac_or_windows_line_ends_is_read(tmp_path, end):
    path = tmp_path / "metadata.csv"
    path.write_bytes(end.join(["diagnosis;age", "COVID-19;50", "normal;3", ""]).encode())
    table = read_table(path)
    assert list(table.columns) == ["diagnosis", "age"] and table["age"].tolist() == ["50", "3"]


def test_a_utf8_csv_with_a_byte_order_mark_reads_its_first_column(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_bytes("\ufeffdiagnosis,age\nCOVID-19,50\n".encode())
    assert list(read_table(path).columns) == ["diagnosis", "age"]


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "not a text CSV"),
        ("diagnosis,age\nCOVID-19,50\n".encode("utf-16"), "UTF-16"),
        ("diagnosis,age\nCOVID-19,50\nnormal,caf\xe9\n".encode("latin-1"), r"not UTF-8.*line 3"),
        (b"diagnosis,age\nCOVID-19,50\nnormal,3,4,5\n", r"line 3.*4 fields.*header has 2"),
        (b'diagnosis,age\nCOVID-19,"50\n', "quote"),
        (b"diagnosis;age,sex\tx\n", "separator"),
    ],
)
def test_csv_read_errors_name_the_file_and_the_cause(tmp_path, content, match):
    path = tmp_path / "metadata.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as err:
        read_table(path)
    assert str(path) in str(err.value) and len(str(err.value)) < 400


def test_a_wide_csv_warning_names_a_few_columns_and_counts_the_rest(folder_dataset):
    lines = (folder_dataset / "metadata.csv").read_text().splitlines()[:4]  # the header and 3 rows
    extra = [f"extra_{i}" for i in range(10_000)] + ["x" * 1000]
    lines = [lines[0] + "," + ",".join(extra)] + [line + ",1" * len(extra) for line in lines[1:]]
    (folder_dataset / "metadata.csv").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"not declared") as caught:
        ds = load_dataset(folder_dataset, "synthetic", modalities=("tabular",))
    assert len(ds) == 3
    message = str(next(w.message for w in caught if "not declared" in str(w.message)))
    assert len(message) < 1000 and "and 9,996 more" in message and "extra_0" in message


def test_a_long_repeated_header_list_is_cut(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_text(",".join(["age"] * 2 + [f"c{i}" for i in range(3000)] * 2) + "\n")
    with pytest.raises(ValueError, match=r"and 2,996 more") as err:
        read_table(path)
    assert len(str(err.value)) < 1000


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array(["normal", "pneumonia"] * 5), r"train_labels.*text \(<U9\).*integer"),
        (np.array([0.0, 1.0] * 5), r"train_labels.*float64.*integer"),
        (np.array([True, False] * 5), r"train_labels.*bool.*integer"),
    ],
)
def test_npz_labels_that_are_not_integers_are_refused_naming_file_and_key(tmp_path, labels, match):
    path = _npz(tmp_path / "mini.npz", train_images=np.zeros((10, 28, 28), np.uint8), train_labels=labels)
    with pytest.raises(ValueError, match=match) as err:
        load_dataset(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("key", ["train_images", "train_labels"])
def test_npz_object_arrays_are_refused_naming_file_and_key_never_unpickled(tmp_path, key, monkeypatch):
    arrays = {"train_images": np.zeros((4, 28, 28), np.uint8), "train_labels": np.array([0, 1, 0, 1])}
    arrays[key] = np.array([arrays[key][i] for i in range(4)] + [None], dtype=object)[:4]
    path = _npz(tmp_path / "mini.npz", **arrays)
    monkeypatch.setattr("pickle.loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(ValueError, match=rf"{key}.*Python objects.*never loaded") as err:
        load_dataset(path)
    assert str(path) in str(err.value) and "allow_pickle" not in str(err.value)


def test_npz_text_labels_are_read_through_a_schema_that_maps_them(tmp_path):
    path = _npz(
        tmp_path / "mini.npz",
        train_images=np.zeros((10, 28, 28), np.uint8),
        train_labels=np.array(["0", "1"] * 5),
    )
    ds = load_dataset(path, "pneumoniamnist")
    assert ds.classes == ("normal", "pneumonia") and ds.labels.tolist() == [0, 1] * 5


def test_npz_label_outside_the_schema_names_file_key_and_row(tmp_path):
    path = _npz(
        tmp_path / "mini.npz", train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.array([0, 1, 7, 0])
    )
    with pytest.raises(ValueError, match=r"mini.npz: train_labels\[2\]: .*unknown value 7"):
        load_dataset(path, "pneumoniamnist")


@pytest.mark.parametrize("kind", ["text", "npy", "pickle"])
def test_a_file_named_npz_that_is_no_npz_archive_is_refused_naming_it(tmp_path, kind):
    import pickle

    path = tmp_path / "mini.npz"
    if kind == "text":
        path.write_text("train_images,train_labels\n")
    elif kind == "npy":
        np.save(tmp_path / "x.npy", np.zeros((4, 28, 28), np.uint8))
        (tmp_path / "x.npy").rename(path)
    else:
        path.write_bytes(pickle.dumps({"train_images": [1]}))
    with pytest.raises(ValueError, match=r"mini.npz: not an .npz archive") as err:
        load_dataset(path)
    assert "pickle" not in str(err.value)


def test_npz_images_of_the_wrong_shape_are_refused_naming_file_and_key(tmp_path):
    path = _npz(tmp_path / "mini.npz", train_images=np.zeros((4, 784), np.uint8), train_labels=np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"mini.npz: train_images is uint8 of shape \(4, 784\).*\(n, height, width\)"):
        load_dataset(path)
