"""Loading datasets: the embedded synthetic cohort, folders of X-rays with a clinical
table, and MedMNIST-style ``.npz`` files, all into one in-memory :class:`Dataset`.

Images are decoded once, at load time, into uint8 arrays at the model's size; the
clinical table is parsed and validated against the schema once. Rows that fail are
skipped and reported in ``Dataset.skipped`` (row, file, reason), never coerced.
"""

from __future__ import annotations

import csv
import functools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from fusion.data import synthetic
from fusion.data.cache import MappedImages, cached_images, default_cache_dir, take_rows
from fusion.data.dataset import Dataset
from fusion.data.images import load_image
from fusion.nets.registry import BACKBONES, DEFAULT_BACKBONE
from fusion.schema import Schema, builtin_schemas, load_schema

NPZ_SPLITS = ("train", "val", "test")
# Loaders decode at the default backbone's input size unless told otherwise.
DEFAULT_IMAGE_SIZE = BACKBONES[DEFAULT_BACKBONE].default_size


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV as strings, so that the schema, not pandas, decides types and missing values.

    Raises
    ------
    ValueError
        The header names a column twice: pandas would rename the second copy
        (``age.1``) and the schema would silently read the first.
    """
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        header = next(csv.reader(fh), [])
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise ValueError(
            f"{path}: column(s) {repeated} appear more than once in the header; each column must be named once"
        )
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="replace")


def _from_validated(name: str, schema: Schema, table: pd.DataFrame, load_images) -> Dataset:
    """Build a dataset from a raw table: validate rows, drop duplicated images, then
    load the images of the rows left.

    ``load_images(rows, files) -> (uint8 array, {position: error})`` or None for a
    dataset without images.
    """
    checked = schema.validate_table(table)
    skipped = list(checked.skipped)
    files = checked.images if checked.images is not None else [None] * len(checked.labels)
    keep, seen = [], {}
    for pos, (row, file) in enumerate(zip(checked.features.index, files, strict=True)):
        if file is not None and file in seen:
            skipped.append({"row": row, "file": file, "reason": f"duplicate image: also used by row {seen[file]}"})
            continue
        if file is not None:
            seen[file] = row
        keep.append(pos)
    images = None
    if load_images is not None:
        rows = [checked.features.index[p] for p in keep]
        images, errors = load_images(rows, [files[p] for p in keep])
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
    )


def load_synthetic(n: int = synthetic.DEFAULT_N, *, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE) -> Dataset:
    """The embedded synthetic cohort (see :mod:`fusion.data.synthetic`) as a dataset."""
    table, images = synthetic.make_cohort(n, seed=seed, image_size=image_size)
    schema = load_schema("synthetic")
    return _from_validated("synthetic", schema, table, lambda rows, files: (images[rows], {}))


def load_folder(
    path: str | Path,
    schema: Schema | str | Path | None,
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    modalities=("image", "tabular"),
    cache_dir: str | Path | bool | None = None,
    cache_workers: int | None = None,
    memory_map: bool | None = None,
) -> Dataset:
    """A folder with ``metadata.csv`` and the schema's image folder.

    ``path`` may also be the CSV file itself. Without ``schema`` the folder's own
    ``schema.toml`` is used. Decoded images are cached (see :mod:`fusion.data.cache`)
    in ``cache_dir`` (default: the user cache folder; ``False``: no cache), built by
    ``cache_workers`` processes; with ``memory_map`` (default: above 256 MB) the
    dataset's images are a :class:`~fusion.data.cache.MappedImages` read from the
    cache batch by batch, so memory does not grow with the number of films.
    """
    path = Path(path)
    csv = path if path.is_file() else path / "metadata.csv"
    root = csv.parent
    if not csv.is_file():
        raise FileNotFoundError(f"dataset {str(path)!r}: no metadata.csv (expected {csv})")
    if schema is None:
        if not (root / "schema.toml").is_file():
            raise ValueError(
                f"dataset {str(path)!r} needs a schema: give one (data.schema) or put schema.toml beside metadata.csv"
            )
        schema = root / "schema.toml"
    if not isinstance(schema, Schema):
        schema = load_schema(schema)
    table = read_table(csv)
    if schema.group is None:
        warnings.warn(
            f"schema {schema.name!r} declares no [group] column: every row counts as its own patient, so a "
            "patient's films can land on both sides of a split; declare [group] column = <patient id column>",
            stacklevel=2,
        )
    undeclared = schema.undeclared_columns(table.columns)
    if undeclared:
        warnings.warn(f"{csv}: columns not declared in schema {schema.name!r} are ignored: {undeclared}", stacklevel=2)
    loader = None
    if "image" in modalities and schema.image_column:
        folder = root / (schema.image_folder or ".")
        cache = None if cache_dir is False else (cache_dir or default_cache_dir())

        def loader(rows, files):
            decode = functools.partial(load_image, size=image_size)  # pickles, for worker processes
            return cached_images(
                [folder / f for f in files], image_size, decode, cache, workers=cache_workers, memory_map=memory_map
            )

    return _from_validated(root.name, schema, table, loader)


def load_npz(path: str | Path, *, schema: Schema | str | Path | None = None, image_size: int | None = None) -> Dataset:
    """An image-only dataset in MedMNIST layout: ``{split}_images`` and ``{split}_labels``
    for any subset of train/val/test. The file's own splits are kept.

    ``schema`` (optional) names the classes through its label mapping of the raw
    integer labels. Without it, a built-in schema whose name begins the file name is
    used (``pneumoniamnist_trainval.npz`` -> ``pneumoniamnist``); failing that, the
    classes are the label values as strings.
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as npz:
        present = [s for s in NPZ_SPLITS if f"{s}_images" in npz.files]
        if not present:
            raise ValueError(
                f"{path}: no '<split>_images' arrays; found {npz.files}; expected e.g. train_images, train_labels"
            )
        parts = {}
        for split in present:
            if f"{split}_labels" not in npz.files:
                raise ValueError(f"{path}: has {split}_images but no {split}_labels")
            images, labels = npz[f"{split}_images"], npz[f"{split}_labels"].reshape(-1)
            if len(images) != len(labels):
                raise ValueError(f"{path}: {split}_images has {len(images)} rows but {split}_labels has {len(labels)}")
            parts[split] = (images, labels)
    if schema is None:
        # A built-in schema whose name starts the file name (pneumoniamnist_trainval.npz
        # -> pneumoniamnist) gives the classes their names.
        known = [n for n in builtin_schemas() if path.stem.lower().startswith(n)]
        schema = max(known, key=len) if known else None
    if schema is not None and not isinstance(schema, Schema):
        schema = load_schema(schema)
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
            labels.append(encode(lab.item()))
            images.append(
                img
                if img.shape[:2] == (size, size) and img.ndim == 2 and img.dtype == np.uint8
                else load_image(img, size)
            )
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
    """
    if path is None:
        return load_synthetic(synthetic_n, seed=seed, image_size=image_size)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {str(path)!r} does not exist")
    if path.suffix == ".npz":
        return load_npz(path, schema=schema, image_size=image_size)
    return load_folder(
        path,
        schema,
        image_size=image_size,
        modalities=tuple(modalities),
        cache_dir=cache_dir,
        cache_workers=cache_workers,
        memory_map=memory_map,
    )
