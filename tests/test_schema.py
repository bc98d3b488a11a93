import dataclasses
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from fusion.schema import LabelSpec, builtin_schemas, load_schema, parse_schema
from fusion.schema.kinds import Numeric

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
    with pytest.raises(FileNotFoundError, match=r"built-in.*synthetic"):
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
        (
            "[label]\ncolumn='y'\nclasses={a=['1'], b=['2']}\n[features.x]\ntype='binary'\ncategories=['a']",
            "exactly two",
        ),
        (
            "[label]\ncolumn='y'\nclasses={a=['1'], b=['2']}\n[features.x]\ntype='numeric'\nmissing='drop'",
            "missing must be one of",
        ),
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
    feature = Numeric("po2", range=(50, 100), out_of_range="missing")
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


# ------------------------------------------------------------ strictness (issue 10)
@pytest.mark.parametrize(
    "old, new, names",
    [
        ('[group]\ncolumn = "pid"', '[group]\ncolum = "pid"', ["[group]", "colum"]),
        ('[label]\ncolumn = "dx"', '[label]\ncolumn = "dx"\ndefualt = "other"', ["[label]", "defualt"]),
        ('[image]\ncolumn = "file"', '[image]\ncolumnn = "file"', ["[image]", "columnn"]),
        ('folder = "imgs"', "folder = 3", ["[image]", "'folder'"]),
        ('[group]\ncolumn = "pid"', "[group]\ncolumn = 7", ["[group]", "'column'"]),
        ('unit = "years"', "unit = 5", ["[features.age]", "'unit'"]),
        ('categories = ["F", "M"]', 'categories = "FM"', ["[features.sex]", "'categories'"]),
        ('url = "provenance: leaks the source"', "url = 5", ["[excluded]", "'url'"]),
        ('name = "mini"', "name = 1", ["top level", "'name'"]),
        ('[features.age]\ntype = "numeric"', "[features.age]\ntype = true", ["[features.age]", "'type'"]),
    ],
)
def test_every_table_and_key_of_a_schema_is_checked(old, new, names):
    assert old in MINIMAL
    with pytest.raises(ValueError) as err:
        parse_schema(MINIMAL.replace(old, new, 1), origin="typo.toml")
    for name in names:
        assert name in str(err.value)


def test_group_column_absent_from_the_table_refuses_to_split():
    table = pd.DataFrame(
        {"dx": ["COVID-19"], "file": ["a.png"], "age": ["50"], "sex": ["F"], "smoker": ["N"], "po2": [""]}
    )
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['pid'\]"):
        parse_schema(MINIMAL).validate_table(table)


@pytest.mark.parametrize("text", ["3_8", "\u0661\u0662", "1e400", "inf", "0x10", "1,5", "38.5.1", "\uff13\uff18"])
def test_numbers_are_ascii_decimals(text):
    feature = Numeric("t")
    with pytest.raises(ValueError, match="must be a finite number"):
        feature.parse(text)


@pytest.mark.parametrize(
    "text, value", [(" 38.5 ", 38.5), ("-2", -2.0), ("+3", 3.0), (".5", 0.5), ("5.", 5.0), ("1e3", 1000.0)]
)
def test_ordinary_decimals_parse(text, value):
    assert Numeric("t").parse(text) == (value, None)


def test_huge_integer_is_a_value_error_not_an_overflow():
    with pytest.raises(ValueError, match="'age' must be a number"):
        parse_schema(MINIMAL).validate_record({"age": 10**400})
    with pytest.raises(ValueError, match="an integer of"):
        parse_schema(MINIMAL).validate_record({"age": 10**5000})


def test_long_values_are_cut_in_error_messages():
    with pytest.raises(ValueError) as err:
        parse_schema(MINIMAL).validate_record({"sex": "x" * 1_000_000})
    assert len(str(err.value)) < 300 and "1000002 characters" in str(err.value)


# ------------------------------------------------------------------ issue 21
@pytest.mark.parametrize(
    "folder",
    ["/etc", "..", "../other", "imgs/../../x", "./../x", "C:\\films", "\\\\server\\share", "imgs\\..\\..", "~/films"],
)
def test_an_absolute_or_escaping_image_folder_is_refused_unless_allowed(folder):
    text = MINIMAL.replace('folder = "imgs"', f"folder = {json.dumps(folder)}")
    with pytest.raises(
        ValueError, match=r"m.toml: .*\[image\] 'folder'.*inside the dataset folder.*allow_outside = true"
    ):
        parse_schema(text, origin="m.toml")
    schema = parse_schema(text.replace("[image]", "[image]\nallow_outside = true"), origin="m.toml")
    assert schema.image_folder == folder and schema.image_allow_outside


