"""The decoded-image cache for folders larger than memory: built in place by worker
processes, resumed after an interruption, read batch by batch through MappedImages
with resident memory that does not grow with the file, and training from it equal to
training from memory."""

import logging
import pickle
import sys

import numpy as np
import pytest

import fusion.data.cache as cache_module
from fusion import Config, FusionClassifier, load_dataset
from fusion.data.cache import MappedImages


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 16 films, so 90 films make several units of work."""
    monkeypatch.setattr(cache_module, "CHUNK", 16)


def test_two_workers_build_the_same_cache_as_one_process(folder_dataset, tmp_path, small_chunks):
    plain = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=False)
    built = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=tmp_path / "c", cache_workers=2)
    assert isinstance(built.images, np.ndarray) and np.array_equal(built.images, plain.images)
    mapped = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=tmp_path / "c", memory_map=True)
    assert isinstance(mapped.images, MappedImages) and np.array_equal(np.asarray(mapped.images), plain.images)
    assert not list((tmp_path / "c").glob("*.done"))  # complete: no progress file left


def test_an_interrupted_build_resumes_where_it_stopped(folder_dataset, tmp_path, small_chunks, monkeypatch):
    import fusion.data.loaders as loaders

    real, calls = loaders.load_image, []

    def stop_after_40(path, size):
        if len(calls) == 40:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third chunk
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(loaders, "load_image", stop_after_40)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=tmp_path / "c", cache_workers=1)
    assert list((tmp_path / "c").glob("*.done")) and not list((tmp_path / "c").glob("*.json"))
    calls.clear()
    monkeypatch.setattr(loaders, "load_image", lambda path, size: calls.append(path) or real(path, size))
    resumed = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=tmp_path / "c", cache_workers=1)
    assert len(calls) == 90 - 32  # two whole chunks were kept; the interrupted one is redone
    plain = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=False)
    assert np.array_equal(resumed.images, plain.images)


def test_progress_is_logged_with_the_rate(folder_dataset, tmp_path, caplog):
    logger = logging.getLogger("fusion")  # the CLIs stop it propagating: listen on it directly
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="fusion"):
            load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=tmp_path / "c")
    finally:
        logger.removeHandler(caplog.handler)
    assert any(
        "image cache (24 px): 90/90 in" in r.getMessage() and "films/s" in r.getMessage() for r in caplog.records
    )


def _npy(path, n=40, side=16):
    array = np.arange(n * side * side, dtype=np.uint32).reshape(n, side, side).astype(np.uint8)
    np.save(path, array)
    return array


def test_mapped_images_index_like_the_array(tmp_path):
    array = _npy(tmp_path / "a.npy")
    mapped = MappedImages(tmp_path / "a.npy")
    assert mapped.shape == array.shape and len(mapped) == 40 and mapped.size == array.size
    assert np.array_equal(mapped[3], array[3]) and np.array_equal(mapped[-1], array[-1])
    assert np.array_equal(mapped[5:9], array[5:9]) and np.array_equal(mapped[::7], array[::7])
    index = np.array([9, 2, 9, 30])  # unsorted, repeated: read in file order, returned as asked
    assert np.array_equal(mapped[index], array[index])
    part = mapped.take(np.array([30, 1, 4])).take([2, 0])  # a split of a split
    part.prefetch([1, 0])  # a hint: changes nothing read
    assert np.array_equal(np.asarray(part), array[[4, 30]]) and part.shape == (2, 16, 16)
    again = pickle.loads(pickle.dumps(part))  # reopens the file, holds the same rows
    assert np.array_equal(np.asarray(again), array[[4, 30]])
    assert np.array_equal(np.concatenate(list(mapped)).reshape(array.shape), array)
    with pytest.raises(IndexError):
        mapped[40]
    with pytest.raises(TypeError, match="indexed by rows only"):
        mapped[0, 0]
    np.save(tmp_path / "b.npy", np.zeros((4, 8, 9), np.uint8))
    with pytest.raises(ValueError, match=r"b\.npy.*square images.*\(4, 8, 9\)"):
        MappedImages(tmp_path / "b.npy")


def _resident_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads resident memory from /proc (Linux)")
def test_reading_every_row_keeps_resident_memory_flat(tmp_path):
    """64 MB on disk read in batches of 32 rows: the process stays within a few MB of
    where it started; the plain memory map it wraps takes in the whole file."""
    path = tmp_path / "big.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(1024, 256, 256))[:] = 7
    mapped = MappedImages(path)
    order = np.random.default_rng(0).permutation(len(mapped))
    before, total = _resident_mb(), 0
    for start in range(0, len(order), 32):
        total += int(mapped[order[start : start + 32]].sum(dtype=np.int64))
    grown = _resident_mb() - before
    assert total == 7 * 1024 * 256 * 256 and grown < 16, grown
    plain = np.load(path, mmap_mode="r")
    before = _resident_mb()
    for start in range(0, len(order), 32):
        plain[np.sort(order[start : start + 32])].sum()
    assert _resident_mb() - before > 48  # the control: without releasing, the file moves in


def test_training_from_the_disk_equals_training_from_memory(folder_dataset, tmp_path):
    cfg = Config(modalities=("image", "tabular"))
    cfg.image.image_size, cfg.train.epochs = 32, 1
    runs = {}
    for mode in (False, True):
        ds = load_dataset(folder_dataset, "synthetic", image_size=32, cache_dir=tmp_path / "c", memory_map=mode)
        parts = ds.split(seed=0)
        assert isinstance(parts["train"].images, MappedImages) == mode  # splits stay on disk
        clf = FusionClassifier(cfg).fit(parts["train"], parts["val"])
        runs[mode] = (clf.history_["history"], clf.predict_dataset(parts["test"]))
    assert [h["val_loss"] for h in runs[True][0]] == [h["val_loss"] for h in runs[False][0]]
    assert np.array_equal(runs[True][1], runs[False][1])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cache-workers", "0"], "--cache-workers: must be a whole number of at least 1; got '0'"),
        (["--memory-map", "sometimes"], "--memory-map: invalid choice: 'sometimes'"),
    ],
)
def test_cache_flags_refuse_bad_values(flags, message, capsys):
    from fusion.train import main

    with pytest.raises(SystemExit):
        main(["--quiet", *flags])
    assert message in capsys.readouterr().err
