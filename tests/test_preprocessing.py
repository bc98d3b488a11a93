import json
from pathlib import Path

import numpy as np
import pytest

from fusion.checks import Where
from fusion.preprocessing import TabularPreprocessor
from fusion.schema import load_schema, parse_schema, records_frame

SCHEMA = parse_schema(
    """
[label]
column = "y"
classes = { a = ["a"], b = ["b"] }
[features.age]
type = "numeric"
range = [0, 120]
[features.sex]
type = "categorical"
categories = ["F", "M"]
[features.smoker]
type = "binary"
categories = ["N", "Y"]
missing = "impute"
"""
)


def frame(rows):
    return records_frame(SCHEMA, {n: [r.get(n) for r in rows] for n in SCHEMA.feature_names})


def test_fit_on_train_only_and_layout():
    train = frame(
        [
            {"age": 20.0, "sex": "F", "smoker": "Y"},
            {"age": 40.0, "sex": "M", "smoker": "Y"},
            {"age": np.nan, "sex": None, "smoker": "N"},
        ]
    )
    pre = TabularPreprocessor(SCHEMA).fit(train)
    assert pre.columns_ == ["age", "age__missing", "sex=F", "sex=M", "sex__missing", "smoker"]
    assert pre.sources_ == ["age", "age", "sex", "sex", "sex", "smoker"]
    assert pre.stats_["age"]["median"] == 30.0 and pre.stats_["smoker"]["mode"] == "Y"
    X = pre.transform(frame([{"age": np.nan, "sex": None, "smoker": None}]))
    # missing age -> the median (30 = mean, so 0 after scaling) and indicator 1; missing sex -> zeros + indicator
    np.testing.assert_allclose(X[0], [0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    assert X.dtype == np.float32 and np.isfinite(X).all()


def test_raw_transform_keeps_nan_for_xgboost():
    pre = TabularPreprocessor(SCHEMA).fit(frame([{"age": 20.0, "sex": "F", "smoker": "N"}]))
    X, names = pre.transform_raw(frame([{"age": np.nan, "sex": None, "smoker": "Y"}]))
    assert names == ["age", "sex=F", "sex=M", "smoker"]
    assert np.isnan(X[0, :3]).all() and X[0, 3] == 1.0


def test_state_round_trips_through_json_and_checks_schema():
    import json

    pre = TabularPreprocessor(SCHEMA).fit(
        frame([{"age": 20.0, "sex": "F", "smoker": "N"}, {"age": 60.0, "sex": "M", "smoker": "Y"}])
    )
    state = json.loads(json.dumps(pre.to_dict()))
    again = TabularPreprocessor.from_dict(state, SCHEMA)
    rows = frame([{"age": 33.0, "sex": "M", "smoker": None}])
    np.testing.assert_array_equal(again.transform(rows), pre.transform(rows))
    with pytest.raises(ValueError, match="was the schema changed"):
        TabularPreprocessor.from_dict({**state, "columns": ["x"]}, SCHEMA)


def test_transform_before_fit_is_an_error():
    with pytest.raises(RuntimeError, match="not fitted"):
        TabularPreprocessor(SCHEMA).transform(frame([{}]))


def test_raw_transform_fills_features_whose_missingness_must_not_be_learned():
    schema = parse_schema(
        """
[label]
column = "y"
classes = { a = ["a"], b = ["b"] }
[features.po2]
type = "numeric"
missing = "impute"
[features.view]
type = "categorical"
categories = ["PA", "AP"]
missing = "impute"
"""
    )
    rows = lambda rs: records_frame(schema, {n: [r.get(n) for r in rs] for n in schema.feature_names})  # noqa: E731
    pre = TabularPreprocessor(schema).fit(
        rows([{"po2": 90.0, "view": "PA"}, {"po2": 96.0, "view": "AP"}, {"po2": 98.0, "view": "AP"}])
    )
    X, names = pre.transform_raw(rows([{"po2": np.nan, "view": None}]))
    assert names == ["po2", "view=PA", "view=AP"]
    np.testing.assert_array_equal(X[0], [96.0, 0.0, 0.0])  # the median, no category: nothing for trees to learn from


@pytest.mark.parametrize("schema_name", ["synthetic", "covid_chestxray"])
def test_one_record_path_gives_exactly_the_table_path(schema_name):
    """transform_record (the single-prediction path) must agree with transform on
    every row: present, missing, out-of-range-made-missing and every category."""
    from pathlib import Path

    from fusion.schema import load_schema

    schema = load_schema(Path(__file__).parents[1] / "data" / "schema" / f"{schema_name}.toml")
    rng = np.random.default_rng(0)
    raw = []
    for _ in range(60):
        record = {}
        for f in schema.features:
            if rng.random() < 0.25:
                continue  # absent key: missing
            if f.type == "numeric":
                lo, hi = f.range if f.range else (0.0, 100.0)
                if f.out_of_range == "missing":
                    lo -= 0.2 * (hi - lo)  # some values outside: parsed as missing
                record[f.name] = float(rng.uniform(lo, hi))
            else:
                record[f.name] = str(rng.choice([*f.categories, "NA"]))
        raw.append(record)
    values = [schema.validate_record(r) for r in raw]
    table = records_frame(schema, {n: [v[n] for v in values] for n in schema.feature_names})
    pre = TabularPreprocessor(schema).fit(table)
    expected = pre.transform(table)
    got = np.concatenate([pre.transform_record(v) for v in values])
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match=f"lacks feature.*{schema.feature_names[0]}"):
        pre.transform_record({})


def _state():
    pre = TabularPreprocessor(SCHEMA).fit(
        frame([{"age": 20.0, "sex": "F", "smoker": "N"}, {"age": 60.0, "sex": "M", "smoker": "Y"}])
    )
    return pre.to_dict()


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s: s["stats"]["smoker"].update(mode="X"), r"stats\.smoker\.mode must be one of \['N', 'Y'\]"),
        (lambda s: s["stats"]["age"].update(std=0.0), r"stats\.age\.std must be a finite number > 0"),
        (lambda s: s["stats"]["age"].update(median="40"), r"stats\.age\.median must be a finite number"),
        (lambda s: s["stats"]["age"].update(mean=True), r"stats\.age\.mean must be a finite number"),
        (lambda s: s["stats"]["age"].pop("mean"), r"stats\.age\.mean is missing"),
        (lambda s: s["stats"].pop("smoker"), r"stats lacks the statistics of \['smoker'\]"),
        (lambda s: s["stats"].update(sex={"mode": "F"}), r"stats has statistics of \['sex'\]"),
        (lambda s: s.update(sources=s["sources"][::-1]), r"sources.*was the schema changed"),
        (lambda s: s.update(schema="other"), r"schema is 'other'"),
        (lambda s: s.update(extra=1), r"has unknown key"),
    ],
)
def test_saved_state_is_checked_naming_the_key(change, match):
    """A hand-edited state (a zero std divides by zero, a mode outside the categories
    answers for a category that does not exist) is refused on load."""
    state = _state()
    change(state)
    with pytest.raises(ValueError, match=rf"preprocessing\.json: tabular[. ]?{match}"):
        TabularPreprocessor.from_dict(state, SCHEMA, where=Where("preprocessing.json", "tabular"))