@pytest.mark.parametrize("folder", ["imgs", "./imgs", "a/b", "imgs/../pictures", "."])
def test_image_folders_inside_the_dataset_are_accepted(folder):
    schema = parse_schema(MINIMAL.replace('folder = "imgs"', f"folder = {json.dumps(folder)}"))
    assert schema.image_folder == folder and not schema.image_allow_outside


@pytest.mark.parametrize("value", ['"yes"', "1", "[true]"])
def test_allow_outside_must_be_true_or_false(value):
    with pytest.raises(ValueError, match=r"\[image\].*'allow_outside' must be true or false"):
        parse_schema(MINIMAL.replace("[image]", f"[image]\nallow_outside = {value}"), origin="m.toml")


def test_a_schema_built_in_python_refuses_an_escaping_folder_too():
    schema = parse_schema(MINIMAL)
    with pytest.raises(ValueError, match="allow_outside"):
        dataclasses.replace(schema, image_folder="/etc")
    assert dataclasses.replace(schema, image_folder="/films", image_allow_outside=True).image_folder == "/films"


def test_missing_columns_of_a_wide_table_are_listed_cut():
    table = pd.DataFrame({f"col_{i}": ["1"] for i in range(10_000)})
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['age'.*it has \['col_0'.*and 9,980 more") as err:
        parse_schema(MINIMAL).validate_table(table)
    assert len(str(err.value)) < 1000


# ------------------------------------------------------------- values a person types
@pytest.mark.parametrize("value", [" M ", "M ", " M", "M\u00a0", "\u2009M", "m", "M\n", "\tM"])
def test_a_category_is_exactly_one_declared_value(value):
    with pytest.raises(ValueError) as err:
        parse_schema(MINIMAL).validate_record({"sex": value})
    assert repr(value) in str(err.value)  # the spaces are visible in the message


@pytest.mark.parametrize("text", ["38\u00a0", "\u202f38", "3\u20098", "38\u2009", "\u300038", "38\n\u00a0"])
def test_numbers_allow_only_ascii_spaces_around_them(text):
    with pytest.raises(ValueError, match="must be a finite number") as err:
        Numeric("t").parse(text)
    assert repr(text) in str(err.value)


@pytest.mark.parametrize("text, value", [(" 38 ", 38.0), ("\t38.5", 38.5), ("38\t ", 38.0)])
def test_ascii_spaces_and_tabs_around_a_number_are_allowed(text, value):
    assert Numeric("t").parse(text) == (value, None)


@pytest.mark.parametrize("text", ["\u00a0", "\u2009NA\u2009", "\u3000"])
def test_a_unicode_space_is_not_a_missing_value(text):
    with pytest.raises(ValueError, match="must be a finite number"):
        Numeric("t").parse(text)
    assert math.isnan(Numeric("t").parse(" NA\t")[0])  # ASCII spaces around a missing word are fine


def test_an_unknown_field_list_is_cut_to_a_few_names():
    record = {f"unknown_field_{i}": i for i in range(5000)}
    with pytest.raises(ValueError) as err:
        parse_schema(MINIMAL).validate_record(record)
    message = str(err.value)
    assert len(message) < 600 and "and 4,995 more" in message and "'unknown_field_0'" in message


def test_an_unknown_field_with_a_long_name_is_cut():
    with pytest.raises(ValueError) as err:
        parse_schema(MINIMAL).validate_record({"x" * 10_000: 1})
    assert len(str(err.value)) < 400 and "10002 characters" in str(err.value)


# ----------------------------------------------------------------- records as JSON
def test_a_json_record_parses():
    from fusion.schema import parse_record_json

    assert parse_record_json('{"age": 61, "sex": "F", "po2": null}') == {"age": 61, "sex": "F", "po2": None}
    assert parse_record_json(b'{"age": 61.5}') == {"age": 61.5}
    assert parse_record_json("  ") is None


def test_a_duplicate_key_is_refused_naming_it():
    from fusion.schema import parse_record_json

    with pytest.raises(ValueError, match=r"record has the key 'age' more than once"):
        parse_record_json('{"age": 61, "sex": "F", "age": 30}')


@pytest.mark.parametrize("depth", [3, 1000, 30_000])
def test_deep_nesting_is_refused_before_parsing(depth):
    from fusion.schema import parse_record_json

    for opening, closing in (("[", "]"), ('{"a":', "}")):
        text = '{"age": ' + opening * depth + "1" + closing * depth + "}"
        if len(text) > 65_536:
            continue
        with pytest.raises(ValueError, match=r"record is nested \d+ levels deep"):
            parse_record_json(text)


def test_brackets_inside_strings_are_not_nesting():
    from fusion.schema import parse_record_json

    assert parse_record_json('{"note": "[[[[{{{{\\"]]]]"}') == {"note": '[[[[{{{{"]]]]'}


def test_a_record_over_the_size_limit_is_refused_by_its_own_type():
    from fusion.schema import MAX_RECORD_BYTES, RecordTooLarge, parse_record_json

    text = '{"note": "' + "x" * MAX_RECORD_BYTES + '"}'
    with pytest.raises(RecordTooLarge, match="at most 65536 bytes"):
        parse_record_json(text)
    assert issubclass(RecordTooLarge, ValueError)


@pytest.mark.parametrize("text", ["[1, 2]", '"age"', "61", "null"])
def test_a_json_record_that_is_not_an_object_is_refused(text):
    from fusion.schema import parse_record_json

    with pytest.raises(ValueError, match="must be a JSON object"):
        parse_record_json(text)


@pytest.mark.parametrize(
    "number",
    ["9" * 5000, "-" + "9" * 5000, "1" + "0" * 400, "1e999", "-1e999", "9" * 400 + ".5"],
    ids=["5000-digits", "minus-5000-digits", "401-digits", "1e999", "-1e999", "long-decimal"],
)
def test_a_huge_json_number_names_its_field(number):
    from fusion.schema import parse_record_json

    record = parse_record_json('{"age": ' + number + "}")
    with pytest.raises(ValueError) as err:
        parse_schema(MINIMAL).validate_record(record)
    message = str(err.value)
    assert message.startswith("'age' must be a number") and len(message) < 200
    assert "Exceeds the limit" not in message and "inf" not in message


def test_a_huge_json_number_in_an_ignored_column_is_harmless():
    from fusion.schema import parse_record_json

    record = parse_record_json('{"age": 61, "survival": ' + "9" * 5000 + "}")
    assert parse_schema(MINIMAL).validate_record(record)["age"] == 61.0


def test_invalid_json_says_so_with_the_origin():
    from fusion.schema import parse_record_json

    with pytest.raises(ValueError, match=r"--record file 'r.json' is not valid JSON"):
        parse_record_json('{"age": }', origin="--record file 'r.json'")
    with pytest.raises(ValueError, match="UTF-8"):
        parse_record_json(b'{"age": "\xff"}')


# A property over schema files: random typos, missing tables and wrong types in every
# table are each refused with a message naming the table and the key, or are harmless.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BASE = {
    "name": "mini",
    "description": "a schema",
    "label": {
        "column": "dx",
        "default": "other",
        "classes": {"covid": {"prefixes": ["COVID-19"]}, "normal": ["No Finding"], "other": []},
    },
    "group": {"column": "pid"},
    "image": {"column": "file", "folder": "imgs"},
    "features": {
        "age": {"type": "numeric", "unit": "years", "range": [0, 120], "missing": "indicator", "description": "age"},
        "sex": {"type": "categorical", "categories": ["F", "M"], "missing": "impute"},
        "po2": {"type": "numeric", "range": [50, 100], "out_of_range": "missing", "missing_tokens": ["-1"]},
    },
    "excluded": {"survival": {"reason": "outcome"}, "url": "provenance"},
    "missing": {"tokens": ["unknown", "?"]},
}
# Where each key lives, as error messages name it.
TABLES = {
    (): "the top level",
    ("label",): "[label]",
    ("group",): "[group]",
    ("image",): "[image]",
    ("excluded",): "[excluded]",
    ("missing",): "[missing]",
    ("features", "age"): "[features.age]",
    ("features", "sex"): "[features.sex]",
    ("features", "po2"): "[features.po2]",
}
OPTIONAL_TABLES = ["group", "image", "features", "excluded", "missing"]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):  # a TOML basic string: control characters escaped
        return (
            '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c for c in v) + '"'
        )
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"


