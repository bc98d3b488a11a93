"""Schema-driven preprocessing of clinical records into model-ready arrays.

Fitted on the training split only. Each feature encodes itself as its kind says
(:mod:`fusion.schema.kinds`): a numeric feature, say, is imputed with the training median
and standardised, a categorical one one-hot encoded over the schema's categories. Features whose schema policy is
``missing = "indicator"`` get a 0/1 "was missing" column, because in clinical data
*whether* a test was ordered often says as much as its result. This class keeps the
layout (which columns come from which feature) and the fitted statistics.

The fitted state is plain numbers and strings, saved as JSON (no pickle), so a model
folder can be inspected and loaded safely.

Example
-------
>>> from fusion.schema import load_schema
>>> from fusion.data import load_dataset
>>> ds = load_dataset(None, image_size=32, synthetic_n=60)
>>> pre = TabularPreprocessor(ds.schema).fit(ds.records)
>>> pre.transform(ds.records).shape[1] == len(pre.columns_)
True
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fusion import checks
from fusion.checks import Where
from fusion.errors import InputError
from fusion.schema import Schema, short_repr

if TYPE_CHECKING:
    import pandas


def _is_frame(records: Any) -> bool:
    """A pandas DataFrame (which exists only once pandas is imported: the one-record
    prediction path never imports it)."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(records, pandas.DataFrame)


