"""A cache of decoded images, so each X-ray is decoded and resized once, not every run.

Decoding a large PNG or JPEG costs milliseconds; reading the same picture, already at
model size, from a uint8 array on disk costs microseconds. A dataset's decoded images
are stored as one ``.npy`` array per (file list, image size, channels), keyed by every
file's path, modification time and size, so a changed or replaced file changes the key
and is decoded afresh. Gray films are rows (S, S), colour images rows (S, S, 3).
Entries live in a user cache folder (the loaders' ``cache_dir``, ``$FUSION_CACHE_DIR``,
or ``$XDG_CACHE_HOME/fusion``, default ``~/.cache/fusion``), never beside the data,
which may be read-only.

The array is written in place on disk, row by row, by worker processes, so a cache
can be far larger than memory: 60,000 films at 224 px are 3 GB. Progress is kept in a
``.done`` file beside it: each film's row digest (BLAKE2b, 16 bytes) once its row is
written, so an interrupted build resumes where it stopped and a row counts as done only
when the array holds exactly what was written (a ``.done`` of any other bytes, or of
the wrong length, counts for nothing). The ``.json`` written last marks the entry
complete and holds a checksum of the array (over its row digests), verified each time
the entry is opened: an entry changed after it was written is rebuilt, with a warning.
Large entries are read through :class:`MappedImages`, which keeps only the rows being
read in memory.

A cache that cannot be written (a read-only folder, a full disk) costs only speed: the
films are decoded into memory instead, with a warning naming the folder and the
reason, unless ``memory_map=True`` asked for them to stay on disk; then it is an error.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import mmap
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.errors import ConfigError
from fusion.persistence import atomic_write, to_json

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: JPEGs decoded in full (no DCT-scaled draft), EXIF orientation applied
# Entries above this size are memory-mapped instead of read into memory (memory_map=None).
MMAP_BYTES = 256 * 1024 * 1024
# Films per unit of work: large enough that a worker's round trip is negligible, small
# enough that an interrupted build loses little and the progress line moves.
CHUNK = 128
# Below this many films to decode, worker processes cost more than they save.
PARALLEL_FROM = 1024
# Bytes of each row's BLAKE2b digest, in the .done file and under the record's checksum.
DIGEST = 16
# Below this many bytes an entry is verified in one thread (threads cost more than they save).
THREADED_FROM = 64 * 1024 * 1024


def default_cache_dir() -> Path:
    if os.environ.get("FUSION_CACHE_DIR"):
        return Path(os.environ["FUSION_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fusion"


def available_cores() -> int:
    """The cores this process may run on (its affinity, as a container's CPU set
    restricts it), not the machine's count: the cache's workers and the service's
    threads are sized by it."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _key(files: list[Path], size: int, channels: int = 1) -> str:
    # One channel keeps the key it had before colour existed, so gray caches stay valid.
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{size}{'' if channels == 1 else f'|c{channels}'}".encode())
    for path in files:
        try:
            st = path.stat()
            digest.update(f"|{path.resolve()}|{st.st_mtime_ns}|{st.st_size}".encode())
        except OSError:
            digest.update(f"|{path}|absent".encode())
    return digest.hexdigest()[:32]


def _release(array: np.ndarray) -> None:
    """Tell the kernel this process no longer needs the mapped pages of ``array``.

    The pages stay in the page cache (a later read is a minor fault, not a disk read)
    but leave this process's resident set, so reading a file much larger than memory
    row by row never makes the process itself large.
    """
    mm = getattr(array, "_mmap", None)
    if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def row_shape(size: int, channels: int = 1) -> tuple[int, ...]:
    """The shape of one decoded image: (S, S) gray, (S, S, C) colour (channels last, as
    images are decoded and saved, and as MedMNIST's colour arrays hold them)."""
    return (size, size) if channels == 1 else (size, size, channels)


