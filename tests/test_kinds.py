"""Feature kinds (fusion.schema.kinds): each kind parses, refuses, encodes for the
network and for the trees with the feature of every column, and describes itself; the
ordinal kind end to end, from a schema to a saved model's explanation."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from fusion.checks import Where
from fusion.schema import KINDS, Feature, make_feature, parse_schema, records_frame
from fusion.schema.kinds import Binary, Categorical, Numeric, Ordinal

NYHA = ("I", "II", "III", "IV")


def values(feature, raw):
    """Raw values parsed, as the column a table of records holds."""
    parsed = [feature.parse(v)[0] for v in raw]
    out = np.empty(len(parsed), dtype=feature.dtype)
    out[:] = parsed
    return out


# ------------------------------------------------------------------ the registry
def test_every_type_word_is_a_kind_and_loads_from_toml():
    params = {"numeric": "", "categorical": "categories = ['a', 'b']", "binary": "categories = ['n', 'y']"}
    params["ordinal"] = "categories = ['I', 'II', 'III', 'IV']"
    assert set(KINDS) == set(params)
    for word, kind in KINDS.items():
        toml = f"[label]\ncolumn='y'\nclasses={{a=['1'], b=['2']}}\n[features.x]\ntype='{word}'\n{params[word]}"
        feature = parse_schema(toml).feature("x")
        assert type(feature) is kind and feature.type == word


def test_the_base_class_is_not_a_kind():
    with pytest.raises(TypeError, match="abstract"):
        Feature("x")
    with pytest.raises(ValueError, match=r"feature 'x': type must be one of \('numeric', .*'ordinal'\); got 'text'"):
        make_feature("x", "text")


@pytest.mark.parametrize(
    "word, fields, message",
    [
        ("ordinal", {"categories": ("I",)}, "an ordinal feature needs at least two categories"),
        ("ordinal", {"categories": ("I", "II", "I")}, "categories repeat"),
        ("ordinal", {"categories": ("I", "II"), "range": (0.0, 1.0)}, "an ordinal feature takes categories, not a"),
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
    (Ordinal("nyha", categories=NYHA), ["I", "IV"], ["V", "iv", 3]),
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


@pytest.mark.parametrize("word", list(KINDS))
def test_every_kind_takes_missing_tokens_as_missing_values(word):
    categories = () if word == "numeric" else ("a", "b")
    feature = make_feature("x", word, categories=categories, missing_tokens=["unknown", "999"])
    assert feature.missing_tokens == ("unknown", "999")  # a Python list is kept as a tuple
    for raw in ("unknown", "999", 999):
        value, note = feature.parse(raw)
        assert feature.missing_token(raw) is not None and note is None and (value is None or math.isnan(value))
    assert feature.missing_token("NA") is None and feature.missing_token(None) is None


def test_a_numeric_token_matches_the_number_however_written_but_not_a_boolean():
    age = Numeric("age", range=(0.0, 120.0), missing_tokens=("0",))
    assert [age.missing_token(v) for v in ("0", "0.0", " 0 ", 0, 0.0, "-0")] == ["0"] * 6
    assert [age.missing_token(v) for v in (False, "zero", 10**400, math.inf, "1")] == [None] * 5
    assert age.parse("45") == (45.0, None)
    with pytest.raises(ValueError, match=r"\(or '0' for not known\); got False"):
        age.parse(False)


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
    (Ordinal("nyha", categories=NYHA), ["I", "III", "IV", None], [None, "II"], ["nyha", "nyha__missing"], ["nyha"]),
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
[features.nyha]
type = "ordinal"
categories = ["I", "II", "III", "IV"]
"""
    )
    records = {"smoking=ever": ["yes", None, "no"], "nyha": ["I", "IV", None]}
    pre = TabularPreprocessor(schema).fit(records_frame(schema, records))
    assert pre.columns_ == ["smoking=ever=no", "smoking=ever=yes", "smoking=ever__missing", "nyha", "nyha__missing"]
    assert pre.sources_ == ["smoking=ever"] * 3 + ["nyha"] * 2
    assert pre.transform_raw(records)[1] == ["smoking=ever=no", "smoking=ever=yes", "nyha"]
    assert pre.raw_sources() == ["smoking=ever", "smoking=ever", "nyha"]


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


# ------------------------------------------------------------------ the ordinal kind
def test_ordinal_keeps_the_order_in_one_column_for_network_and_trees():
    nyha = Ordinal("nyha", categories=NYHA, missing="impute")
    stats = nyha.fit(values(nyha, ["I", "II", "II", "IV", None]))
    assert stats == {"median": "II"}  # the lower median is a category, never between two
    parsed = values(nyha, [*NYHA, None])
    np.testing.assert_array_equal(nyha.encode(parsed, stats)[:, 0], [0, 1 / 3, 2 / 3, 1, 1 / 3])
    np.testing.assert_array_equal(nyha.encode_raw(parsed, stats)[:, 0], [0, 1, 2, 3, 1])
    assert nyha.fit(values(nyha, [None, None])) == {"median": "I"}  # never observed: the lowest


def test_ordinal_statistics_are_checked_on_load():
    nyha = Ordinal("nyha", categories=NYHA)
    assert nyha.check_stats({"median": "III"}, Where("p.json", "stats.nyha")) == {"median": "III"}
    with pytest.raises(ValueError, match=r"p.json: stats.nyha.median must be one of \['I', 'II', 'III', 'IV'\]"):
        nyha.check_stats({"median": "V"}, Where("p.json", "stats.nyha"))


