"""Saving and loading model folders, with no pickle anywhere.

A model folder holds:

- ``config.json``: the :class:`fusion.config.Config`, classes, modalities, format and
  library version;
- the backend's own files: ``model.safetensors`` (networks), ``xgboost.json`` (the
  XGBoost baseline), ...;
- ``preprocessing.json``: tabular preprocessing state and image size/normalisation;
- ``calibration.json``: how raw probabilities are calibrated, and the operating points;
- ``schema.toml``: the schema the model was trained with, as written;
- ``manifest.json``: the SHA-256 of each of these files.

This module writes and verifies such folders of bytes; :mod:`fusion.model_folder` knows
what each file says, assembles them for saving and checks them when loading.

Loading reads each listed file once, checks its SHA-256 and keeps its bytes
(:class:`ModelFiles`): the loaders parse those bytes, never the file again, so a file
replaced after its check is never read, and tensors come from safetensors, which cannot
carry code. A folder whose files were replaced (by a pickle, say) is refused before
anything in it is interpreted.

A folder is written whole (:func:`write_folder`): into a new hidden folder beside it,
then swapped in by renames, so a crash leaves the old model or the new one, never a
mix, and no file of the old model survives. Files and folders get the mode the umask
gives, as any other program's (not the 0600 of a temporary file).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from fusion import checks
from fusion.errors import ModelFolderError
from fusion.schema import RepeatedKey, unique_keys

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
MAX_MANIFEST_BYTES = 1 << 20  # a manifest lists a handful of names: a larger one is not one
_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------- what a path is
_KINDS = (
    (stat.S_ISREG, "a file"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind(mode: int) -> str:
    """What an ``st_mode`` is, in words ("a file", "a FIFO (named pipe)", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def _blocking_part(path: Path) -> str:
    """The first part of ``path`` that exists and is not a folder (why it cannot exist)."""
    for part in reversed(path.parents):
        try:
            mode = os.stat(part).st_mode
        except OSError:
            break
        if not stat.S_ISDIR(mode):
            return f"{str(part)!r} is {kind(mode)}"
    return "a part of it is not a folder"


def stat_folder(path: Path, what: str) -> os.stat_result | None:
    """``os.stat(path)``, or None when nothing is there. A symlink loop, a dangling
    symlink, a path through a file and an unreadable path raise, each named as what it
    is (never just "does not exist")."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(
                f"{what} {str(path)!r} is a symlink to {os.readlink(path)!r}, which does not exist"
            ) from None
        return None
    except NotADirectoryError:
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist ({_blocking_part(path)})") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{what} {str(path)!r} is a symlink loop, not a folder") from None
        raise ValueError(f"{what} {str(path)!r} cannot be read ({err.strerror})") from None


def check_folder(path: Path, what: str) -> bool:
    """True when ``path`` is a folder, False when nothing is there; anything else (a
    file, a FIFO, a device, a symlink loop) raises ``ValueError`` naming it."""
    st = stat_folder(path, what)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{what} {str(path)!r} is {kind(st.st_mode)}, not a folder")
    return st is not None


# ------------------------------------------------------------------------ writing
def _unique(path: Path, tag: str, create: Callable[[Path], None]) -> Path:
    """A new hidden sibling of ``path`` made by ``create``, with a random name."""
    for _ in range(100):
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}.{tag}"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {str(path)!r}")


def _new_file(path: Path) -> None:
    """An empty file, created with the mode the umask gives (0o666 & ~umask), as
    open() would; mkstemp's 0600 would make a shared model unreadable."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write a file via a temporary name in the same folder, then rename, so a crash
    never leaves half a file: readers see the old version or the new one.

    ``write(tmp_path)`` writes the content to the temporary path, which exists (empty,
    with the mode the umask gives) when it is called.
    """
    path = Path(path)
    tmp = None
    try:
        tmp = _unique(path, "tmp", _new_file)
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _json_default(value):
    """What the standard encoder cannot write: numpy scalars and arrays (pandas and
    numpy hand them out as row indices, counts and metrics), paths, sets and tuples."""
    import numpy as np

    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"cannot write a {type(value).__name__} as JSON: {value!r:.80}")


def to_json(data, *, indent: int | None = 2, allow_nan: bool = False) -> str:
    """The one JSON encoding the library writes with: numpy values as Python numbers,
    and NaN or infinity refused (strict JSON readers reject them) rather than written,
    unless ``allow_nan`` (state that only this library reads back, e.g. checkpoints)."""
    return json.dumps(data, indent=indent, allow_nan=allow_nan, default=_json_default)


def json_bytes(data) -> bytes:
    """``data`` as the library writes JSON files (:func:`to_json`), encoded."""
    return (to_json(data) + "\n").encode("utf-8")


def write_json(path: str | Path, data) -> None:
    atomic_write_text(path, to_json(data) + "\n")


def state_dict_bytes(state: Mapping[str, torch.Tensor]) -> bytes:
    """A state dict as safetensors bytes (tensors only, never code)."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in state.items()})


def manifest_bytes(files: Mapping[str, bytes], version: str) -> bytes:
    """The manifest of a model folder's files, hashed from the bytes being written."""
    hashes = {name: hashlib.sha256(files[name]).hexdigest() for name in sorted(files)}
    return json_bytes({"format_version": FORMAT_VERSION, "fusion_version": version, "sha256": hashes})


def write_manifest(folder: str | Path, files: list[str], version: str) -> None:
    """Write the manifest of ``files`` as they are on disk (for folders assembled by
    hand; :func:`write_folder` hashes the bytes it writes)."""
    folder = Path(folder)
    contents = {name: (folder / name).read_bytes() for name in files}
    atomic_write(folder / MANIFEST, lambda tmp: tmp.write_bytes(manifest_bytes(contents, version)))


def _write_new_file(path: Path, data: bytes) -> None:
    """One file of a folder being assembled, flushed to the disk before the folder is
    swapped in (else a power cut could swap in a folder of empty files)."""
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_target(folder: Path, overwrite: bool) -> Path:
    """The folder a save replaces (a symlink's target), checked: nothing there, an
    empty folder, or (with ``overwrite``) a model folder; anything else is refused."""
    if not check_folder(folder, "model folder"):
        return folder
    target = Path(os.path.realpath(folder))
    if not any(target.iterdir()):
        return target
    if not overwrite:
        raise ValueError(
            f"{str(folder)!r} exists and is not empty; choose a new folder, or pass overwrite=True to replace "
            "the model folder there as a whole"
        )
    if not (target / MANIFEST).is_file():
        raise ValueError(
            f"{str(folder)!r} is not a fusion model folder (it has no {MANIFEST}); overwrite=True replaces "
            "model folders only and never deletes another folder: choose a new folder"
        )
    return target


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``): no
    instant exists where either name is missing. False where the system lacks it."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(stage: Path, target: Path) -> None:
    """Put the assembled folder ``stage`` at ``target``: a rename where nothing (or an
    empty folder) is there; an exchange with a model folder, which is then deleted."""
    if not os.path.lexists(target) or not any(target.iterdir()):
        try:
            os.rename(stage, target)
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise ValueError(f"{str(target)!r} was filled by something else while the model was saved") from None
            raise
        return
    if not _exchange(stage, target):
        # Two renames: for an instant the name is missing, never half filled.
        old = _unique(target, "old", lambda p: None)
        os.rename(target, old)
        try:
            os.rename(stage, target)
        except BaseException:
            os.rename(old, target)  # the old model back at its name
            raise
        stage = old
    shutil.rmtree(stage, ignore_errors=True)  # now the old model