class MappedImages:
    """Rows of an on-disk uint8 image array ``(n, S, S)`` or ``(n, S, S, 3)``, read on demand.

    It stands in for the in-memory array wherever a dataset's images go: ``len``,
    ``shape``, and indexing by an integer, a slice or an index array (each returns an
    ordinary in-memory array of just those rows). Reads are sorted by position in the
    file, and the pages read are released from this process afterwards (see
    :func:`_release`), so resident memory stays at one batch however large the file.
    :meth:`take` makes a subset (a split) without reading anything: it shares the
    mapping and holds only row numbers. ``numpy.asarray`` reads every row into memory.

    Parameters
    ----------
    path : str or Path
        A ``.npy`` file of uint8, shape (n, S, S) or (n, S, S, 3).
    rows : array of int, optional
        The rows of the file this view holds, in order (default: all).
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, path: str | Path, rows: np.ndarray | None = None, *, _array: np.ndarray | None = None):
        self.path = Path(path)
        array = _array if _array is not None else np.load(self.path, mmap_mode="r", allow_pickle=False)
        square = array.ndim in (3, 4) and array.shape[1] == array.shape[2]
        if not square or array.dtype != np.uint8 or (array.ndim == 4 and array.shape[3] != 3):
            raise ValueError(
                f"{self.path}: expected a uint8 array of square images (n, S, S) or (n, S, S, 3); "
                f"found {array.dtype} of shape {array.shape}"
            )
        self._array = array
        self.rows = np.arange(len(array), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)

    @property
    def ndim(self) -> int:
        return self._array.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self._array.shape[1:])

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:  # one byte per pixel and channel
        return self.size

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"MappedImages({str(self.path)!r}, {len(self)} of {len(self._array)} rows, {self.shape[1]} px)"

    def __reduce__(self):
        # A copy for another process reopens the file: the mapping itself cannot travel.
        return (MappedImages, (self.path, self.rows))

    def take(self, index) -> MappedImages:
        """The rows ``index`` of this view, as a view (nothing is read)."""
        return MappedImages(self.path, self.rows[np.asarray(index)], _array=self._array)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            raise TypeError("MappedImages is indexed by rows only (an int, a slice or an index array)")
        if isinstance(key, int | np.integer):
            return self._read(self.rows[[key]])[0]
        return self._read(self.rows[key])

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self), CHUNK):
            yield from self[start : start + CHUNK]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def prefetch(self, index) -> None:
        """Ask the kernel to start reading the rows ``index`` of this view from disk
        (``MADV_WILLNEED``) and return at once: called one batch ahead, the reads of
        the next batch overlap the computation on this one, so a cache far larger
        than the page cache is read at the disk's queue depth instead of one page
        fault at a time. A hint only: nothing happens where the OS has no madvise."""
        mm = getattr(self._array, "_mmap", None)
        if mm is None or not hasattr(mmap, "MADV_WILLNEED"):
            return
        row_bytes = int(np.prod(self._array.shape[1:]))
        base = int(self._array.offset) % mmap.ALLOCATIONGRANULARITY  # where row 0 starts in the mapping
        for row in np.sort(self.rows[np.asarray(index)]):
            start = base + int(row) * row_bytes
            aligned = start - start % mmap.PAGESIZE
            mm.madvise(mmap.MADV_WILLNEED, aligned, start + row_bytes - aligned)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self._array.shape[1:]), dtype=np.uint8)
        if len(rows):
            order = np.argsort(rows, kind="stable")
            out[order] = self._array[rows[order]]
            _release(self._array)
        return out


def take_rows(images: np.ndarray | MappedImages, index) -> np.ndarray | MappedImages:
    """The rows ``index`` of a dataset's images: a copy of an in-memory array, a view
    of a :class:`MappedImages` (a subset of a dataset on disk stays on disk)."""
    return images.take(index) if isinstance(images, MappedImages) else images[index]


# ------------------------------------------------------------------ the entry
@dataclass(frozen=True)
class _Entry:
    """The files of one cache entry."""

    folder: Path
    key: str

    @property
    def array(self) -> Path:
        return self.folder / f"images-{self.key}.npy"

    @property
    def meta(self) -> Path:  # written last: the entry is complete
        return self.folder / f"images-{self.key}.json"

    @property
    def done(self) -> Path:  # one byte per film during a build: 1 once its row is written
        return self.folder / f"images-{self.key}.done"

    @property
    def lock(self) -> Path:
        return self.folder / f"images-{self.key}.lock"


def _row_digests(array, rows=None) -> np.ndarray:
    """BLAKE2b digest (``DIGEST`` bytes) of each row of ``array`` (all, or ``rows``), as a
    uint8 array (k, DIGEST). An on-disk array is read block by block and its pages are
    released after each (see :func:`_release`); a large one is hashed by several threads
    (hashlib releases the GIL), so the disk or the page cache sets the pace."""
    rows = np.arange(len(array)) if rows is None else np.asarray(rows)
    blocks = [rows[i : i + CHUNK] for i in range(0, len(rows), CHUNK)]

    def digest(block) -> bytes:
        out = b"".join(hashlib.blake2b(array[int(r)], digest_size=DIGEST).digest() for r in block)
        _release(array)
        return out

    row_bytes = int(np.prod(array.shape[1:]))
    threads = 1 if len(rows) * row_bytes < THREADED_FROM else min(available_cores(), 8)
    if threads == 1:
        parts = [digest(b) for b in blocks]
    else:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(digest, blocks))
    return np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(len(rows), DIGEST)


def _checksum(digests: np.ndarray) -> str:
    """The record's checksum of an array: BLAKE2b over its row digests in order."""
    return hashlib.blake2b(np.ascontiguousarray(digests).tobytes(), digest_size=DIGEST).hexdigest()


