"""Feature kinds: one class per kind of record value, each owning all it implies.

A feature's kind (the schema's ``type``) decides how a raw value is parsed and what the
message says is accepted, which subgroups a report shows, what is learned from the
training records, how values become the network's input and the trees' raw input,
and how the service's form and the model card describe it. All of that lives in the
kind's class; the rest of the library asks the feature and never tests which kind it
is. :data:`KINDS` maps the schema's ``type`` word to the class: a new kind is a new
class here and one line there.

The kinds:

- :class:`Numeric`: a number, with an optional valid ``range`` (``out_of_range`` says
  what a value outside means) and subgroup ``bands``; imputed with the training median
  and standardised for the network, unscaled for the trees.
- :class:`Categorical`: one of unordered ``categories``; one-hot.
- :class:`Binary`: one of two ``categories``, ``[negative, positive]``; one 0/1 column,
  imputed with the training mode.
- :class:`Ordinal`: one of ordered ``categories`` (NYHA class I-IV, a tumour grade); one
  column holding the rank, so the order is kept for trees and network alike.

Every kind follows the feature's ``missing`` policy: ``indicator`` adds a 0/1 "was
missing" column for the network (the trees see NaN and learn where it goes),
``impute`` fills without telling the model, ``error`` refuses a missing value. A value
is missing when it is empty or a word such as ``NA`` (:data:`~fusion.schema.values.MISSING_STRINGS`),
or one of the feature's ``missing_tokens``: the values its source writes for "not
known" (``unknown``, ``?``, a numeric ``999``), which would otherwise be refused.

Example
-------
>>> sex = make_feature("sex", "categorical", categories=("F", "M"))
>>> sex.parse("M")
('M', None)
>>> sex.columns(), sex.raw_columns()
(['sex=F', 'sex=M', 'sex__missing'], ['sex=F', 'sex=M'])
>>> sex.encode_one(None, None)
[0.0, 0.0, 1.0]
>>> nyha = make_feature("nyha", "ordinal", categories=("I", "II", "III", "IV"))
>>> nyha.columns(), nyha.encode_one("III", {"median": "II"})
(['nyha', 'nyha__missing'], [0.6666666666666666, 0.0])
"""

from __future__ import annotations

import itertools
import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fusion import checks
from fusion.errors import InputError, SchemaError
from fusion.schema.values import ASCII_SPACE, DECIMAL, is_missing
from fusion.schema.values import raw_str as _raw_str
from fusion.schema.values import short_repr as _short

if TYPE_CHECKING:
    from fusion.checks import Where

MISSING_POLICIES = ("indicator", "impute", "error")
OUT_OF_RANGE_POLICIES = ("error", "missing")