def write_folder(folder: str | Path, files: Mapping[str, bytes], version: str, *, overwrite: bool = False) -> Path:
    """Write a model folder whole: ``files`` (name -> bytes) and their manifest.

    The files are written into a new hidden folder beside ``folder`` (mode 0o777 &
    ~umask), then swapped in: a crash leaves the old folder or the new one, never a
    mix, and no file of an old model survives.

    Raises
    ------
    ValueError
        ``folder`` is not empty and ``overwrite`` is False; with ``overwrite``, it is
        not a model folder (nothing else is ever deleted); it is a file, a FIFO, a
        symlink loop.
    """
    folder = Path(folder)
    target = _save_target(folder, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = None
    try:
        stage = _unique(target, "new", lambda p: p.mkdir(0o777))
        for name, data in {**files, MANIFEST: manifest_bytes(files, version)}.items():
            _write_new_file(stage / name, data)
        _fsync_folder(stage)
        _swap_in(stage, target)
        _fsync_folder(target.parent)
    except BaseException:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    return folder


def write_files(folder: str | Path, files: Mapping[str, bytes], version: str) -> None:
    """Write a model's files into a folder the caller owns and that holds files of its
    own (a training run's folder: its checkpoint, progress and metrics stay).

    The old manifest is removed first and the new one written last: until it is, the
    folder is no loadable model, never a mix of two. Each file is written whole.
    """
    folder = Path(folder)
    (folder / MANIFEST).unlink(missing_ok=True)
    for name, data in files.items():
        atomic_write(folder / name, lambda tmp, data=data: tmp.write_bytes(data))
    atomic_write(folder / MANIFEST, lambda tmp: tmp.write_bytes(manifest_bytes(files, version)))


# ------------------------------------------------------------------------ reading
class _Refused(ValueError):
    pass


def _no_constant(name: str):
    raise _Refused(f"{name} is not a number JSON allows")


def parse_json(data: bytes, origin: str) -> dict:
    """A JSON object from ``data``, strictly: UTF-8, no duplicate keys, no NaN or
    Infinity (this library never writes them in a model folder)."""
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=unique_keys, parse_constant=_no_constant)
    except UnicodeDecodeError as err:
        raise _malformed(
            f"{origin}: not valid JSON (not UTF-8 text: {err.reason} at byte {err.start})", origin
        ) from None
    except json.JSONDecodeError as err:
        raise _malformed(
            f"{origin}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})", origin
        ) from None
    except (_Refused, RepeatedKey) as err:
        raise _malformed(f"{origin}: not valid JSON: {err}", origin) from None
    except RecursionError:
        raise _malformed(f"{origin}: not valid JSON (nested too deeply)", origin) from None
    if not isinstance(value, dict):
        raise _malformed(f"{origin}: must be a JSON object; got a {type(value).__name__}", origin)
    return value


