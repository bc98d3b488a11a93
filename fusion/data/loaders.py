"""Loading datasets: the embedded synthetic cohort, folders of X-rays with a clinical
table, and MedMNIST-style ``.npz`` files, all into one in-memory :class:`Dataset`.

Images are decoded once, at load time, into uint8 arrays at the model's size, as one
gray channel (n, S, S) or three colour channels (n, S, S, 3): ``channels``, by default
what the data say (the schema's ``[image] channels``, an ``.npz``'s own arrays); the
clinical table is parsed and validated against the schema once. Rows that fail are
skipped and reported in ``Dataset.skipped`` (row, file, reason), never coerced.

A folder's table names its images, and a table is data, not a permission: a row whose
image leads out of the dataset folder (``../../etc/passwd``, ``/etc/hostname``, a
symlink to a film elsewhere), once ``..`` and symlinks are resolved, is skipped with
that reason and its file never opened, unless the schema's ``[image]`` table says
``allow_outside = true`` (a dataset whose films are linked in from another disk).
"""

from __future__ import annotations

import csv
import functools
import logging
import re
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fusion.data import synthetic
from fusion.data.cache import MappedImages, cached_images, default_cache_dir, row_shape, take_rows
from fusion.data.dataset import Dataset
from fusion.data.images import CHANNELS, load_image
from fusion.errors import ConfigError
from fusion.nets.registry import BACKBONES, DEFAULT_BACKBONE
from fusion.schema import Schema, builtin_schemas, load_schema, short_list, short_repr

logger = logging.getLogger(__name__)

NPZ_SPLITS = ("train", "val", "test")
# How CSV files separate their fields: comma, or what spreadsheets write in locales
# whose decimal mark is a comma (semicolon) and "text" exports (tab).
SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab"}
# The longest header line read to find the separator (a 10,000-column header is ~100 KB).
HEADER_BYTES = 1 << 24
# The first bytes of a CSV checked for what text never holds (NUL bytes: a binary file).
SNIFF_BYTES = 1 << 16

# Loaders decode at the default backbone's input size unless told otherwise.
DEFAULT_IMAGE_SIZE = BACKBONES[DEFAULT_BACKBONE].default_size


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV as strings, so that the schema, not pandas, decides types and missing values.

    The separator is the comma, or a semicolon or tab when the header splits on it into
    more columns (as spreadsheets write CSV in many locales); the text is UTF-8, with or
    without a byte-order mark.

    Raises
    ------
    ValueError
        Naming the file: it is empty, binary or not UTF-8; its header is ambiguous about
        the separator or names a column twice (pandas would rename the second copy
        ``age.1`` and the schema would silently read the first); a row has more fields
        than the header, or a quote is never closed.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        _check_text(path, fh.read(SNIFF_BYTES))
        fh.seek(0)
        first = fh.readline(HEADER_BYTES)
    try:
        line = re.split(r"\r\n|\r|\n", first.decode("utf-8-sig"), maxsplit=1)[0]  # old Macs end lines with \r
    except UnicodeDecodeError:
        raise ValueError(_not_utf8(path)) from None
    sep = _separator(path, line)
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        header = next(csv.reader(fh, delimiter=sep), [])
    repeated = sorted(c for c, k in Counter(header).items() if k > 1)  # list.count per column: quadratic
    if repeated:
        raise ValueError(
            f"{path}: column(s) {short_list(repeated)} appear more than once in the header; "
            "each column must be named once"
        )
    if sep != ",":
        logger.info("%s: read as %s-separated", path, SEPARATORS[sep])
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(_not_utf8(path)) from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty: a CSV table needs a header row naming its columns") from None
    except pd.errors.ParserError as err:
        raise ValueError(_unparsable(path, sep, len(header), err)) from None


