"""The decoded-image cache for folders larger than memory: built in place by worker
processes, resumed after an interruption, read batch by batch through MappedImages
with resident memory that does not grow with the file, and training from it equal to
training from memory."""

import errno
import logging
import os
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


# ------------------------------------------------------------------ issue 21
@pytest.fixture
def fusion_log(caplog):
    """Records of the fusion logger (the CLIs stop it propagating: listen on it directly)."""
    logger = logging.getLogger("fusion")
    logger.addHandler(caplog.handler)
    with caplog.at_level(logging.INFO, logger="fusion"):
        yield caplog
    logger.removeHandler(caplog.handler)


def _warnings(log) -> str:
    return "\n".join(r.getMessage() for r in log.records if r.levelno >= logging.WARNING)


def _tamper_constant(npy, meta):
    array = np.load(npy)
    np.save(npy, np.full_like(array, 7))


def _tamper_one_byte(npy, meta):
    array = np.lib.format.open_memmap(npy, mode="r+")
    array[45, 3, 3] ^= 1
    array.flush()


def _tamper_no_checksum(npy, meta):
    import json

    record = json.loads(meta.read_text())
    record = {k: v for k, v in record.items() if k in ("n", "size", "errors")}  # as an older fusion wrote it
    meta.write_text(json.dumps(record))
    _tamper_constant(npy, meta)


@pytest.mark.parametrize("memory_map", [False, True])
@pytest.mark.parametrize("tamper", [_tamper_constant, _tamper_one_byte, _tamper_no_checksum])
def test_a_cache_entry_that_does_not_match_its_checksum_is_rebuilt_with_a_warning(
    folder_dataset, tmp_path, fusion_log, tamper, memory_map
):
    cache = tmp_path / "c"
    plain = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=False)
    load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache)
    (npy,) = cache.glob("images-*.npy")
    tamper(npy, npy.with_suffix(".json"))
    fusion_log.clear()
    again = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache, memory_map=memory_map)
    assert np.array_equal(np.asarray(again.images), plain.images)
    assert npy.name in _warnings(fusion_log) and "rebuilt" in _warnings(fusion_log)
    fusion_log.clear()
    load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache, memory_map=memory_map)
    assert _warnings(fusion_log) == ""  # the rebuilt entry verifies


def _interrupted_build(folder_dataset, cache, monkeypatch):
    """A build stopped by Ctrl-C after 40 films (two chunks of 16 on disk)."""
    import fusion.data.loaders as loaders

    real, calls = loaders.load_image, []

    def stop_after_40(path, size):
        if len(calls) == 40:
            raise KeyboardInterrupt
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(loaders, "load_image", stop_after_40)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache, cache_workers=1)
    monkeypatch.setattr(loaders, "load_image", real)
    (done,) = cache.glob("*.done")
    return done


@pytest.mark.parametrize(
    "forge",
    [
        lambda size: b"\x01" * size,  # every film marked written: the array is all zeros
        lambda size: b"\xff" * size,
        lambda size: bytes(np.random.default_rng(0).integers(1, 256, size, dtype=np.uint8)),
        lambda size: b"\x01" * (size - 1),  # the wrong length
        lambda size: b"\x01" * (size + 1),
    ],
)
def test_only_the_exact_done_marker_counts_when_a_build_resumes(
    folder_dataset, tmp_path, small_chunks, monkeypatch, forge
):
    cache = tmp_path / "c"
    done = _interrupted_build(folder_dataset, cache, monkeypatch)
    done.write_bytes(forge(done.stat().st_size))
    (npy,) = cache.glob("*.npy")
    array = np.lib.format.open_memmap(npy, mode="r+")
    array[:] = 0  # what an interrupted build leaves where nothing was written
    array.flush()
    del array
    resumed = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache, cache_workers=1)
    plain = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=False)
    assert np.array_equal(resumed.images, plain.images)


def _cannot_be_written(tmp_path):
    """A cache folder that cannot be created, even by root: its parent is a file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker / "cache"


def test_memory_map_always_with_a_cache_folder_that_cannot_be_written_is_refused(folder_dataset, tmp_path):
    cache = _cannot_be_written(tmp_path)
    with pytest.raises(ValueError, match=r"memory_map") as err:
        load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache, memory_map=True)
    assert str(cache) in str(err.value) and "\n" not in str(err.value)


def test_memory_map_always_names_the_flag_and_the_folder_on_the_command_line(folder_dataset, tmp_path, capsys):
    from fusion.train import main

    cache = _cannot_be_written(tmp_path)
    flags = ["--data", str(folder_dataset), "--schema", "synthetic", "--image-size", "24", "--quiet"]
    code = main([*flags, "--cache-dir", str(cache), "--memory-map", "always", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and str(cache) in err and "--memory-map" in err and "Traceback" not in err


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_memory_map_always_with_a_read_only_cache_folder_is_refused(folder_dataset, tmp_path):
    cache = tmp_path / "ro"
    cache.mkdir(mode=0o555)
    with pytest.raises(ValueError, match=r"memory_map"):
        load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache, memory_map=True)


def test_a_cache_folder_that_cannot_be_written_falls_back_to_memory_with_a_warning(
    folder_dataset, tmp_path, fusion_log
):
    cache = _cannot_be_written(tmp_path)
    ds = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache)
    plain = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=False)
    assert np.array_equal(ds.images, plain.images)
    assert str(cache) in _warnings(fusion_log) and "memory" in _warnings(fusion_log)


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _full_when_created(real):
    def open_memmap(path, mode="r+", *args, **kwargs):
        if mode == "w+":
            _full_disk()
        return real(path, mode, *args, **kwargs)

    return open_memmap


FULL_DISK_AT = {
    "the array": lambda mp: mp.setattr(np.lib.format, "open_memmap", _full_when_created(np.lib.format.open_memmap)),
    "the rows": lambda mp: mp.setattr(cache_module, "_decode_rows", _full_disk),
    "the record": lambda mp: mp.setattr(cache_module, "atomic_write", _full_disk),
}


@pytest.mark.parametrize("where", sorted(FULL_DISK_AT))
def test_a_full_disk_while_the_cache_is_built_falls_back_to_memory_with_a_warning(
    folder_dataset, tmp_path, monkeypatch, fusion_log, where
):
    plain = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=False)
    cache = tmp_path / "c"
    FULL_DISK_AT[where](monkeypatch)
    ds = load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache, cache_workers=1)
    assert np.array_equal(ds.images, plain.images) and [s["file"] for s in ds.skipped] == []
    assert str(cache) in _warnings(fusion_log) and "No space left on device" in _warnings(fusion_log)
    assert not [p for p in cache.iterdir() if p.suffix in (".npy", ".done", ".json")]  # the space is given back
    with pytest.raises(ValueError, match=r"memory_map") as err:
        load_dataset(folder_dataset, "synthetic", image_size=24, cache_dir=cache, cache_workers=1, memory_map=True)
    assert str(cache) in str(err.value) and "No space left on device" in str(err.value)