@dataclass(frozen=True)
class Feature(ABC):
    """One feature column: what every kind holds, and the contract each kind fulfils.

    Abstract: make a feature with a kind (``Numeric("age", unit="years")``) or with
    :func:`make_feature` and the schema's ``type`` word. A kind implements the abstract
    methods and sets the class attributes below.

    Parameters
    ----------
    name : str
        Column name, also the key of a record at prediction time.
    unit : str, optional
        Unit of the value, for documentation, plots and the form.
    range : (float, float), optional
        Inclusive valid range of a numeric value.
    categories : tuple of str
        The values a feature of categories takes (empty for a numeric one); for a
        binary feature ``(negative, positive)``, for an ordinal one lowest first.
    missing : {"indicator", "impute", "error"}
        ``indicator``: impute and add a 0/1 missing-value column (use when missingness
        may carry information); ``impute``: impute only; ``error``: the value is required.
    missing_tokens : tuple of str
        Values that mean "not known" in this column (``("unknown",)``): parsed as a
        missing value, which the ``missing`` policy then handles, instead of being
        refused. Matched exactly as written (``"Unknown"`` is not ``"unknown"``); a
        numeric feature also matches a number token by value (``"0"`` matches
        ``0.0``). A token may not be one of the feature's categories.
    out_of_range : {"error", "missing"}
        What a numeric value outside ``range`` means: an invalid row or record
        (``error``), or a value known to be recorded in another unit or scale that is
        therefore treated as not measured (``missing``; counted in the report).
    bands : tuple of float
        Cut points of a numeric feature's bands for subgroup reports, ascending (e.g.
        ``[40, 65]``: under 40, 40 to 65, 65 and over).
    description : str

    Attributes
    ----------
    dtype : numpy.float64 or object
        A parsed column's dtype: numbers with NaN for missing, or strings with None.
    continuous : bool
        Whether values are measurements (drawn as distributions, checked as numbers by
        the EDA) rather than categories.
    input : {"number", "choice"}
        The widget the service's form gives the feature.
    stats_keys : tuple of str
        The statistics :meth:`fit` learns (none: nothing is saved for the feature).
    """

    name: str
    _: KW_ONLY
    unit: str | None = None
    range: tuple[float, float] | None = None
    categories: tuple[str, ...] = ()
    missing: str = "indicator"
    missing_tokens: tuple[str, ...] = ()
    out_of_range: str = "error"
    bands: tuple[float, ...] = ()
    description: str = ""

    dtype: ClassVar[Any] = object
    continuous: ClassVar[bool] = False
    input: ClassVar[str] = "choice"
    stats_keys: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        where = f"feature {self.name!r}"
        if self.missing not in MISSING_POLICIES:
            raise self._refuse(
                f"{where}: missing must be one of {MISSING_POLICIES}; got {self.missing!r}",
                "missing",
                value=self.missing,
                accepted=f"one of {MISSING_POLICIES}",
            )
        if self.out_of_range not in OUT_OF_RANGE_POLICIES:
            raise self._refuse(
                f"{where}: out_of_range must be one of {OUT_OF_RANGE_POLICIES}; got {self.out_of_range!r}",
                "out_of_range",
                value=self.out_of_range,
                accepted=f"one of {OUT_OF_RANGE_POLICIES}",
            )
        self._check_tokens(where)
        self._check(where)

    def _check_tokens(self, where: str) -> None:
        """Tokens are distinct non-blank strings, none of them a value the feature takes."""
        tokens = self.missing_tokens
        if isinstance(tokens, list):  # as Python callers write a list; frozen, hence object.__setattr__
            object.__setattr__(self, "missing_tokens", tokens := tuple(tokens))
        accepted = "distinct, non-blank strings that are not categories of the feature"
        if not isinstance(tokens, tuple) or not all(isinstance(t, str) and t.strip(ASCII_SPACE) for t in tokens):
            raise self._refuse(
                f"{where}: missing_tokens must be {accepted}; got {_short(tokens)}",
                "missing_tokens",
                value=tokens,
                accepted=accepted,
            )
        clash = [t for t in tokens if t in self.categories]
        if len(set(tokens)) != len(tokens) or clash:
            why = f"{_short(clash[0])} is also a category" if clash else "a token repeats"
            raise self._refuse(
                f"{where}: missing_tokens must be {accepted}; {why}: {list(tokens)}",
                "missing_tokens",
                value=tokens,
                accepted=accepted,
            )

    def _refuse(self, message: str, key: str, **attributes: Any) -> SchemaError:
        """The error for a declaration the kind refuses: ``field`` is the schema's table
        and key (``[features.age] range``)."""
        return SchemaError(message, field=f"[features.{self.name}] {key}", **attributes)

    def _refused(self, message: str, value: Any) -> InputError:
        """The error for a value this feature does not accept, naming it and what is accepted."""
        return InputError(message, field=self.name, value=value, accepted=self.accepted)

    @abstractmethod
    def _check(self, where: str) -> None:
        """Refuse parameters the kind does not take or cannot use."""

    @property
    def type(self) -> str:
        """The schema's word for the kind (``numeric``, ...), from :data:`KINDS`."""
        words = {kind: word for word, kind in KINDS.items()}
        return next(words[cls] for cls in type(self).__mro__ if cls in words)

    # ------------------------------------------------------------------ values
    @property
    @abstractmethod
    def accepted(self) -> str:
        """A human description of the accepted values, for error messages."""

    @property
    def missing_value(self) -> Any:
        """What :meth:`parse` gives for a missing value (NaN or None, as :attr:`dtype`)."""
        return math.nan if self.dtype is np.float64 else None

    def parse(self, value: Any) -> tuple[Any, str | None]:
        """Parse one raw value.

        Returns
        -------
        value : float, str or None
            ``float`` (NaN when missing) for numeric features, the category string or
            ``None`` for the others.
        note : str or None
            Set when a value was turned into a missing value by the schema's declared
            ``out_of_range = "missing"`` policy, so callers can report it.

        Raises
        ------
        InputError
            A ``ValueError``: the value is not accepted; the message names the
            feature, the value and what is accepted, and so do ``field``, ``value`` and
            ``accepted``.
        """
        token = self.missing_token(value)
        if token is not None or is_missing(value):
            if self.missing == "error":
                got = f"{_short(token)}, which means not known" if token is not None else "a missing value"
                raise self._refused(f"{self.name!r} is required ({self.accepted}); got {got}", value)
            return self.missing_value, None
        return self._parse(value)

    def missing_token(self, value: Any) -> str | None:
        """The declared ``missing_tokens`` entry ``value`` is (None: it is none of them).

        A string matches a token exactly; a number or boolean through its plain text
        (``999`` and ``999.0`` match ``"999"``), as categories are matched."""
        if not self.missing_tokens or (not isinstance(value, str) and is_missing(value)):
            return None
        text = value if isinstance(value, str) else _raw_str(value)
        return text if text in self.missing_tokens else None

    def _tokens_note(self) -> str:
        """What :attr:`accepted` adds for the tokens that mean not known."""
        if not self.missing_tokens:
            return ""
        return f" (or {' or '.join(repr(t) for t in self.missing_tokens)} for not known)"

    @abstractmethod
    def _parse(self, value: Any) -> tuple[Any, str | None]:
        """:meth:`parse` of a value that is not missing."""

    def missing_mask(self, values: np.ndarray) -> np.ndarray:
        """Which parsed values (an array of :attr:`dtype`) are missing."""
        return np.array([is_missing(v) for v in values], dtype=bool)

    # --------------------------------------------------------------- subgroups
    @property
    def has_subgroups(self) -> bool:
        """Whether a subgroup report can split patients by this feature."""
        return True

    def check_subgroups(self) -> None:
        """Raise a ``ValueError`` (a :class:`~fusion.errors.SchemaError`) saying why when
        no subgroup report can split by this feature (:attr:`has_subgroups` is False)."""
        if not self.has_subgroups:
            raise SchemaError(f"{self.name!r} ({self.type}) declares no subgroups", field=f"[features.{self.name}]")

    def band(self, value: Any) -> str:
        """The subgroup a parsed value falls in: its band (numeric features with
        ``bands``), its category, or "missing"."""
        return "missing" if is_missing(value) else str(value)

    def band_names(self) -> list[str]:
        """Every subgroup :meth:`band` can return, in their natural order."""
        return [*self.categories, "missing"]

    # ---------------------------------------------------------------- encoding
    def value_columns(self) -> list[str]:
        """Names of the columns the value itself becomes (without the missing indicator)."""
        return [self.name]

    def columns(self) -> list[str]:
        """Names of the network's input columns from this feature, all of them its own."""
        indicator = [f"{self.name}__missing"] if self.missing == "indicator" else []
        return self.value_columns() + indicator

    def raw_columns(self) -> list[str]:
        """Names of the trees' raw input columns from this feature, all of them its own."""
        return self.value_columns()

    def fit(self, values: np.ndarray) -> dict[str, Any] | None:
        """What encoding needs from the training values (JSON-ready, keys
        :attr:`stats_keys`), or None when it needs nothing."""
        return None

    def check_stats(self, entry: Any, where: Where) -> dict[str, Any]:
        """Saved statistics, checked (finite numbers, known categories), naming the key at fault."""
        entry = checks.keys(entry, where, required=self.stats_keys)
        return {key: self._check_stat(key, entry[key], where / key) for key in self.stats_keys}

    def _check_stat(self, key: str, value: Any, where: Where) -> Any:
        """One saved statistic, checked (a kind with :attr:`stats_keys` implements it)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no statistic {key!r}")

    def encode(self, values: np.ndarray, stats: dict | None) -> np.ndarray:
        """The network's input columns (float64, shape ``(n, len(columns()))``, no NaN)
        from parsed values (an array of :attr:`dtype`)."""
        missing = self.missing_mask(values)
        block = self._encode(values, missing, stats)
        if self.missing == "indicator":
            block = np.concatenate([block, missing.astype(np.float64)[:, None]], axis=1)
        return block

    def encode_one(self, value: Any, stats: dict | None) -> list[float]:
        """:meth:`encode` of one parsed value in plain Python (what one prediction pays)."""
        missing = is_missing(value)
        row = self._encode_one(value, missing, stats)
        return [*row, float(missing)] if self.missing == "indicator" else row

    def encode_raw(self, values: np.ndarray, stats: dict | None) -> np.ndarray:
        """The trees' input columns (float64, shape ``(n, len(raw_columns()))``): values
        unscaled; a missing value stays NaN (the trees learn where it goes, which is
        what the indicator gives the network) only under the ``indicator`` policy, and
        is filled as for the network otherwise, so that the schema's judgement that
        missingness must not be learned from holds for every model."""
        missing = self.missing_mask(values)
        block = self._encode_raw(values, missing, stats)
        if self.missing == "indicator":
            block[missing] = np.nan
        return block

    @abstractmethod
    def _encode(self, values: np.ndarray, missing: np.ndarray, stats: dict | None) -> np.ndarray:
        """The value columns of :meth:`encode`, given which values are missing."""

    @abstractmethod
    def _encode_one(self, value: Any, missing: bool, stats: dict | None) -> list[float]:
        """The value columns of :meth:`encode_one`."""

    def _encode_raw(self, values: np.ndarray, missing: np.ndarray, stats: dict | None) -> np.ndarray:
        """The columns of :meth:`encode_raw` before missing values become NaN: by
        default the network's (one-hot, 0/1), for kinds that scale nothing."""
        return self._encode(values, missing, stats)

    # -------------------------------------------------------------- describing
    def form_field(self) -> dict[str, Any]:
        """What the service's form needs to render and check an input for the feature
        (``GET /schema``): ``input`` names the widget, ``number`` or ``choice``."""
        return {
            "name": self.name,
            "type": self.type,
            "input": self.input,
            "unit": self.unit,
            "range": list(self.range) if self.range is not None else None,
            # "missing": a value outside the range is taken as not measured,
            # so it is not refused (neither by the server nor by the page).
            "out_of_range": self.out_of_range,
            "categories": list(self.categories),
            # Values that mean "not known": the page offers them beside the categories.
            "missing_tokens": list(self.missing_tokens),
            "required": self.missing == "error",
            "accepted": self.accepted,
            "description": self.description,
        }

    def card_entry(self) -> str:
        """The feature's kind and values for the model card (``numeric (years)``)."""
        return f"{self.type} ({self.unit or ', '.join(self.categories)})"