def _check_text(path: Path, head: bytes) -> None:
    """Refuse, naming the file, what is no CSV text at all (judged from its first bytes):
    nothing, UTF-16 or binary."""
    if not head.strip():
        raise ValueError(f"{path} is empty: a CSV table needs a header row naming its columns")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"{path} is UTF-16 text; save the table as CSV in UTF-8 (in Excel: 'CSV UTF-8')")
    if b"\0" in head:
        raise ValueError(
            f"{path} is not a text CSV file: it holds NUL bytes (a spreadsheet, an image or a compressed file?); "
            "save the table as CSV in UTF-8"
        )


def _separator(path: Path, header: str) -> str:
    """The separator the header line splits on into the most columns (comma when none
    splits it: a table of one column); two that split it alike cannot be told apart."""
    counts = {sep: len(next(csv.reader([header], delimiter=sep), [])) for sep in SEPARATORS}
    most = max(counts.values())
    best = [sep for sep, n in counts.items() if n == most]
    if most <= 1:
        return ","
    if len(best) > 1:
        names = " and ".join(SEPARATORS[sep] for sep in best)
        raise ValueError(
            f"{path}: cannot tell the separator: the header splits into {most} columns on {names} alike; "
            "use one separator (a comma, a semicolon or a tab) and quote names that hold another"
        )
    return best[0]


