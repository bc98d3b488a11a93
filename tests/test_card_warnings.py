"""A model card that warns where its numbers cannot be trusted: figures not fitted on
too few validation cases, reliability with counts, what fusion changed per class, and
where the card answers TRIPOD+AI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from fusion.checks import Where
from fusion.evaluation.calibration import MIN_CASES, Calibration, reliability_bins
from fusion.evaluation.card import TRIPOD_AI_USER, model_card
from fusion.evaluation.modalities import best_single, fusion_change


def _rows(counts, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += 1.5
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def test_a_class_with_too_few_validation_rows_gets_no_threshold_and_the_reason_is_kept():
    y, p = _rows([40, 30, 2])
    cal = Calibration.fit(y, p, classes=["covid", "pneumonia", "normal"])
    cal.set_operating_points(y, p, ["covid", "pneumonia", "normal"], ["covid", "pneumonia", "normal"], 0.95)
    assert set(cal.thresholds) == {"covid", "pneumonia"}
    assert cal.method == "temperature"
    assert any(
        w.startswith(
            f"vector scaling (one scale per class) not tried: normal has 2 validation rows, fewer than {MIN_CASES}"
        )
        for w in cal.withheld
    )
    assert any(w.startswith("operating point of normal: 2 validation rows") for w in cal.withheld)
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())), ["covid", "pneumonia", "normal"])
    assert again.withheld == cal.withheld
    with pytest.raises(ValueError, match="withheld"):
        Calibration.from_dict(cal.to_dict() | {"withheld": [3]}, None, where=Where("calibration.json"))


def test_enough_rows_withhold_nothing():
    y, p = _rows([40, 30, 20])
    cal = Calibration.fit(y, p)
    cal.set_operating_points(y, p, ["a", "b", "c"], ["a", "b"], 0.95)
    assert cal.withheld == [] and "withheld" not in cal.to_dict()


def test_reliability_bins_count_every_prediction():
    y, p = _rows([50, 50, 50])
    bins = reliability_bins(y, p)
    assert sum(b["n"] for b in bins) == 150
    assert all(b["low"] <= b["confidence"] <= b["high"] and 0 <= b["accuracy"] <= 1 for b in bins)
    top = p.max(axis=1)
    first = bins[0]
    inside = (top >= first["low"]) & (top < first["high"])
    assert first["n"] == inside.sum()


def test_fusion_change_sets_each_class_beside_the_best_single_modality():
    y = np.array([0, 0, 1, 1, 2, 2])
    fused = np.eye(3)[[0, 0, 1, 1, 2, 0]]
    image = np.eye(3)[[0, 1, 1, 1, 2, 2]]
    change = fusion_change(
        y, {"image + record": fused, "image only": image}, ["a", "b", "c"], lambda p: p.argmax(1), "image only", "x"
    )
    c = change["per_class"]["c"]
    assert c["image + record"]["sensitivity"] == 0.5 and c["image only"]["sensitivity"] == 1.0
    assert change["per_class"]["a"]["image + record"]["specificity"] == 0.75
    assert best_single({"image only": 0.7, "record only": 0.8}, {"image only": 0.9, "record only": 0.6}) == (
        "record only",
        "the higher validation macro AUROC",
    )
    assert best_single(None, {"image only": 0.9, "record only": 0.6})[0] == "image only"


def test_the_card_of_a_fused_run_has_the_new_sections(tiny_runs):
    card = (tiny_runs["fused"] / "MODEL_CARD.md").read_text()
    for heading in ("## What fusion changed (test split)", "## Decision curves (test split)", "## TRIPOD+AI checklist"):
        assert heading in card
    assert "| confidence | n | mean confidence | fraction correct |" in card
    assert all(item in card for item in TRIPOD_AI_USER)


def test_the_card_lists_what_was_not_fitted_and_flags_thin_operating_points(tiny_runs):
    metrics = json.loads((tiny_runs["fused"] / "metrics.json").read_text())
    metrics = copy.deepcopy(metrics)
    metrics["calibration"]["withheld"] = ["operating point of normal: 2 validation rows of normal, fewer than 10"]
    metrics["test"]["operating_points"] = {
        "covid": {"threshold": 0.2, "sensitivity": 1.0, "specificity": 0.0, "n_positive": 3},
        "pneumonia": {"threshold": 0.3, "sensitivity": 0.9, "specificity": 0.5, "n_positive": 30, "n_negative": 4},
    }
    card = model_card(metrics, None)
    assert "## Figures not fitted: too few validation cases" in card
    assert "- operating point of normal: 2 validation rows" in card
    assert "| covid | 0.200 | too few (3 covid) | 0.00 |" in card
    assert "| pneumonia | 0.300 | 0.90 | too few (4 not pneumonia) |" in card


def test_a_single_modality_run_has_no_fusion_section_and_the_card_says_so(tiny_runs):
    card = (tiny_runs["image"] / "MODEL_CARD.md").read_text()
    assert "## What fusion changed" not in card
    assert "23 Model performance beyond single modalities (this run has no what fusion changed)" in card