def _open_complete(entry: _Entry, n: int, size: int, memory_map: bool | None, *, verify: bool = True, channels=1):
    """A complete entry's ``((images, errors), None)``; ``(None, None)`` when there is
    none; ``(None, what is wrong)`` when there is one that is damaged or does not match
    the checksum in its record (``verify``: checked, which reads the whole array)."""
    if not (entry.array.is_file() and entry.meta.is_file()):
        return None, None
    try:
        meta = json.loads(entry.meta.read_text(encoding="utf-8"))
        mapped = MappedImages(entry.array)
        if mapped.shape != (n, *row_shape(size, channels)):
            return None, f"holds images of shape {mapped.shape}, not {(n, *row_shape(size, channels))}"
        if meta.get("n") != n:
            return None, f"has a record of {str(meta.get('n'))[:60]} films, not {n}"
        errors = {int(k): v for k, v in meta["errors"].items()}
        checksum = meta.get("checksum")
        big = mapped.nbytes > MMAP_BYTES if memory_map is None else memory_map
        images = mapped if big else np.load(entry.array, allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return None, f"cannot be read ({err})"
    if not isinstance(checksum, str):
        return None, "has no checksum in its record (written by an older fusion)"
    if verify:
        actual = _checksum(_row_digests(images._array if big else images))
        if actual != checksum:
            return None, "does not match the checksum in its record (changed after it was written)"
    return (images, errors), None


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``, so two processes never build one entry at
    once (the second waits, then finds it complete). No-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process that is building the image cache %s", path.with_suffix(".npy"))
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _decode_rows(path: str, rows: list[int], files: list[str], decode) -> tuple:
    """Decode ``files`` into ``rows`` of the ``.npy`` array at ``path`` (run in a worker).

    Returns (rows written, their digests (k, DIGEST), {row: reason} of files that
    failed); a failed file's row is zeros."""
    out = np.lib.format.open_memmap(path, mode="r+")
    written, errors = [], {}
    for row, file in zip(rows, files, strict=True):
        try:
            out[row] = decode(Path(file))
            written.append(row)
        except ValueError as err:
            out[row] = 0
            errors[row] = str(err)
    out.flush()  # on disk before the parent marks the rows done
    digests = _row_digests(out, written)
    _release(out)
    return written, digests, errors


class _Progress:
    """Progress of a long build: a tqdm bar on a terminal, a log line every ``every``
    seconds otherwise (a job's log), and a last line with the rate either way;
    silent unless the ``fusion`` logger shows INFO (the CLIs without ``--quiet``)."""

    def __init__(self, total: int, start: int, what: str, every: float = 10.0):
        self.total, self.count, self.first, self.what, self.every = total, start, start, what, every
        self.t0 = self.shown = time.perf_counter()
        self.on = logger.isEnabledFor(logging.INFO)
        self.bar = None
        if self.on and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc=what, unit="film", leave=False)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        rate = (self.count - self.first) / elapsed if elapsed > 0 else 0.0
        left = f", {(self.total - self.count) / rate:.0f} s left" if rate > 0 and self.count < self.total else ""
        return f"{self.what}: {self.count:,}/{self.total:,} in {elapsed:.1f} s ({rate:,.0f} films/s{left})"

    def add(self, k: int) -> None:
        self.count += k
        if self.bar is not None:
            self.bar.update(k)
        elif self.on and time.perf_counter() - self.shown >= self.every:
            logger.info(self.line())
            self.shown = time.perf_counter()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.on:
            logger.info(self.line())