def _to_toml(doc: dict) -> str:
    """A tiny TOML writer for the test: top-level scalars, then [table] and
    [features.name] sections with inline values."""
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for key, table in doc.items():
        if not isinstance(table, dict):
            continue
        if key == "features" and all(isinstance(v, dict) for v in table.values()):
            for name, spec in table.items():
                lines.append(f"[features.{json.dumps(name)}]")
                lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in spec.items()]
            continue
        lines.append(f"[{key}]")
        lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


WRONG = st.one_of(
    st.integers(-5, 5),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=1),
    st.text(max_size=5),
)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_schema_mutations_are_refused_naming_table_and_key_or_harmless(data):
    import copy

    doc = copy.deepcopy(BASE)
    kind = data.draw(st.sampled_from(["typo", "wrong_type", "drop_table"]))
    if kind == "drop_table":
        table = data.draw(st.sampled_from(["label", *OPTIONAL_TABLES]))
        del doc[table]
        if table == "label":
            with pytest.raises(ValueError, match=r"needs a \[label\]"):
                parse_schema(_to_toml(doc), origin="m.toml")
            return
        schema = parse_schema(_to_toml(doc), origin="m.toml")  # harmless: an optional role is absent, as written
        assert {
            "group": schema.group,
            "image": schema.image_column,
            "features": schema.features,
            "excluded": schema.excluded,
            "missing": schema.missing_tokens,
        }[table] in (None, (), {})
        return
    path = data.draw(st.sampled_from(sorted(TABLES)))
    table = doc
    for part in path:
        table = table[part]
    key = data.draw(st.sampled_from(sorted(table)))
    if kind == "typo":
        new_key = key + data.draw(st.sampled_from(["s", "_", "x", "1"]))
        table[new_key] = table.pop(key)
        names = [TABLES[path], new_key]
    else:
        wrong = data.draw(WRONG)
        if isinstance(table[key], type(wrong)) and not isinstance(wrong, bool):
            return  # same type: not this property's case
        table[key] = wrong
        names = [TABLES[path], key]
    if path == ("excluded",) and kind == "typo":
        # An excluded column's name is free: a renamed one excludes another column.
        assert new_key in parse_schema(_to_toml(doc), origin="m.toml").excluded
        return
    if path == ("excluded",) and isinstance(table[key], str) and table[key].strip():
        # A plain string is one of the two accepted forms of a reason.
        assert parse_schema(_to_toml(doc), origin="m.toml").excluded[key] == table[key]
        return
    try:
        parse_schema(_to_toml(doc), origin="m.toml")
    except ValueError as err:
        for name in names:
            assert name in str(err), (str(err), names)
        return
    if path[:1] == ("features",) or path == ("label",):
        raise AssertionError(f"accepted a wrong {kind} at {TABLES[path]} {key!r}: {doc}")
    if path == ():
        raise AssertionError(f"accepted a wrong {kind} at the top level {key!r}")
    raise AssertionError(f"accepted a wrong {kind} at {TABLES[path]} {key!r}")