def _malformed(message: str, origin: str | Path, **attributes) -> ModelFolderError:
    """A model folder's file that cannot be read as what it must be (no key to name)."""
    return ModelFolderError(message, file=str(origin), **attributes)


class ModelFiles:
    """The verified files of a model folder: the bytes of every file the manifest
    lists, each read once and checked against its SHA-256. Loaders parse these bytes
    and never open the files again, so what is parsed is what was verified.

    Attributes
    ----------
    folder : Path
    manifest : dict
    present : frozenset of str
        The names in the folder when it was read (listed or not).
    """

    def __init__(self, folder: Path, manifest: dict, contents: dict[str, bytes], present: frozenset[str]):
        self.folder, self.manifest, self.present = folder, manifest, present
        self._contents = contents

    @property
    def listed(self) -> frozenset[str]:
        return frozenset(self._contents)

    def __contains__(self, name: object) -> bool:
        return name in self._contents

    def origin(self, name: str) -> str:
        """How errors name the file."""
        return str(self.folder / name)

    def read(self, name: str) -> bytes:
        """The verified bytes of ``name``; a file the manifest does not list is refused."""
        if name not in self._contents:
            raise _malformed(f"{self.folder}: {MANIFEST} does not list {name}", self.origin(MANIFEST), value=name)
        return self._contents[name]

    def text(self, name: str) -> str:
        try:
            return self.read(name).decode("utf-8")
        except UnicodeDecodeError as err:
            raise _malformed(
                f"{self.origin(name)}: not UTF-8 text ({err.reason} at byte {err.start})", self.origin(name)
            ) from None

    def json(self, name: str) -> dict:
        return parse_json(self.read(name), self.origin(name))

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        """Tensors read with safetensors (which holds tensors only, never code)."""
        from safetensors.torch import load

        try:
            state = load(self.read(name))
        except Exception as err:
            raise _malformed(f"{self.origin(name)}: not a valid safetensors file ({err})", self.origin(name)) from None
        return check_finite(state, self.origin(name))