# ------------------------------------------------- the format saved before issue 22
# tests/data/old_format: a preprocessing state and two model folders (a tabular network,
# an XGBoost model) saved by fusion before feature kinds became classes, with what that
# fusion computed from them (expected.json; make.py says how it was made).
OLD = Path(__file__).parent / "data" / "old_format"


def _old_values(schema):
    records = json.loads((OLD / "expected.json").read_text())["records"]
    values = [schema.validate_record(r) for r in records]
    return {n: [v[n] for v in values] for n in schema.feature_names}


def test_a_state_saved_in_the_old_format_encodes_exactly_as_before():
    schema = load_schema(OLD / "schema.toml")
    expected = json.loads((OLD / "expected.json").read_text())
    pre = TabularPreprocessor.from_dict(json.loads((OLD / "preprocessing.json").read_text()), schema)
    columns = _old_values(schema)
    np.testing.assert_array_equal(pre.transform(columns), np.asarray(expected["transform"], dtype=np.float32))
    raw, names = pre.transform_raw(columns)
    want = np.asarray([[np.nan if x is None else x for x in row] for row in expected["transform_raw"]], np.float32)
    np.testing.assert_array_equal(raw, want)
    assert names == expected["raw_columns"]
    assert pre.to_dict() == json.loads((OLD / "preprocessing.json").read_text())  # saved again unchanged


@pytest.mark.parametrize("name", ["network", "xgboost"])
def test_a_model_folder_saved_in_the_old_format_predicts_and_explains_as_before(name):
    import pandas as pd

    from fusion.classifier import FusionClassifier

    expected = json.loads((OLD / "expected.json").read_text())
    clf = FusionClassifier.load(OLD / name)
    proba = clf.predict_proba(pd.DataFrame(expected["records"]))
    np.testing.assert_allclose(proba, expected[name]["proba"], rtol=1e-6, atol=1e-7)
    for record, attribution in zip(expected["records"], expected[name]["attribution"], strict=False):
        got = clf.explain(record=record).tabular_attribution
        assert list(got) == list(attribution)
        np.testing.assert_allclose(list(got.values()), list(attribution.values()), rtol=1e-5, atol=1e-7)