def test_a_schema_with_thousands_of_unknown_keys_gets_a_short_message():
    toml = MINIMAL + '\n[features.extra]\ntype = "numeric"\n' + "".join(f"k{i} = 1\n" for i in range(5000))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['k0', .*and 4,995 more\]") as err:
        parse_schema(toml, origin="big.toml")
    assert len(str(err.value)) < 600


# ------------------------------------------------------------------ missing tokens
TOKENS = """
name = "tokens"
[label]
column = "dx"
classes = { a = ["a"], b = ["b"] }
[missing]
tokens = ["?"]
[features.sex]
type = "categorical"
categories = ["female", "male"]
missing_tokens = ["unknown"]
[features.age]
type = "numeric"
range = [0, 120]
missing_tokens = ["0"]
missing = "impute"
[features.site]
type = "categorical"
categories = ["face", "back"]
"""


def test_missing_tokens_keep_the_row_with_the_value_missing_and_are_counted():
    schema = parse_schema(TOKENS)
    # The table's tokens apply to every feature, after the feature's own.
    assert [f.missing_tokens for f in schema.features] == [("unknown", "?"), ("0", "?"), ("?",)]
    table = pd.DataFrame(
        {
            "dx": ["a", "b", "a", "b", "a"],
            "sex": ["male", "unknown", "?", "female", "unknown"],
            "age": ["0.0", "?", "45", "", "0"],
            "site": ["face", "?", "back", "NA", "face"],
        }
    )
    checked = schema.validate_table(table)
    assert not checked.skipped and len(checked.labels) == 5
    assert checked.features["sex"].tolist() == ["male", None, None, "female", None]
    assert np.isnan(checked.features["age"].to_numpy()[[0, 1, 3, 4]]).all()
    # Per feature then token, in the schema's order; an empty value ("", "NA") is no token.
    assert checked.missing_tokens == {"sex": {"unknown": 2, "?": 1}, "age": {"0": 2, "?": 1}, "site": {"?": 1}}
    assert not checked.notes  # a declared token is counted, not listed row by row