def test_ordinal_describes_itself_to_the_form_the_card_and_the_subgroups():
    nyha = Ordinal("nyha", categories=NYHA, description="NYHA functional class")
    field = nyha.form_field()
    assert field["input"] == "choice" and field["categories"] == list(NYHA) and field["type"] == "ordinal"
    assert json.loads(json.dumps(field)) == field
    assert nyha.card_entry() == "ordinal (I < II < III < IV)"
    assert nyha.has_subgroups and nyha.band_names() == [*NYHA, "missing"] and nyha.band("III") == "III"
    assert not nyha.continuous and Numeric("age").form_field()["input"] == "number"


# ------------------------------------------------------------ ordinal end to end
ORDINAL_SCHEMA = """
name = "heart"
[label]
column = "outcome"
classes = { failing = ["1"], stable = ["0"] }
[group]
column = "pid"
[features.nyha]
type = "ordinal"
categories = ["I", "II", "III", "IV"]
description = "NYHA functional class"
[features.age]
type = "numeric"
range = [0, 120]
[features."smoking=ever"]
type = "categorical"
categories = ["no", "yes"]
"""


@pytest.fixture(scope="module")
def heart():
    """A table whose label follows the NYHA class, validated by the schema (a class
    'V' is skipped and reported), split into train and validation datasets."""
    from fusion.data.dataset import Dataset

    rng = np.random.default_rng(0)
    n = 160
    rank = rng.integers(0, 4, n)
    table = pd.DataFrame(
        {
            "pid": [f"p{i}" for i in range(n)],
            "outcome": np.where(rank + rng.normal(0, 0.7, n) > 1.5, "1", "0"),
            "nyha": np.array(NYHA)[rank],
            "age": rng.integers(30, 90, n).astype(str),
            "smoking=ever": rng.choice(["no", "yes", "NA"], n),
        }
    )
    table.loc[5, "nyha"] = "V"
    table.loc[7, "nyha"] = "NA"
    schema = parse_schema(ORDINAL_SCHEMA, origin="heart.toml")
    checked = schema.validate_table(table)
    assert [s["row"] for s in checked.skipped] == [5] and "'nyha' must be one of 'I'" in checked.skipped[0]["reason"]
    ds = Dataset(
        name="heart",
        classes=schema.classes,
        labels=checked.labels,
        records=checked.features,
        groups=checked.groups,
        schema=schema,
    )
    return ds.subset(np.arange(120)), ds.subset(np.arange(120, len(ds)))


def _config(model: str):
    from fusion.config import Config

    cfg = Config(modalities=("tabular",), model=model)
    cfg.tabular.hidden, cfg.head.hidden, cfg.train.epochs, cfg.train.lr = (16,), 8, 8, 2e-2
    cfg.train.xgb_tune, cfg.train.xgb_trees, cfg.train.xgb_depth = False, 20, 2
    return cfg


@pytest.mark.parametrize("model", ["fusion", "xgboost"])
def test_an_ordinal_feature_trains_predicts_explains_and_round_trips(heart, model, tmp_path):
    from fusion.classifier import FusionClassifier

    train, val = heart
    clf = FusionClassifier(_config(model)).fit(train, val)
    record = {"nyha": "IV", "age": 70, "smoking=ever": "yes"}
    proba = clf.predict_proba(record)
    assert proba.shape == (1, 2) and np.isclose(proba.sum(), 1)
    # The order is what the model learned from: class IV is likelier failing than class I.
    low = clf.predict_proba({**record, "nyha": "I"})
    assert proba[0, 0] > low[0, 0]
    explanation = clf.explain(record=record)
    assert list(explanation.tabular_attribution) == ["nyha", "age", "smoking=ever"]
    assert explanation.tabular_attribution["nyha"] != 0
    with pytest.raises(ValueError, match="'nyha' must be one of 'I', 'II', 'III', 'IV'; got 'V'"):
        clf.predict_proba({"nyha": "V"})
    again = FusionClassifier.load(clf.save(tmp_path / model))
    np.testing.assert_array_equal(again.predict_proba(record), proba)
    assert again.explain(record=record).tabular_attribution == pytest.approx(explanation.tabular_attribution)


def test_an_ordinal_feature_gets_subgroups_in_order_and_a_line_in_the_model_card(heart):
    from fusion.evaluation.card import model_card
    from fusion.evaluation.subgroups import subgroup_report
    from fusion.training.run import subgroup_features

    train, _ = heart
    schema = train.schema
    assert subgroup_features(schema) == ["nyha", "smoking=ever"]
    proba = np.tile([0.5, 0.5], (len(train), 1))
    report = subgroup_report(
        train.records, train.labels, proba, schema.classes, train.groups, ["nyha"], schema, n_boot=5
    )
    assert list(report["nyha"]) == [c for c in [*NYHA, "missing"] if c in report["nyha"]]
    metrics = {"task": "heart", "classes": list(schema.classes), "modalities": ["tabular"], "data": "heart"}
    metrics.update(n_train=120, n_val=39, n_test=0)
    card = model_card(metrics, schema)
    assert "- `nyha`: ordinal (I < II < III < IV); missing values: indicator" in card