def _not_utf8(path: Path) -> str:
    """Where a file stops being UTF-8, for the message (read again only on this error)."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                byte = raw[err.start]
                return (
                    f"{path}: not UTF-8 text: line {number} holds the byte 0x{byte:02x} (Latin-1 or Windows-1252?); "
                    "save the table as CSV in UTF-8 (in Excel: 'CSV UTF-8')"
                )
    return f"{path}: not UTF-8 text; save the table as CSV in UTF-8"


def _unparsable(path: Path, sep: str, width: int, err: Exception) -> str:
    """A table pandas cannot split into rows: the first row that does not fit the header
    (found again with the csv module, so the message does not depend on pandas' text)."""
    name = SEPARATORS[sep]
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.reader(fh, delimiter=sep, strict=True)
        try:
            for row in reader:
                if len(row) > width:
                    return (
                        f"{path}: line {reader.line_num} has {len(row)} fields but the header has {width} "
                        f"({name}-separated); quote values that hold a {name} ('\"a{sep}b\"')"
                    )
        except csv.Error as bad:
            return (
                f'{path}: line {reader.line_num}: {bad}: check the quotes (") around it; a quoted value must be closed'
            )
    return f"{path}: cannot be read as a {name}-separated table: {short_repr(str(err).strip())}"


# A file's place: its resolved path, or why it is not read.
Locate = Callable[[str], tuple[Path | None, str | None]]


def _from_validated(
    name: str, schema: Schema, table: pd.DataFrame, load_images, locate: Locate | None = None
) -> Dataset:
    """Build a dataset from a raw table: validate rows, drop rows whose image is refused
    by ``locate`` or duplicates another's, then load the images of the rows left.

    ``load_images(rows, files) -> (uint8 array, {position: error})`` or None for a
    dataset without images; with ``locate`` it gets the located paths, and two names
    of one file (``a.png``, ``./a.png``) are duplicates.
    """
    checked = schema.validate_table(table)
    skipped = list(checked.skipped)
    index = checked.features.index.tolist()  # plain numbers, not numpy's, in every report
    files = checked.images.tolist() if checked.images is not None else [None] * len(checked.labels)
    keep, paths, seen = [], [], {}
    for pos, (row, file) in enumerate(zip(index, files, strict=True)):
        where = file
        if file is not None and locate is not None:
            where, reason = locate(file)
            if reason is not None:
                skipped.append({"row": row, "file": file, "reason": reason})
                continue
        if where is not None and where in seen:
            skipped.append({"row": row, "file": file, "reason": f"duplicate image: also used by row {seen[where]}"})
            continue
        if where is not None:
            seen[where] = row
        keep.append(pos)
        paths.append(where)
    images = None
    if load_images is not None:
        rows = [index[p] for p in keep]
        images, errors = load_images(rows, paths)
        for i in sorted(errors):
            skipped.append({"row": rows[i], "file": files[keep[i]], "reason": errors[i]})
        good = [i for i in range(len(keep)) if i not in errors]
        if errors:
            images = take_rows(images, good)
        keep = [keep[i] for i in good]
    keep = np.asarray(keep, dtype=np.int64)
    position = {row: i for i, row in enumerate(table.index)}
    skipped.sort(key=lambda s: position[s["row"]])
    return Dataset(
        name=name,
        classes=schema.classes,
        labels=checked.labels[keep],
        images=images if images is None or isinstance(images, MappedImages) else np.ascontiguousarray(images),
        records=checked.features.iloc[keep] if schema.features else None,
        groups=None if checked.groups is None else checked.groups[keep],
        files=None if checked.images is None else checked.images[keep],
        schema=schema,
        skipped=skipped,
        notes=checked.notes,
        missing_tokens=checked.missing_tokens,
    )


def _image_folder(root: Path, schema: Schema) -> Path:
    """The schema's image folder under ``root``, which it must not leave (once resolved:
    ``images`` may be a symlink) unless the schema allows it."""
    folder = root / (schema.image_folder or ".")
    real, inside = folder.resolve(), root.resolve()
    if schema.image_allow_outside or real.is_relative_to(inside):
        return folder
    raise ValueError(
        f"schema {schema.name!r}: the image folder {schema.image_folder!r} leads to {short_repr(str(real))}, outside "
        f"the dataset folder {short_repr(str(inside))}; move the films inside it, or set allow_outside = true in the "
        "schema's [image] table to read them there"
    )


def _locator(root: Path, folder: Path, allow_outside: bool) -> tuple[Locate, list[str]]:
    """``locate(file)``: the file a table's image name leads to once ``..`` and symlinks
    are resolved, or why it is not read (outside ``root``, or not resolvable); and the
    list of names it refused for leading outside, filled as it is called."""
    inside = root.resolve()
    outside: list[str] = []

    def locate(file: str) -> tuple[Path | None, str | None]:
        try:
            path = (folder / file).resolve()
        except (OSError, RuntimeError, ValueError) as err:  # a symlink loop, a NUL byte
            return None, f"image {short_repr(file)}: its path cannot be resolved ({err})"
        if allow_outside or path.is_relative_to(inside):
            return path, None
        outside.append(file)
        return None, (
            f"image {short_repr(file)}: outside the dataset folder {short_repr(str(inside))} (it leads to "
            f"{short_repr(str(path))}); only files inside it are read unless the schema's [image] table sets "
            "allow_outside = true"
        )

    return locate, outside


def load_synthetic(
    n: int = synthetic.DEFAULT_N, *, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE, channels: int | None = None
) -> Dataset:
    """The embedded synthetic cohort (see :mod:`fusion.data.synthetic`) as a dataset;
    its films are gray (``channels`` 3: replicated into three equal channels, as any
    gray image read in colour)."""
    channels = check_channels(channels) or 1
    table, images = synthetic.make_cohort(n, seed=seed, image_size=image_size)
    if channels == 3:
        images = np.repeat(images[..., None], 3, axis=3)
    schema = load_schema("synthetic")
    return _from_validated("synthetic", schema, table, lambda rows, files: (images[rows], {}))


def check_channels(channels) -> int | None:
    """``channels`` if it is 1, 3 or None (what the data say), else a ``ConfigError``
    naming the ``image.channels`` setting."""
    if channels is None or (channels in CHANNELS and not isinstance(channels, bool)):
        return channels
    raise ConfigError(
        f"image.channels must be 1 (gray) or 3 (colour), or unset to follow the data; got {short_repr(channels)}",
        field="image.channels",
        value=channels,
        accepted="1 or 3, or unset",
    )


def load_folder(
    path: str | Path,
    schema: Schema | str | Path | None,
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    modalities=("image", "tabular"),
    cache_dir: str | Path | bool | None = None,
    cache_workers: int | None = None,
    memory_map: bool | None = None,
    channels: int | None = None,
) -> Dataset:
    """A folder with ``metadata.csv`` and the schema's image folder.

    ``path`` may also be the CSV file itself. Without ``schema`` the folder's own
    ``schema.toml`` is used. Decoded images are cached (see :mod:`fusion.data.cache`)
    in ``cache_dir`` (default: the user cache folder; ``False``: no cache), built by
    ``cache_workers`` processes; with ``memory_map`` (default: above 256 MB) the
    dataset's images are a :class:`~fusion.data.cache.MappedImages` read from the
    cache batch by batch, so memory does not grow with the number of films.
    ``channels``: 1 (gray) or 3 (colour); default the schema's ``[image] channels``
    (1 when it does not say).

    A row whose image leads outside the dataset folder (the CSV's folder), once ``..``
    and symlinks are resolved, is skipped with that reason and never opened, unless
    the schema's ``[image]`` table sets ``allow_outside = true``.

    Raises
    ------
    ValueError
        The CSV cannot be read (see :func:`read_table`), the schema's image folder
        leads outside the dataset folder without ``allow_outside``, or ``memory_map``
        is True and the cache folder cannot be written.
    """
    path = Path(path)
    csv = path if path.is_file() else path / "metadata.csv"
    root = csv.parent
    if not csv.is_file():
        raise FileNotFoundError(f"dataset {str(path)!r}: no metadata.csv (expected {csv})")
    if schema is None:
        if not (root / "schema.toml").is_file():
            raise ConfigError(
                f"dataset {str(path)!r} needs a schema: give one (data.schema) or put schema.toml beside metadata.csv",
                field="data.schema",
            )
        schema = root / "schema.toml"
    if not isinstance(schema, Schema):
        schema = load_schema(schema)
    channels = check_channels(channels) or schema.image_channels or 1
    table = read_table(csv)
    if schema.group is None:
        warnings.warn(
            f"schema {schema.name!r} declares no [group] column: every row counts as its own patient, so a "
            "patient's films can land on both sides of a split; declare [group] column = <patient id column>",
            stacklevel=2,
        )
    undeclared = schema.undeclared_columns(table.columns)
    if undeclared:
        warnings.warn(
            f"{csv}: columns not declared in schema {schema.name!r} are ignored: {short_list(undeclared)}",
            stacklevel=2,
        )
    loader = locate = None
    outside: list[str] = []
    if "image" in modalities and schema.image_column:
        folder = _image_folder(root, schema)
        locate, outside = _locator(root, folder, schema.image_allow_outside)
        cache = None if cache_dir is False else (cache_dir or default_cache_dir())

        def loader(rows, paths):
            # A partial pickles, for worker processes; gray keeps the call it always had.
            colour = {"channels": channels} if channels != 1 else {}
            decode = functools.partial(load_image, size=image_size, **colour)
            return cached_images(
                paths, image_size, decode, cache, workers=cache_workers, memory_map=memory_map, **colour
            )

    ds = _from_validated(root.name, schema, table, loader, locate)
    if outside:
        warnings.warn(
            f"{csv}: {len(outside)} row(s) name an image outside the dataset folder {root.resolve()} (first: "
            f"{short_repr(outside[0])}) and are skipped unread; if the films are kept elsewhere on purpose (linked "
            "in from another disk), set allow_outside = true in the schema's [image] table",
            stacklevel=2,
        )
    return ds


def load_npz(
    path: str | Path,
    *,
    schema: Schema | str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> Dataset:
    """An image-only dataset in MedMNIST layout: ``{split}_images`` and ``{split}_labels``
    for any subset of train/val/test. The file's own splits are kept.

    ``channels``: 1 (gray) or 3 (colour); default the schema's ``[image] channels``,
    else the file's own: 3 for colour arrays (n, H, W, 3), as MedMNIST's DermaMNIST
    holds, 1 for gray ones.

    ``schema`` (optional) names the classes through its label mapping of the raw
    labels. Without it, a built-in schema whose name begins the file name is used
    (``pneumoniamnist_trainval.npz`` -> ``pneumoniamnist``); failing that, the classes
    are the integer label values as strings.

    Raises
    ------
    ValueError
        Naming the file and the array: not an ``.npz`` archive, a split without its
        labels or of another length, an array of Python objects (never loaded: that
        would take pickle), images that are not numbers of shape (n, H, W[, C]), labels
        that are not integers (or, with a schema that maps them, text), a label the
        schema does not know, an image that cannot be read.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an .npz archive (a zip of .npy arrays, as numpy.savez writes)")
    if schema is None:
        # A built-in schema whose name starts the file name (pneumoniamnist_trainval.npz
        # -> pneumoniamnist) gives the classes their names.
        known = [n for n in builtin_schemas() if path.stem.lower().startswith(n)]
        schema = max(known, key=len) if known else None
    if schema is not None and not isinstance(schema, Schema):
        schema = load_schema(schema)
    parts = _npz_parts(path, text_labels=schema is not None)
    first = next(iter(parts.values()))[0]
    own = 3 if first.ndim == 4 and first.shape[-1] in (3, 4) else 1
    channels = check_channels(channels) or (schema.image_channels if schema is not None else None) or own
    raw = np.concatenate([labels for _, labels in parts.values()])
    if schema is not None:
        classes = schema.classes
        encode = schema.label.encode
    else:
        values = sorted({int(v) for v in raw})
        classes = tuple(str(v) for v in values)
        encode = values.index
    labels, images, files, splits, start = [], [], [], {}, 0
    size = image_size or int(next(iter(parts.values()))[0].shape[1])
    for split, (imgs, labs) in parts.items():
        for i, (img, lab) in enumerate(zip(imgs, labs, strict=True)):
            try:
                labels.append(encode(lab.item()))
            except ValueError as err:
                raise ValueError(f"{path}: {split}_labels[{i}]: {err}") from None
            try:
                plain = img.shape == row_shape(size, channels) and img.dtype == np.uint8
                images.append(img if plain else load_image(img, size, channels))
            except ValueError as err:
                raise ValueError(f"{path}: {split}_images[{i}]: {err}") from None
            files.append(f"{split}[{i}]")
        splits[split] = np.arange(start, start + len(labs))
        start += len(labs)
    return Dataset(
        name=path.stem,
        classes=tuple(classes),
        labels=np.asarray(labels, dtype=np.int64),
        images=np.stack(images),
        files=np.asarray(files, dtype=object),
        schema=schema,
        splits=splits,
    )


def _npz_parts(path: Path, *, text_labels: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images, labels)}`` of an .npz, every array checked by its header first."""
    with np.load(path, allow_pickle=False) as npz:
        present = [s for s in NPZ_SPLITS if f"{s}_images" in npz.files]
        if not present:
            raise ValueError(
                f"{path}: no '<split>_images' arrays; found {short_list(npz.files)}; "
                "expected e.g. train_images, train_labels"
            )
        parts = {}
        for split in present:
            if f"{split}_labels" not in npz.files:
                raise ValueError(f"{path}: has {split}_images but no {split}_labels")
            _check_npz_images(path, f"{split}_images", _npz_header(path, npz, f"{split}_images"))
            _check_npz_labels(path, f"{split}_labels", _npz_header(path, npz, f"{split}_labels")[1], text_labels)
            images, labels = npz[f"{split}_images"], npz[f"{split}_labels"].reshape(-1)
            if len(images) != len(labels):
                raise ValueError(f"{path}: {split}_images has {len(images)} rows but {split}_labels has {len(labels)}")
            parts[split] = (images, labels)
    return parts


def _npz_header(path: Path, npz, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of ``npz[key]`` from its .npy header, read before the array: an
    array of Python objects is refused by name here, never handed to pickle."""
    member = f"{key}.npy" if f"{key}.npy" in npz.zip.namelist() else key
    try:
        with npz.zip.open(member) as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fh)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: {key} is not a readable .npy array ({short_repr(str(err))})") from None
    if dtype.hasobject:
        raise ValueError(
            f"{path}: {key} holds Python objects (dtype object), which are never loaded (reading them would run "
            "pickle); save images as a uint8 (or uint16, float) array and labels as integers"
        )
    return shape, dtype


def _check_npz_images(path: Path, key: str, header: tuple[tuple[int, ...], np.dtype]) -> None:
    shape, dtype = header
    if dtype.kind not in "uif" or len(shape) not in (3, 4):
        raise ValueError(
            f"{path}: {key} is {dtype} of shape {shape}; expected images as numbers (uint8, uint16 or float) "
            "of shape (n, height, width) or (n, height, width, channels)"
        )


def _check_npz_labels(path: Path, key: str, dtype: np.dtype, text_labels: bool) -> None:
    if dtype.kind in "iu" or (text_labels and dtype.kind == "U"):
        return
    kind = f"text ({dtype})" if dtype.kind in "US" else str(dtype)
    message = f"{path}: {key} holds {kind} labels; expected integer class labels (0, 1, ...)"
    if dtype.kind == "U":  # text labels: what is missing is a schema to map them
        raise ConfigError(
            f"{message}, or text labels with a schema (data.schema) whose [label] maps them", field="data.schema"
        )
    raise ValueError(message)


def declared_image(
    path: str | Path | None, schema: Schema | str | Path | None
) -> tuple[int | None, bool | None, int | None]:
    """What a dataset's schema says of its images before any is read: ``[image]
    channels`` (None where it says nothing), ``flip_rotate`` (None without a schema)
    and ``detail`` (None where it says nothing). The schema ``load_dataset`` would use:
    the one given, else a folder's own ``schema.toml``. So settings that follow the
    data (an image size, starting weights, the detail limit) can be derived, and
    checked, before the images are loaded at that size.

    Raises
    ------
    SchemaError
        As :func:`~fusion.schema.load_schema`, for the schema the data would be read with.
    """
    if schema is None and path is not None:
        root = Path(path) if Path(path).is_dir() else Path(path).parent
        schema = root / "schema.toml" if (root / "schema.toml").is_file() and Path(path).suffix != ".npz" else None
    if schema is None:
        return None, None, None
    if not isinstance(schema, Schema):
        schema = load_schema(schema)
    return schema.image_channels, schema.image_flip_rotate, schema.image_detail


def load_dataset(
    path: str | Path | None = None,
    schema: Schema | str | Path | None = None,
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    synthetic_n: int = synthetic.DEFAULT_N,
    modalities=("image", "tabular"),
    cache_dir: str | Path | bool | None = None,
    cache_workers: int | None = None,
    memory_map: bool | None = None,
    channels: int | None = None,
) -> Dataset:
    """Load any supported dataset.

    Parameters
    ----------
    path : str or Path, optional
        None: the embedded synthetic cohort (``synthetic_n`` images, ``seed``);
        an ``.npz``: MedMNIST layout; a folder or CSV file: table plus images.
    schema : Schema, str or Path, optional
        A schema object, a TOML file or a built-in schema name.
    image_size : int
        Side of the decoded square images.
    modalities : iterable of str
        Images are decoded only when "image" is among them.
    cache_dir : str, Path or bool, optional
        Where decoded images of folder datasets are cached; default the user cache
        folder, ``False`` for none.
    cache_workers : int, optional
        Processes decoding images while a folder's cache is built (default: one per
        core for 1,024 films or more).
    memory_map : bool, optional
        Read a folder's cached images batch by batch from disk (True) or hold them in
        memory (False); default: from disk when they take more than 256 MB.
    channels : {1, 3}, optional
        Decode images to one gray channel, (n, S, S), or three colour channels,
        (n, S, S, 3); default what the data say: the schema's ``[image] channels``, an
        ``.npz``'s own arrays, else 1 (the synthetic cohort is gray).
    """
    if path is None:
        return load_synthetic(synthetic_n, seed=seed, image_size=image_size, channels=channels)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {str(path)!r} does not exist")
    if path.suffix == ".npz":
        return load_npz(path, schema=schema, image_size=image_size, channels=channels)
    return load_folder(
        path,
        schema,
        image_size=image_size,
        modalities=tuple(modalities),
        cache_dir=cache_dir,
        cache_workers=cache_workers,
        memory_map=memory_map,
        channels=channels,
    )