def _read_at(folder_fd: int, name: str, origin: str, limit: int | None = None) -> bytes:
    """The whole of regular file ``name`` in the open folder, read once. Opened without
    blocking (a FIFO would wait for a writer) and refused unless a regular file."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=folder_fd)
    except FileNotFoundError:
        raise
    except OSError as err:
        reason = "a symlink loop" if err.errno == errno.ELOOP else err.strerror
        raise _malformed(f"{origin}: cannot be read ({reason})", origin) from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise _malformed(f"{origin} is {kind(mode)}, not a file", origin)
        data = fh.read(limit + 1) if limit is not None else fh.read()
    if limit is not None and len(data) > limit:
        raise _malformed(f"{origin}: over {limit // 1024} KB, too large to be one", origin)
    return data


def _check_manifest(manifest: dict, origin: str) -> dict[str, str]:
    """The ``sha256`` table of a parsed manifest, every field checked."""
    where = checks.Where(origin)
    checks.keys(manifest, where, required=("format_version", "fusion_version", "sha256"))
    version = checks.integer(manifest["format_version"], where / "format_version", low=1)
    if version > FORMAT_VERSION:
        raise (where / "format_version").refuse(
            f"{origin}: model format {version} was written by fusion {manifest['fusion_version']}; "
            f"this fusion reads format {FORMAT_VERSION}: upgrade fusion",
            value=version,
            accepted=f"at most {FORMAT_VERSION}",
        )
    checks.text(manifest["fusion_version"], where / "fusion_version")
    hashes = manifest["sha256"]
    if not isinstance(hashes, dict):
        raise (where / "sha256").refuse(
            f"{where / 'sha256'} must be an object mapping each file's name to its SHA-256", value=hashes
        )
    if not hashes:
        raise (where / "sha256").refuse(f"{where / 'sha256'} lists no file: it would verify nothing", value=hashes)
    for name, digest in hashes.items():
        if Path(name).name != name or name in ("", ".", ".."):
            raise (where / "sha256").refuse(f"{origin}: lists {name!r}, which is not a file of the folder", value=name)
        if name == MANIFEST:
            raise (where / "sha256").refuse(f"{origin}: lists {MANIFEST} itself", value=name)
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise (where / "sha256" / name).refuse(
                f"{where / 'sha256' / name} must be 64 lowercase hexadecimal digits",
                value=digest,
                accepted="64 lowercase hexadecimal digits",
            )
    return hashes


def verify_folder(folder: str | Path) -> ModelFiles:
    """Read a model folder's listed files once each and check them against its manifest
    before anything is parsed.

    Returns
    -------
    ModelFiles
        The verified bytes of every listed file.

    Raises
    ------
    FileNotFoundError
        No folder (or a symlink to nothing), or no manifest.
    ValueError
        Not a folder (a file, a FIFO, a symlink loop), a malformed manifest, a listed
        file missing, not a regular file or not matching its SHA-256 (changed or
        replaced), or a format newer than this library reads.
    """
    folder = Path(folder)
    if not check_folder(folder, "model folder"):
        raise FileNotFoundError(f"model folder {str(folder)!r} does not exist")
    # Every file is opened relative to this one open folder: a folder swapped for
    # another (a symlink, say) half-way through cannot mix two folders' files.
    try:
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise ValueError(f"model folder {str(folder)!r} cannot be read ({err.strerror})") from None
    try:
        origin = str(folder / MANIFEST)
        try:
            raw = _read_at(folder_fd, MANIFEST, origin, limit=MAX_MANIFEST_BYTES)
        except FileNotFoundError:
            raise FileNotFoundError(f"{str(folder)!r} is not a fusion model folder: no {MANIFEST}") from None
        manifest = parse_json(raw, origin)
        contents = {}
        for name, expected in _check_manifest(manifest, origin).items():
            try:
                data = _read_at(folder_fd, name, str(folder / name))
            except FileNotFoundError:
                raise _malformed(f"{folder}: {name} is listed in the manifest but missing", folder / name) from None
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise _malformed(
                    f"{folder}: {name} does not match its SHA-256 in {MANIFEST} (expected {expected[:12]}..., "
                    f"found {actual[:12]}...): the file was changed or replaced after saving; refusing to load it",
                    folder / name,
                    value=actual,
                    accepted=f"the SHA-256 {expected}",
                )
            contents[name] = data
        present = frozenset(os.listdir(folder_fd))
    finally:
        os.close(folder_fd)
    return ModelFiles(folder, manifest, contents, present)


def check_finite(state: dict[str, torch.Tensor], origin: str | Path) -> dict[str, torch.Tensor]:
    """Refuse weights that hold NaN or infinity (a training that diverged, a damaged
    or hand-made file): a network built from them answers labels from NaN
    probabilities. Returns ``state``.

    Raises
    ------
    ValueError
        Naming ``origin`` (the file) and the first tensor at fault.
    """
    for name, tensor in state.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        bad = int(tensor.numel() - torch.isfinite(tensor).sum())
        if bad:
            raise ModelFolderError(
                f"{origin}: tensor {name[:60]!r} holds {bad} non-finite value(s) (NaN or infinity) of "
                f"{tensor.numel()}; weights that are not finite cannot answer (did the training diverge?): "
                "retrain the model",
                field=name,
                file=str(origin),
                accepted="finite values",
            )
    return state


# The temporary files of interrupted writes: atomic_write's (".<name>.<8 random>.tmp",
# tempfile.mkstemp's alphabet) and safetensors' own (".tmp<6 random>", which it makes in
# the target's folder while it writes).
_TEMPORARY = re.compile(r"\.(?:.+\.[a-z0-9_]{8}\.tmp|tmp[A-Za-z0-9]{6})")


def remove_temporary(folder: str | Path) -> list[Path]:
    """Remove what interrupted writes left in ``folder`` and its immediate subfolders
    (a write that fails removes its own temporary file; a kill -9 or a power cut
    cannot). Meant for folders the library writes alone, such as a run folder; files
    of any other name are left alone. Returns the files removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    places = [folder, *(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())]
    removed = []
    for place in places:
        for path in sorted(place.glob(".*")):
            if _TEMPORARY.fullmatch(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


_DISK_FULL_TEXT = ("No space left on device", "(os error 28)", "Disk quota exceeded", "(os error 122)")


def is_disk_full(err: BaseException | None) -> bool:
    """Whether ``err``, or an error that caused it, says the disk (or the user's quota)
    is full: an ``OSError`` with ``ENOSPC``/``EDQUOT``, or the text safetensors and
    XGBoost give it (their errors are not ``OSError``)."""
    for _ in range(8):  # a cause chain, bounded
        if err is None:
            return False
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(err) for text in _DISK_FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False
