"""Feature kinds (fusion.schema.kinds): each kind parses, refuses, encodes for the
network and for the trees with the feature of every column, and describes itself."""

import math

import numpy as np
import pytest

from fusion.schema import KINDS, Feature, make_feature, parse_schema, records_frame
from fusion.schema.kinds import Binary, Categorical, Numeric


def values(feature, raw):
    """Raw values parsed, as the column a table of records holds."""
    parsed = [feature.parse(v)[0] for v in raw]
    out = np.empty(len(parsed), dtype=feature.dtype)
    out[:] = parsed
    return out


# ------------------------------------------------------------------ the registry
def test_every_type_word_is_a_kind_and_loads_from_toml():
    params = {"numeric": "", "categorical": "categories = ['a', 'b']", "binary": "categories = ['n', 'y']"}
    assert set(KINDS) == set(params)
    for word, kind in KINDS.items():
        toml = f"[label]\ncolumn='y'\nclasses={{a=['1'], b=['2']}}\n[features.x]\ntype='{word}'\n{params[word]}"
        feature = parse_schema(toml).feature("x")
        assert type(feature) is kind and feature.type == word


def test_the_base_class_is_not_a_kind():
    with pytest.raises(TypeError, match="abstract"):
        Feature("x")
    with pytest.raises(ValueError, match=r"feature 'x': type must be one of \('numeric', .*\); got 'text'"):
        make_feature("x", "text")


@pytest.mark.parametrize(
    "word, fields, message",
    [
        ("categorical", {"categories": ("a", "b", "a")}, "categories repeat"),
        ("binary", {"categories": ("a", "b"), "range": (0.0, 1.0)}, "a binary feature takes categories, not a"),
        ("categorical", {"categories": ("a",)}, "a categorical feature needs at least two categories"),
        ("binary", {"categories": ("a", "b", "c")}, "exactly two categories"),
        ("numeric", {"categories": ("a", "b")}, "a numeric feature takes a range, not categories"),
        ("numeric", {"bands": (65.0, 40.0)}, "strictly ascending"),
        ("numeric", {"missing": "drop"}, "missing must be one of"),
    ],
)
def test_a_kind_refuses_parameters_it_cannot_use(word, fields, message):
    with pytest.raises(ValueError, match=message):
        make_feature("x", word, **fields)


# ------------------------------------------------------------- parsing values
KIND_CASES = [
    (Numeric("age", range=(0.0, 120.0), unit="years"), [" 54 ", 61, 7.5], ["abc", 130, True, "3_8"]),
    (Categorical("view", categories=("PA", "AP", "LL")), ["PA", "LL"], ["pa", " PA", 1]),
    (Binary("smoker", categories=("no", "yes")), ["yes", "no"], ["maybe", True]),
]


@pytest.mark.parametrize("feature, good, bad", KIND_CASES, ids=lambda c: getattr(c, "type", None))
def test_each_kind_parses_its_values_and_refuses_others_naming_field_value_and_accepted(feature, good, bad):
    for raw in good:
        value, note = feature.parse(raw)
        assert note is None and not (isinstance(value, float) and math.isnan(value))
    for raw in bad:
        with pytest.raises(ValueError) as err:
            feature.parse(raw)
        assert repr(feature.name) in str(err.value) and feature.accepted in str(err.value)
        assert repr(raw) in str(err.value)
    missing, _ = feature.parse("NA")
    assert missing is None or math.isnan(missing)


def test_a_required_value_of_any_kind_is_refused_when_missing():
    for word in KINDS:
        categories = () if word == "numeric" else ("a", "b")
        feature = make_feature("x", word, categories=categories, missing="error")
        with pytest.raises(ValueError, match=r"'x' is required"):
            feature.parse(None)


# ------------------------------------------------------------------ encoding
ENCODED = [
    # feature, training values, values to encode, network columns, raw columns
    (Numeric("age"), [20, 40, None], [None, 30], ["age", "age__missing"], ["age"]),
    (
        Categorical("view", categories=("PA", "AP")),
        ["PA", "AP", None],
        [None, "AP"],
        ["view=PA", "view=AP", "view__missing"],
        ["view=PA", "view=AP"],
    ),
    (
        Binary("smoker", categories=("no", "yes"), missing="impute"),
        ["yes", "yes", "no"],
        [None, "no"],
        ["smoker"],
        ["smoker"],
    ),
]


@pytest.mark.parametrize("feature, train, rows, columns, raw_columns", ENCODED, ids=lambda c: getattr(c, "type", None))
def test_each_kind_encodes_for_the_network_and_the_trees_naming_its_columns(feature, train, rows, columns, raw_columns):
    stats = feature.fit(values(feature, train))
    assert (stats is None) == (not feature.stats_keys)
    assert feature.columns() == columns and feature.raw_columns() == raw_columns
    parsed = values(feature, rows)
    block = feature.encode(parsed, stats)
    assert block.shape == (len(rows), len(columns)) and np.isfinite(block).all()
    # One value at a time (the single-prediction path) gives the same numbers.
    np.testing.assert_array_equal(np.array([feature.encode_one(v, stats) for v in parsed]), block)
    raw = feature.encode_raw(parsed, stats)
    assert raw.shape == (len(rows), len(raw_columns))
    # Under the indicator policy a missing value stays NaN for the trees, else it is filled.
    assert np.isnan(raw[0]).all() == (feature.missing == "indicator")
    assert not np.isnan(raw[1]).any()


def test_the_preprocessor_maps_every_column_to_its_feature_without_reading_names():
    """A feature whose name holds '=' (which a one-hot column also holds) keeps its
    columns: the map comes from the kinds, never from splitting names."""
    from fusion.preprocessing import TabularPreprocessor

    schema = parse_schema(
        """
[label]
column = "y"
classes = { a = ["a"], b = ["b"] }
[features."smoking=ever"]
type = "categorical"
categories = ["no", "yes"]
[features.age]
type = "numeric"
"""
    )
    records = {"smoking=ever": ["yes", None, "no"], "age": [61.0, None, 30.0]}
    pre = TabularPreprocessor(schema).fit(records_frame(schema, records))
    assert pre.columns_ == ["smoking=ever=no", "smoking=ever=yes", "smoking=ever__missing", "age", "age__missing"]
    assert pre.sources_ == ["smoking=ever"] * 3 + ["age"] * 2
    assert pre.transform_raw(records)[1] == ["smoking=ever=no", "smoking=ever=yes", "age"]
    assert pre.raw_sources() == ["smoking=ever", "smoking=ever", "age"]


# ---------------------------------------------------------------- describing
def test_each_kind_describes_itself_to_the_form_the_card_and_the_subgroups():
    age = Numeric("age", unit="years", range=(0.0, 120.0), bands=(40.0, 65.0))
    sex = Categorical("sex", categories=("F", "M"))
    assert age.form_field()["input"] == "number" and sex.form_field()["input"] == "choice"
    assert age.form_field()["range"] == [0.0, 120.0] and sex.form_field()["categories"] == ["F", "M"]
    assert age.card_entry() == "numeric (years)" and sex.card_entry() == "categorical (F, M)"
    assert age.continuous and not sex.continuous
    assert age.band_names() == ["< 40", "40-65", ">= 65", "missing"] and age.band(70.0) == ">= 65"
    assert sex.has_subgroups and sex.band_names() == ["F", "M", "missing"]
    assert not Numeric("crp").has_subgroups
    with pytest.raises(ValueError, match="'crp' is numeric and its schema declares no bands"):
        Numeric("crp").check_subgroups()