class TabularPreprocessor:
    """Impute, add missing-value indicators, scale and one-hot encode records.

    Parameters
    ----------
    schema : Schema

    Attributes
    ----------
    columns_ : list of str
        Names of the output columns, e.g. ``age``, ``age__missing``, ``sex=F``.
    sources_ : list of str
        For each output column, the schema feature it comes from (to sum attributions
        back onto features).
    stats_ : dict
        Per feature whose kind learns something from the training values
        (the keys of :attr:`~fusion.schema.Feature.stats_keys`: ``median``, ``mean`` and
        ``std`` of a numeric feature, say).
    """

    def __init__(self, schema: Schema):
        self.schema = schema

    # ------------------------------------------------------------------ fitting
    def fit(self, records: pandas.DataFrame) -> TabularPreprocessor:
        """Learn imputation values and scales from parsed training records.

        ``records`` must hold one column per schema feature, parsed by
        :meth:`Schema.validate_table` (numeric as float with NaN, others str/None).
        """
        self._check_columns(records)
        stats = {f.name: f.fit(self._column(records, f.name, f.dtype)) for f in self.schema.features}
        self.stats_ = {name: entry for name, entry in stats.items() if entry is not None}
        self.columns_, self.sources_ = self._layout()
        return self

    def _layout(self) -> tuple[list[str], list[str]]:
        """The network's input columns and, for each, the feature it comes from."""
        columns, sources = [], []
        for f in self.schema.features:
            names = f.columns()
            columns += names
            sources += [f.name] * len(names)
        return columns, sources

    def _check_columns(self, records) -> None:
        columns = records.columns if _is_frame(records) else records
        absent = [n for n in self.schema.feature_names if n not in columns]
        if absent:
            raise ValueError(f"records lack feature column(s) {absent} of schema {self.schema.name!r}")

    @staticmethod
    def _column(records, name: str, dtype) -> np.ndarray:
        """One feature's values as an array, from a DataFrame or a mapping of sequences
        (the latter skips pandas for single-record prediction)."""
        if _is_frame(records):
            return records[name].to_numpy(dtype=dtype)
        if dtype is object:
            out = np.empty(len(records[name]), dtype=object)
            out[:] = list(records[name])
            return out
        return np.array([np.nan if v is None else v for v in records[name]], dtype=dtype)

    # ---------------------------------------------------------------- transform
    def transform(self, records) -> np.ndarray:
        """Model input: float32 array of shape (n, len(columns_)), no NaN.

        ``records``: a DataFrame of parsed features, or a mapping feature -> sequence of
        parsed values (as :meth:`Schema.validate_record` returns, in lists). One record
        given as a mapping takes :meth:`transform_record`'s plain-Python path.
        """
        self._check_fitted()
        self._check_columns(records)
        if isinstance(records, Mapping) and all(len(v) == 1 for v in records.values()):
            return self.transform_record({name: values[0] for name, values in records.items()})
        blocks = [
            f.encode(self._column(records, f.name, f.dtype), self.stats_.get(f.name)) for f in self.schema.features
        ]
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def transform_record(self, values: Mapping[str, Any]) -> np.ndarray:
        """One parsed record as model input: float32 array of shape (1, len(columns_)).

        The same numbers as :meth:`transform` gives for a one-row table, computed in
        plain Python: for a single patient that is much faster than numpy's per-column
        work, which is what one prediction pays.

        ``values``: feature name -> parsed value, as :meth:`Schema.validate_record`
        returns.
        """
        self._check_fitted()
        absent = [n for n in self.schema.feature_names if n not in values]
        if absent:
            raise InputError(
                f"record lacks feature(s) {absent} of schema {self.schema.name!r}", field="record", value=absent
            )
        row: list[float] = []
        for f in self.schema.features:
            row += f.encode_one(values[f.name], self.stats_.get(f.name))
        return np.asarray([row], dtype=np.float32)

    def transform_raw(self, records) -> tuple[np.ndarray, list[str]]:
        """Input for models with native missing-value handling (XGBoost).

        Numbers unscaled, categoricals one-hot, no indicator columns; a missing value
        stays NaN for the trees to place only under the ``indicator`` policy (see
        :meth:`~fusion.schema.Feature.encode_raw`). :meth:`raw_sources` says which
        feature each column comes from.

        Returns
        -------
        X : numpy.ndarray of float32
        columns : list of str
        """
        self._check_fitted()
        self._check_columns(records)
        blocks = [
            f.encode_raw(self._column(records, f.name, f.dtype), self.stats_.get(f.name)) for f in self.schema.features
        ]
        return np.concatenate(blocks, axis=1).astype(np.float32), self.raw_columns()

    def raw_columns(self) -> list[str]:
        """Names of :meth:`transform_raw`'s columns, as each feature names them (its own
        name, or ``name=category`` for each category of a categorical one)."""
        return [name for f in self.schema.features for name in f.raw_columns()]

    def raw_sources(self) -> list[str]:
        """For each of :meth:`transform_raw`'s columns, the feature it comes from (to
        sum a tree model's attributions back onto features)."""
        return [f.name for f in self.schema.features for _ in f.raw_columns()]

    @property
    def n_features_out(self) -> int:
        self._check_fitted()
        return len(self.columns_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "stats_"):
            raise RuntimeError("TabularPreprocessor is not fitted; call fit(records) first")

    # ------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        """JSON-ready fitted state (the schema itself is saved beside it)."""
        self._check_fitted()
        return {"schema": self.schema.name, "columns": self.columns_, "sources": self.sources_, "stats": self.stats_}

    @classmethod
    def from_dict(cls, state: dict, schema: Schema, *, where: Where | None = None) -> TabularPreprocessor:
        """Rebuild a fitted preprocessor; the layout must match ``schema`` and every
        statistic is checked (finite numbers, a positive ``std``, a ``mode`` among the
        feature's categories).

        ``where``: the place the state was read from, for messages (a model folder's
        loader gives ``.../preprocessing.json: tabular``).

        Raises
        ------
        ValueError
            Naming the key at fault (``tabular.stats.age.std must be ...``).
        """
        where = where or Where("", "preprocessing")
        state = checks.keys(state, where, required=("schema", "columns", "sources", "stats"))
        name = checks.text(state["schema"], where / "schema")
        if name != schema.name:
            raise (where / "schema").refuse(
                f"{where / 'schema'} is {short_repr(name)}, but the model's schema is {schema.name!r}",
                value=name,
                accepted=repr(schema.name),
            )
        pre = cls(schema)
        pre.columns_, pre.sources_ = pre._layout()
        for key, expected in (("columns", pre.columns_), ("sources", pre.sources_)):
            if list(checks.texts(state[key], where / key)) != expected:
                raise (where / key).refuse(
                    f"{where / key}: saved preprocessing {key} {short_repr(state[key])} do not match schema "
                    f"{schema.name!r} (which gives {short_repr(expected)}); was the schema changed?",
                    value=state[key],
                    accepted=short_repr(expected),
                )
        pre.stats_ = _check_stats(state["stats"], where / "stats", schema)
        return pre


def _check_stats(stats: Any, where: Where, schema: Schema) -> dict[str, dict[str, Any]]:
    """The fitted statistics, one entry per feature whose kind keeps some, each checked
    by its kind."""
    stats = checks.mapping(stats, where)
    needed = [f for f in schema.features if f.stats_keys]
    missing = [f.name for f in needed if f.name not in stats]
    if missing:
        raise where.refuse(f"{where} lacks the statistics of {short_repr(missing)}", value=missing)
    unknown = sorted(set(stats) - {f.name for f in needed})
    if unknown:
        raise where.refuse(
            f"{where} has statistics of {short_repr(unknown)}, features whose kind keeps none", value=unknown
        )
    return {f.name: f.check_stats(stats[f.name], where / f.name) for f in needed}