def _pool_context():
    """Worker processes are forked where the OS can (as torch's DataLoader does: no
    re-import of the caller's modules; the workers only decode images with PIL and
    numpy, never torch), started fresh elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _allocate(path: Path) -> None:
    """Reserve the disk blocks of a file created sparse, so a full disk is an ``OSError``
    here, before any decoding, instead of a SIGBUS when a mapped row is written later."""
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows: the file stays sparse
        return
    with open(path, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise  # a full disk, a quota: the caller falls back to memory


def _resume(entry: _Entry, n: int, size: int, channels: int) -> np.ndarray:
    """The ``.done`` digests of an interrupted build of this entry, each row's kept only
    where the array holds exactly what was written; zeros (nothing done) when there is
    no such build or its files do not fit (another shape, a ``.done`` of the wrong length)."""
    if not (entry.array.is_file() and entry.done.is_file() and entry.done.stat().st_size == n * DIGEST):
        return np.zeros((n, DIGEST), dtype=np.uint8)
    try:
        array = np.load(entry.array, mmap_mode="r", allow_pickle=False)
        if array.shape != (n, *row_shape(size, channels)) or array.dtype != np.uint8:
            return np.zeros((n, DIGEST), dtype=np.uint8)
        marks = np.fromfile(entry.done, dtype=np.uint8).reshape(n, DIGEST)
    except (OSError, ValueError):
        return np.zeros((n, DIGEST), dtype=np.uint8)
    claimed = np.flatnonzero(marks.any(axis=1))
    good = (marks[claimed] == _row_digests(array, claimed)).all(axis=1)
    if not good.all():
        logger.warning(
            "the image cache %s: %d of the %d films its progress file %s marks done do not hold what was "
            "written; they are decoded again",
            entry.array,
            int((~good).sum()),
            len(claimed),
            entry.done.name,
        )
    kept = np.zeros((n, DIGEST), dtype=np.uint8)
    kept[claimed[good]] = marks[claimed[good]]
    return kept


def _start(entry: _Entry, n: int, size: int, channels: int) -> np.memmap:
    """The ``.done`` digests to build on (see :func:`_resume`), written afresh with a
    new array when nothing can be kept; the entry's record is removed first, so the
    entry is incomplete until the build writes it again."""
    entry.meta.unlink(missing_ok=True)
    kept = _resume(entry, n, size, channels)
    if kept.any():
        logger.info("resuming the image cache %s: %d of %d films already decoded", entry.array, kept.any(1).sum(), n)
    else:
        # A new file (a reader of an old one keeps its own), its blocks reserved.
        entry.array.unlink(missing_ok=True)
        shape = (n, *row_shape(size, channels))
        created = np.lib.format.open_memmap(entry.array, mode="w+", dtype=np.uint8, shape=shape)
        del created
        _allocate(entry.array)
    with open(entry.done, "wb") as fh:
        fh.write(kept.tobytes())
    return np.memmap(entry.done, dtype=np.uint8, mode="r+", shape=(n, DIGEST))


def _build(
    entry: _Entry, files: list[Path], size: int, decode, workers: int | None, channels: int = 1
) -> tuple[dict[int, str], str]:
    """Write every not-yet-done row of the entry's array; the errors of this pass and
    the array's checksum."""
    n = len(files)
    done = _start(entry, n, size, channels)
    todo = np.flatnonzero(~done.any(axis=1)).tolist()
    chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
    jobs = ((str(entry.array), rows, [str(files[r]) for r in rows], decode) for rows in chunks)
    if workers is None:
        workers = 1 if len(todo) < PARALLEL_FROM else min(available_cores(), 8)
    progress = _Progress(n, n - len(todo), f"image cache ({size} px)")
    errors: dict[int, str] = {}
    last_flush = time.perf_counter()

    def mark(result) -> None:
        nonlocal last_flush
        written, digests, failed = result
        done[written] = digests
        errors.update(failed)
        progress.add(len(written) + len(failed))
        if time.perf_counter() - last_flush > 2.0:
            done.flush()
            last_flush = time.perf_counter()

    try:
        if workers == 1 or len(chunks) <= 1:
            for job in jobs:
                mark(_decode_rows(*job))
        else:
            pool = ProcessPoolExecutor(workers, mp_context=_pool_context())
            try:
                # A bounded number of chunks in flight: the queue never holds every path.
                pending = set()
                for job in jobs:
                    pending.add(pool.submit(_decode_rows, *job))
                    if len(pending) >= 4 * workers:
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in finished:
                            mark(future.result())
                for future in pending:
                    mark(future.result())
            finally:  # on Ctrl-C: the chunks not started are dropped, not waited for
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        done.flush()
        progress.close()
    digests = np.array(done)
    if errors:  # the rows of films that failed are zeros
        digests[list(errors)] = np.frombuffer(
            hashlib.blake2b(bytes(size * size * channels), digest_size=DIGEST).digest(), dtype=np.uint8
        )
    return errors, _checksum(digests)