def test_a_row_skipped_for_another_reason_does_not_count_its_tokens():
    schema = parse_schema(TOKENS)
    table = pd.DataFrame({"dx": ["a", "zzz"], "sex": ["unknown", "unknown"], "age": ["1", "2"], "site": ["face"] * 2})
    checked = schema.validate_table(table)
    assert len(checked.skipped) == 1 and checked.missing_tokens == {"sex": {"unknown": 1}}


def test_missing_tokens_apply_to_a_single_record_and_are_matched_as_written():
    schema = parse_schema(TOKENS)
    record = schema.validate_record({"sex": "unknown", "age": 0, "site": "?"})
    assert record["sex"] is None and math.isnan(record["age"]) and record["site"] is None
    assert math.isnan(schema.validate_record({"age": 0.0})["age"])  # numbers as numbers: 0.0 is "0"
    for value in ("Unknown", " unknown", "unknown "):  # not cleaned: a different text is refused
        with pytest.raises(ValueError, match=r"'sex' must be one of 'female', 'male' \(or 'unknown' or '\?' for not"):
            schema.validate_record({"sex": value})
    assert schema.feature("sex").form_field()["missing_tokens"] == ["unknown", "?"]


def test_a_required_value_given_as_a_missing_token_is_refused_saying_so():
    schema = parse_schema(
        TOKENS.replace('missing_tokens = ["unknown"]', 'missing_tokens = ["unknown"]\nmissing = "error"')
    )
    with pytest.raises(ValueError, match=r"'sex' is required .*got 'unknown', which means not known"):
        schema.validate_record({"sex": "unknown"})


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        (
            'missing_tokens = ["unknown"]',
            'missing_tokens = ["male"]',
            "[features.sex] missing_tokens",
            "'male' is also",
        ),
        ('missing_tokens = ["unknown"]', 'missing_tokens = ["x", "x"]', "[features.sex] missing_tokens", "repeats"),
        ('missing_tokens = ["unknown"]', 'missing_tokens = [" "]', "[features.sex] missing_tokens", "non-blank"),
        ('missing_tokens = ["unknown"]', 'missing_tokens = "unknown"', "[features.sex] missing_tokens", "a list"),
        ('tokens = ["?"]', 'tokens = ["face"]', "[missing] tokens", "a category of feature 'site'"),
        ('tokens = ["?"]', 'tokens = ["?", "?"]', "[missing] tokens", "distinct"),
        ('tokens = ["?"]', 'token = ["?"]', "[missing]", "unknown key"),
    ],
)
def test_bad_missing_tokens_are_refused_naming_table_and_key(old, new, field, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        parse_schema(TOKENS.replace(old, new), origin="t.toml")
    assert err.value.field == field and err.value.file == "t.toml"


def test_schemas_without_tokens_load_as_before():
    for name in builtin_schemas():
        schema = load_schema(name)
        if name != "ham10000":
            assert schema.missing_tokens == () and not any(f.missing_tokens for f in schema.features)


def test_the_word_for_a_group_is_the_schema_s_group_column_without_its_id():
    from fusion.schema import group_unit, load_schema

    assert group_unit(load_schema("ham10000")) == "lesion"
    assert group_unit(load_schema("covid_chestxray")) == "patient"  # patientid
    assert group_unit(None) == "patient"
