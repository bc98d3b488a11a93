"""Model-folder writing: one JSON encoding for everything the library writes."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusion.persistence import to_json, write_json


def test_numpy_and_pandas_values_are_written_as_plain_json(tmp_path):
    index = pd.Index([3, 7])
    data = {
        "row": index[0],
        "f": np.float32(0.5),
        "flag": np.bool_(True),
        "counts": np.array([1, 2]),
        "path": Path("a/b"),
        "classes": {"b", "a"},
    }
    write_json(tmp_path / "x.json", data)
    back = json.loads((tmp_path / "x.json").read_text())
    assert back == {"row": 3, "f": 0.5, "flag": True, "counts": [1, 2], "path": "a/b", "classes": ["a", "b"]}
    assert type(back["row"]) is int


def test_nan_is_refused_in_files_users_read_and_kept_where_only_fusion_reads():
    with pytest.raises(ValueError):
        to_json({"loss": math.inf})
    assert json.loads(to_json({"loss": math.inf}, allow_nan=True))["loss"] == math.inf


def test_unknown_objects_are_refused_by_name():
    with pytest.raises(TypeError, match="cannot write a object as JSON"):
        to_json({"x": object()})
