import math

import numpy as np
import pandas as pd
import pytest

from fusion.schema import Feature, LabelSpec, builtin_schemas, load_schema, parse_schema

MINIMAL = """
name = "mini"
[label]
column = "dx"
default = "other"
classes = { covid = { prefixes = ["COVID-19"] }, normal = ["No Finding"], other = [] }
[group]
column = "pid"
[image]
column = "file"
folder = "imgs"
[features.age]
type = "numeric"
unit = "years"
range = [0, 120]
[features.sex]
type = "categorical"
categories = ["F", "M"]
[features.smoker]
type = "binary"
categories = ["N", "Y"]
missing = "impute"
[features.po2]
type = "numeric"
range = [50, 100]
out_of_range = "missing"
[excluded]
survival = { reason = "outcome: known only after the film" }
url = "provenance: leaks the source"
"""


def test_builtin_synthetic_schema_loads():
    assert "synthetic" in builtin_schemas()
    schema = load_schema("synthetic")
    assert schema.classes == ("covid", "pneumonia", "normal")
    assert schema.group == "patient_id" and schema.image_column == "image"
    assert schema.feature("spo2").unit == "%"


def test_schema_file_and_excluded_reasons(tmp_path):
    path = tmp_path / "mini.toml"
    path.write_text(MINIMAL)
    schema = load_schema(path)
    assert schema.excluded == {"survival": "outcome: known only after the film", "url": "provenance: leaks the source"}
    assert schema.image_folder == "imgs"


def test_unknown_schema_name_lists_builtins():
    with pytest.raises(FileNotFoundError, match="built-in.*synthetic"):
        load_schema("no-such-schema")


def test_label_mapping_with_prefix_and_default():
    label = parse_schema(MINIMAL).label
    assert label.encode("COVID-19, ARDS") == 0
    assert label.encode("No Finding") == 1
    assert label.encode("Streptococcus") == 2
    with pytest.raises(ValueError, match="missing"):
        label.encode("")


def test_unknown_label_without_default_names_value():
    label = LabelSpec(column="dx", values={"a": ("x",), "b": ("y",)})
    with pytest.raises(ValueError, match=r"unknown value 'z'.*no default"):
        label.encode("z")


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[label]\ncolumn='y'\nclasses={a=['1'], b=['2']}\n[features.x]\ntype='text'", "type must be one of"),
        ("[label]\ncolumn='y'\nclasses={a=['1'], b=['2']}\n[features.x]\ntype='numeric'\nrange=[5, 1]", "low < high"),
        ("[label]\ncolumn='y'\nclasses={a=['1'], b=['2']}\n[features.x]\ntype='binary'\ncategories=['a']", "exactly two"),
        ("[label]\ncolumn='y'\nclasses={a=['1'], b=['2']}\n[features.x]\ntype='numeric'\nmissing='drop'", "missing must be one of"),
        ("[label]\ncolumn='y'\nclasses={a=['1'], b=['1']}", "listed for both"),
        ("[label]\ncolumn='y'\nclasses={a=['1']}", "at least two classes"),
        ("[label]\ncolumn='y'\ndefault='c'\nclasses={a=['1'], b=['2']}", "default 'c' is not one of"),
        ("[label]\ncolumn='y'\nclasses={a=['1'], b=['2']}\n[excluded]\nz={reason=''}", "needs a reason"),
        ("[label]\ncolumn='y'\nclasses={a=['1'], b=['2']}\n[features.x]\ntype='numeric'\ncolour='red'", "unknown key"),
        ("[label]\ncolumn='y'\nclasses={a=['1'], b=['2']}\n[features.y]\ntype='numeric'", "both the label column"),
        ("label = [", "not valid TOML"),
        ("[features.x]\ntype='numeric'", r"needs a \[label\]"),
    ],
)
def test_schema_errors_name_the_fault(toml, message):
    with pytest.raises(ValueError, match=message):
        parse_schema(toml, origin="bad.toml")


def test_validate_record_parses_and_fills_missing():
    schema = parse_schema(MINIMAL)
    out = schema.validate_record({"age": "54", "sex": "F"})
    assert out["age"] == 54.0 and out["sex"] == "F"
    assert math.isnan(out["po2"]) and out["smoker"] is None


@pytest.mark.parametrize(
    "record, pattern",
    [
        ({"age": "abc"}, r"'age' must be a number in \[0, 120\] years; got 'abc'"),
        ({"age": 140}, r"'age' must be a number in \[0, 120\] years; got 140"),
        ({"age": True}, r"'age' must be a number"),
        ({"age": float("inf")}, r"'age' must be a number"),
        ({"sex": "X"}, r"'sex' must be one of 'F', 'M'; got 'X'"),
        ({"smoker": "maybe"}, r"'smoker' must be one of 'N', 'Y'"),
        ({"height": 180}, r"unknown field\(s\) \['height'\]"),
    ],
)
def test_validate_record_errors_name_field_value_and_accepted(record, pattern):
    with pytest.raises(ValueError, match=pattern):
        parse_schema(MINIMAL).validate_record(record)


def test_validate_record_rejects_non_mapping():
    with pytest.raises(TypeError, match="dict or pandas Series"):
        parse_schema(MINIMAL).validate_record(["age", 3])


def test_out_of_range_declared_as_missing_is_noted():
    feature = Feature(name="po2", type="numeric", range=(50, 100), out_of_range="missing")
    value, note = feature.parse(340)
    assert math.isnan(value) and "treated as missing" in note


def test_validate_table_skips_and_reports_every_bad_row():
    schema = parse_schema(MINIMAL)
    table = pd.DataFrame(
        {
            "dx": ["COVID-19", "No Finding", "", "Strep", "COVID-19"],
            "pid": ["1", "2", "3", "", "5"],
            "file": ["a.png", "b.png", "c.png", "d.png", ""],
            "age": ["50", "abc", "30", "40", "60"],
            "sex": ["F", "M", "F", "M", "F"],
            "smoker": ["Y", "N", "", "N", "N"],
            "po2": ["95", "340", "", "", ""],
            "survival": ["Y", "N", "", "", ""],
        }
    )
    result = schema.validate_table(table)
    assert list(result.features.index) == [0]
    reasons = {s["row"]: s["reason"] for s in result.skipped}
    assert set(reasons) == {1, 2, 3, 4}
    assert "'age' must be a number" in reasons[1]
    assert "label 'dx' is missing" in reasons[2]
    assert "group column 'pid' is missing" in reasons[3]
    assert "image column 'file' is empty" in reasons[4]
    assert result.skipped[0]["file"] == "b.png"
    np.testing.assert_array_equal(result.labels, [0])


def test_validate_table_requires_columns():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['age'"):
        parse_schema(MINIMAL).validate_table(pd.DataFrame({"dx": ["a"]}))