def _decode_in_memory(files: list[Path], size: int, decode, channels: int = 1) -> tuple[np.ndarray, dict[int, str]]:
    images = np.zeros((len(files), *row_shape(size, channels)), dtype=np.uint8)
    errors: dict[int, str] = {}
    for i, path in enumerate(files):
        try:
            images[i] = decode(path)
        except ValueError as err:
            errors[i] = str(err)
    return images, errors


def cached_images(
    files: list[Path],
    size: int,
    decode: Callable[[Path], np.ndarray],
    cache_dir: str | Path | None,
    *,
    workers: int | None = None,
    memory_map: bool | None = None,
    channels: int = 1,
) -> tuple[np.ndarray | MappedImages, dict[int, str]]:
    """Decoded images of ``files`` at ``size``, from the cache when it is current.

    Parameters
    ----------
    files : list of Path
    size : int
    decode : callable
        ``decode(path) -> uint8 (size, size)``, or (size, size, 3) with ``channels`` 3;
        raises ``ValueError`` for a bad file.
        It must pickle (a module-level function or a ``functools.partial`` of one)
        when worker processes decode.
    cache_dir : str, Path or None
        Cache folder; ``None`` disables caching (every file is decoded, in memory).
    workers : int, optional
        Processes that decode while the cache is built; default one below 1,024
        films to decode, else one per available core (at most 8).
    memory_map : bool, optional
        Read the entry through :class:`MappedImages` (True) or into memory (False);
        default: mapped when it is larger than 256 MB.
    channels : {1, 3}
        What ``decode`` gives: one gray channel or three colour channels (part of the
        entry's key, so the gray and the colour images of one folder are two entries).

    Returns
    -------
    images : numpy.ndarray of uint8, shape (n, size, size) or (n, size, size, 3), or MappedImages
        Rows of files that failed to decode are zeros.
    errors : dict of int -> str
        Index of each file that failed, with the reason (failures are cached too, and
        redone when the file changes).

    Raises
    ------
    ValueError
        ``workers`` below 1; ``memory_map`` True with the cache off (``cache_dir``
        None) or a cache folder that cannot be written (read-only, a full disk): held
        in memory, the films may not fit. Without ``memory_map`` True such a folder
        costs only speed: the films are decoded into memory, with a warning.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"cache workers must be at least 1; got {workers}")
    if cache_dir is None:
        if memory_map:
            message = "memory_map=True reads the films from the image cache, which cache_dir turns off"
            raise ConfigError(message, field="memory_map", value=memory_map)
        return _decode_in_memory(files, size, decode, channels)
    entry = _Entry(Path(cache_dir), _key(files, size, channels))
    found, damage = _open_complete(entry, len(files), size, memory_map, channels=channels)
    if found is not None:
        return found
    if damage:
        logger.warning("the image cache entry %s %s; it is rebuilt", entry.array, damage)
    try:
        return _build_entry(entry, files, size, decode, workers, memory_map, channels)
    except OSError as err:
        return _without_cache(entry.folder, err, files, size, decode, memory_map, channels)


def _build_entry(
    entry: _Entry,
    files: list[Path],
    size: int,
    decode,
    workers: int | None,
    memory_map: bool | None,
    channels: int = 1,
):
    """Build the entry (unless another process did while this one waited for the lock)
    and open it. A write that fails (a full disk) removes what was written, so the
    space is given back, and raises the ``OSError``."""
    entry.folder.mkdir(parents=True, exist_ok=True)
    entry.lock.touch()
    with _exclusive(entry.lock):
        found, _ = _open_complete(entry, len(files), size, memory_map, channels=channels)  # built while this one waited
        if found is not None:
            return found
        try:
            errors, checksum = _build(entry, files, size, decode, workers, channels)
            meta = {"n": len(files), "size": size, "errors": errors, "checksum": checksum}
            if channels != 1:
                meta["channels"] = channels
            atomic_write(entry.meta, lambda p: p.write_text(to_json(meta), encoding="utf-8"))
            entry.done.unlink(missing_ok=True)
        except OSError:
            for path in (entry.meta, entry.array, entry.done):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
            raise
        found, damage = _open_complete(entry, len(files), size, memory_map, verify=False, channels=channels)
    if found is None:
        raise OSError(f"the image cache {entry.array} could not be read back after it was written: {damage}")
    return found


def _without_cache(
    folder: Path, err: OSError, files: list[Path], size: int, decode, memory_map: bool | None, channels: int = 1
):
    """The films decoded into memory, when the cache folder cannot be written; an error
    when ``memory_map`` asked for them to stay on disk (in memory they may not fit)."""
    reason = err.strerror or str(err)
    if memory_map:
        raise ConfigError(
            f"memory_map=True keeps the films on disk in the image cache, but the cache folder {folder} cannot be "
            f"written ({reason}); free space there, make it writable or choose another cache_dir",
            field="memory_map",
            value=memory_map,
        ) from None
    megabytes = len(files) * size * size * channels / 1e6
    logger.warning(
        "the image cache folder %s cannot be written (%s): the %d films are decoded into memory instead "
        "(%.0f MB), and again next time",
        folder,
        reason,
        len(files),
        megabytes,
    )
    return _decode_in_memory(files, size, decode, channels)