@dataclass(frozen=True)
class Numeric(Feature):
    """A measurement: a finite number, in ``range`` when one is given."""

    dtype: ClassVar[Any] = np.float64
    continuous: ClassVar[bool] = True
    input: ClassVar[str] = "number"
    stats_keys: ClassVar[tuple[str, ...]] = ("median", "mean", "std")

    def _check(self, where: str) -> None:
        if self.categories:
            raise self._refuse(
                f"{where}: a numeric feature takes a range, not categories", "categories", value=self.categories
            )
        if self.range is not None:
            lo, hi = self.range
            if not lo < hi:
                accepted = "[low, high] with low < high"
                raise self._refuse(
                    f"{where}: range must be {accepted}; got {list(self.range)}",
                    "range",
                    value=self.range,
                    accepted=accepted,
                )
        if list(self.bands) != sorted(set(self.bands)):
            accepted = "strictly ascending cut points"
            raise self._refuse(
                f"{where}: bands must be {accepted}; got {list(self.bands)}",
                "bands",
                value=self.bands,
                accepted=accepted,
            )

    @property
    def accepted(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.range is None:
            return f"a finite number{unit}{self._tokens_note()}"
        return f"a number in [{self.range[0]:g}, {self.range[1]:g}]{unit}{self._tokens_note()}"

    def missing_token(self, value: Any) -> str | None:
        """As :meth:`Feature.missing_token`, and a number token also matches the same
        number written otherwise (``"0"`` matches ``"0.0"`` and ``0``): a column of
        numbers is compared as numbers."""
        token = super().missing_token(value)
        if token is not None or not self.missing_tokens or isinstance(value, (bool, np.bool_)):
            return token
        if isinstance(value, str):
            text = value.strip(ASCII_SPACE)
            number = float(text) if DECIMAL.fullmatch(text) else None
        elif isinstance(value, numbers.Real):
            try:
                number = float(value)
            except OverflowError:  # an int beyond float's range: no token's number
                return None
        else:
            return None
        if number is None or not math.isfinite(number):
            return None
        return next((t for t in self.missing_tokens if DECIMAL.fullmatch(t) and float(t) == number), None)

    def _parse(self, value: Any) -> tuple[float, str | None]:
        bad = f"{self.name!r} must be {self.accepted}; got {_short(value)}"
        if isinstance(value, (bool, np.bool_)):
            raise self._refused(bad, value)
        if isinstance(value, str):
            text = value.strip(ASCII_SPACE)
            if not DECIMAL.fullmatch(text):
                raise self._refused(bad, value)
            number = float(text)
        elif isinstance(value, numbers.Real):
            try:
                number = float(value)
            except OverflowError:  # an int beyond float's range, e.g. 10**400
                raise self._refused(bad, value) from None
        else:
            raise self._refused(bad, value)
        if not math.isfinite(number):
            raise self._refused(bad, value)
        if self.range is not None and not self.range[0] <= number <= self.range[1]:
            if self.out_of_range == "missing":
                return math.nan, f"{self.name}={_short(value)} outside {self.accepted}: treated as missing"
            raise self._refused(bad, value)
        return number, None

    def missing_mask(self, values: np.ndarray) -> np.ndarray:
        return np.isnan(values)

    @property
    def has_subgroups(self) -> bool:
        return bool(self.bands)

    def check_subgroups(self) -> None:
        if not self.bands:
            raise SchemaError(
                f"{self.name!r} is numeric and its schema declares no bands (e.g. bands = [40, 65])",
                field=f"[features.{self.name}] bands",
            )

    def band(self, value: Any) -> str:
        if is_missing(value):
            return "missing"
        self.check_subgroups()
        edges = list(self.bands)
        for i, edge in enumerate(edges):
            if value < edge:
                return f"< {edges[0]:g}" if i == 0 else f"{edges[i - 1]:g}-{edge:g}"
        return f">= {edges[-1]:g}"

    def band_names(self) -> list[str]:
        self.check_subgroups()
        edges = list(self.bands)
        inner = [f"{a:g}-{b:g}" for a, b in itertools.pairwise(edges)]
        return [f"< {edges[0]:g}", *inner, f">= {edges[-1]:g}", "missing"]

    def fit(self, values: np.ndarray) -> dict[str, float]:
        observed = values[~np.isnan(values)]
        if observed.size == 0:
            return {"median": 0.0, "mean": 0.0, "std": 1.0}  # never observed: the indicator carries all
        return {
            "median": float(np.median(observed)),
            "mean": float(observed.mean()),
            "std": float(observed.std()) or 1.0,
        }

    def _check_stat(self, key: str, value: Any, where: Where) -> float:
        if key == "std":  # a zero std would divide by zero
            return checks.number(value, where, low=0, low_open=True)
        return checks.number(value, where)

    def _encode(self, values: np.ndarray, missing: np.ndarray, stats: dict) -> np.ndarray:
        filled = np.where(missing, stats["median"], values)
        return ((filled - stats["mean"]) / stats["std"])[:, None]

    def _encode_one(self, value: Any, missing: bool, stats: dict) -> list[float]:
        return [((stats["median"] if missing else float(value)) - stats["mean"]) / stats["std"]]

    def _encode_raw(self, values: np.ndarray, missing: np.ndarray, stats: dict) -> np.ndarray:
        return np.where(missing, stats["median"], values)[:, None]


@dataclass(frozen=True)
class _Choice(Feature):
    """The kinds whose value is one of the schema's ``categories``."""

    def _check(self, where: str) -> None:
        if self.range is not None or self.bands:
            key = "range" if self.range is not None else "bands"
            raise self._refuse(f"{where}: {_a(self.type)} feature takes categories, not a range or bands", key)
        self._check_count(where)
        if len(set(self.categories)) != len(self.categories):
            raise self._refuse(
                f"{where}: categories repeat: {list(self.categories)}", "categories", value=self.categories
            )

    def _check_count(self, where: str) -> None:
        if len(self.categories) < 2:
            raise self._refuse(
                f"{where}: {_a(self.type)} feature needs at least two categories",
                "categories",
                value=self.categories,
                accepted="at least two categories",
            )

    @property
    def accepted(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.categories) + self._tokens_note()

    def _parse(self, value: Any) -> tuple[str, None]:
        # A string must be one declared value exactly: " M " is not "M" (a value that
        # needs cleaning is refused, never cleaned silently). Numbers and booleans are
        # compared through their plain text (1 -> "1", True -> "True").
        text = value if isinstance(value, str) else _raw_str(value)
        if text not in self.categories:
            raise self._refused(f"{self.name!r} must be {self.accepted}; got {_short(value)}", value)
        return text, None

    def _check_stat(self, key: str, value: Any, where: Where) -> str:
        return checks.text(value, where, choices=self.categories)


@dataclass(frozen=True)
class Categorical(_Choice):
    """One of unordered categories: one-hot, a missing value in none of them."""

    def value_columns(self) -> list[str]:
        return [f"{self.name}={c}" for c in self.categories]

    def _encode(self, values: np.ndarray, missing: np.ndarray, stats: None) -> np.ndarray:
        return np.stack([values == c for c in self.categories], axis=1).astype(np.float64)

    def _encode_one(self, value: Any, missing: bool, stats: None) -> list[float]:
        return [float(not missing and value == c) for c in self.categories]


@dataclass(frozen=True)
class Binary(_Choice):
    """One of two categories, ``(negative, positive)``: one 0/1 column, a missing value
    taken as the training mode."""

    stats_keys: ClassVar[tuple[str, ...]] = ("mode",)

    def _check_count(self, where: str) -> None:
        if len(self.categories) != 2:
            raise self._refuse(
                f"{where}: a binary feature needs exactly two categories "
                f"[negative, positive]; got {list(self.categories)}",
                "categories",
                value=self.categories,
                accepted="exactly two categories [negative, positive]",
            )

    def fit(self, values: np.ndarray) -> dict[str, str]:
        observed = [v for v in values if not is_missing(v)]
        positive = sum(v == self.categories[1] for v in observed)
        return {"mode": self.categories[1] if positive * 2 > len(observed) else self.categories[0]}

    def _encode(self, values: np.ndarray, missing: np.ndarray, stats: dict) -> np.ndarray:
        filled = np.where(missing, stats["mode"], values)
        return (filled == self.categories[1]).astype(np.float64)[:, None]

    def _encode_one(self, value: Any, missing: bool, stats: dict) -> list[float]:
        return [float((stats["mode"] if missing else value) == self.categories[1])]


@dataclass(frozen=True)
class Ordinal(_Choice):
    """One of ordered categories (NYHA class I-IV, a pain scale, a tumour grade), listed
    lowest first: one column holding the category's rank, so both models see the order.

    The trees get the rank itself (0 to k - 1). The network gets the rank divided by
    k - 1, so in [0, 1]: the schema fixes the scale (nothing is learned from the data
    for it) and it sits with the 0/1 columns of the other kinds. A missing value is the
    training median category (a middle rank, not the lowest, which a 0 would claim),
    with the indicator column when the policy asks for it.
    """

    stats_keys: ClassVar[tuple[str, ...]] = ("median",)

    def _rank(self, value: str) -> int:
        return self.categories.index(value)

    def fit(self, values: np.ndarray) -> dict[str, str]:
        ranks = sorted(self._rank(v) for v in values if not is_missing(v))
        # The lower median: a category of the schema, never between two. None observed: the lowest.
        return {"median": self.categories[ranks[(len(ranks) - 1) // 2] if ranks else 0]}

    def _ranks(self, values: np.ndarray, missing: np.ndarray, stats: dict) -> np.ndarray:
        filled = np.where(missing, stats["median"], values)
        return np.array([self._rank(v) for v in filled], dtype=np.float64)

    def _encode(self, values: np.ndarray, missing: np.ndarray, stats: dict) -> np.ndarray:
        return (self._ranks(values, missing, stats) / (len(self.categories) - 1))[:, None]

    def _encode_one(self, value: Any, missing: bool, stats: dict) -> list[float]:
        return [self._rank(stats["median"] if missing else value) / (len(self.categories) - 1)]

    def _encode_raw(self, values: np.ndarray, missing: np.ndarray, stats: dict) -> np.ndarray:
        return self._ranks(values, missing, stats)[:, None]

    def card_entry(self) -> str:
        return f"{self.type} ({' < '.join(self.categories)})"


def _a(word: str) -> str:
    """``word`` with its indefinite article ("a numeric", "an ordinal")."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


# The schema's ``type`` words, the only place they are written. Their order is the order
# messages list them in.
KINDS: dict[str, type[Feature]] = {
    "numeric": Numeric,
    "categorical": Categorical,
    "binary": Binary,
    "ordinal": Ordinal,
}
FEATURE_TYPES = tuple(KINDS)


def make_feature(name: str, type: str, **fields: Any) -> Feature:
    """The feature of kind ``type`` (a word of :data:`KINDS`), as a schema declares it.

    Raises
    ------
    ValueError
        An unknown ``type``, or fields the kind refuses (naming the feature).
    """
    kind = KINDS.get(type) if isinstance(type, str) else None
    if kind is None:
        raise SchemaError(
            f"feature {name!r}: type must be one of {FEATURE_TYPES}; got {type!r}",
            field=f"[features.{name}] type",
            value=type,
            accepted=f"one of {FEATURE_TYPES}",
        )
    return kind(name, **fields)
