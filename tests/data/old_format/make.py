"""Writes this folder's fixture with the fusion that saves the *old* format.

The fixture pins what a model folder saved before feature kinds became classes (issue 22)
holds, so that the code of today is checked against it: ``tests/test_kinds.py`` loads the
saved preprocessing state and the two model folders and compares their outputs with the
numbers the old code gave (``expected.json``). It was made from the commit before the
change (c8c1ad4) with::

    PYTHONPATH=<that checkout> python tests/data/old_format/make.py tests/data/old_format

Running it again with a later fusion overwrites the fixture: do not, unless the old
format itself is meant to change.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fusion.classifier import FusionClassifier
from fusion.config import Config
from fusion.data.dataset import Dataset
from fusion.preprocessing import TabularPreprocessor
from fusion.schema import parse_schema

SCHEMA = """\
name = "old_format"
description = "Every feature kind and missing-value policy of the format before issue 22."

[label]
column = "y"
classes = { sick = ["1"], well = ["0"] }

[group]
column = "pid"

[features.age]
type = "numeric"
unit = "years"
range = [0, 120]
bands = [40, 65]

[features.po2]
type = "numeric"
range = [50, 100]
out_of_range = "missing"
missing = "impute"

[features.sex]
type = "categorical"
categories = ["F", "M"]

[features.view]
type = "categorical"
categories = ["PA", "AP", "LL"]
missing = "impute"

[features.smoker]
type = "binary"
categories = ["no", "yes"]

[features.fever]
type = "binary"
categories = ["N", "Y"]
missing = "impute"
"""


def table(n: int, seed: int) -> pd.DataFrame:
    """Rows whose label depends on every feature, with some values missing."""
    rng = np.random.default_rng(seed)
    sick = rng.random(n) < 0.5
    cols = {
        "pid": [f"p{seed}_{i}" for i in range(n)],
        "y": np.where(sick, "1", "0"),
        "age": np.round(rng.normal(np.where(sick, 62, 45), 12), 1).astype(str),
        "po2": np.round(rng.normal(np.where(sick, 88, 96), 4), 1).astype(str),
        "sex": rng.choice(["F", "M"], n),
        "view": np.where(sick & (rng.random(n) < 0.6), "AP", rng.choice(["PA", "LL"], n)),
        "smoker": np.where(rng.random(n) < np.where(sick, 0.6, 0.3), "yes", "no"),
        "fever": np.where(rng.random(n) < np.where(sick, 0.7, 0.2), "Y", "N"),
    }
    frame = pd.DataFrame(cols)
    for column in ("age", "po2", "sex", "view", "smoker", "fever"):
        frame.loc[rng.random(n) < 0.15, column] = "NA"
    return frame


def dataset(schema, frame: pd.DataFrame) -> Dataset:
    checked = schema.validate_table(frame)
    return Dataset(
        name="old_format",
        classes=schema.classes,
        labels=checked.labels,
        records=checked.features,
        groups=checked.groups,
        schema=schema,
    )


RECORDS = [
    {"age": 70, "po2": 85.5, "sex": "M", "view": "AP", "smoker": "yes", "fever": "Y"},
    {"age": 30, "po2": 99, "sex": "F", "view": "PA", "smoker": "no", "fever": "N"},
    {"age": None, "po2": None, "sex": None, "view": None, "smoker": "no", "fever": None},
    {"age": 55, "po2": 40, "sex": "F", "view": "LL"},  # po2 out of range: missing
    {"po2": 91, "smoker": "yes"},
    {"age": "64.5", "sex": "M", "view": "NA", "fever": "Y"},
]


def main(out: Path) -> None:
    schema = parse_schema(SCHEMA, origin="old_format.toml")
    (out / "schema.toml").write_text(SCHEMA, encoding="utf-8")
    train, val = dataset(schema, table(120, 0)), dataset(schema, table(40, 1))
    pre = TabularPreprocessor(schema).fit(train.records)
    (out / "preprocessing.json").write_text(json.dumps(pre.to_dict(), indent=1) + "\n", encoding="utf-8")
    values = [schema.validate_record(r) for r in RECORDS]
    columns = {n: [v[n] for v in values] for n in schema.feature_names}
    raw, raw_names = pre.transform_raw(columns)
    expected = {
        "records": RECORDS,
        "transform": pre.transform(columns).tolist(),
        "transform_raw": [[None if np.isnan(x) else x for x in row] for row in raw.tolist()],
        "raw_columns": raw_names,
    }
    for name, cfg in models().items():
        clf = FusionClassifier(cfg).fit(train, val)
        clf.save(out / name, overwrite=True)
        expected[name] = {
            "proba": clf.predict_proba(pd.DataFrame(RECORDS)).tolist(),
            "attribution": [clf.explain(record=r).tabular_attribution for r in RECORDS[:2]],
        }
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")


def models() -> dict[str, Config]:
    network = Config(modalities=("tabular",))
    network.tabular.hidden, network.head.hidden = (8,), 8
    network.train.epochs, network.train.batch_size = 3, 16
    xgboost = Config(modalities=("tabular",), model="xgboost")
    xgboost.train.xgb_tune, xgboost.train.xgb_trees, xgboost.train.xgb_depth = False, 12, 2
    return {"network": network, "xgboost": xgboost}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
