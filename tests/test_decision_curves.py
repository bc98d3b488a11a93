"""Decision curves (Vickers & Elkin 2006): net benefit, the defaults it is compared
with, the ranges where a model is of use, in the run folder and in fusion.evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusion.evaluate import main as evaluate_main
from fusion.evaluation.decision import THRESHOLDS, describe_ranges, net_benefit, treat_all, useful_ranges


def test_a_perfect_score_has_the_prevalence_as_net_benefit_at_every_threshold():
    positive = np.array([1, 0, 0, 0, 0] * 20, dtype=bool)
    curve = net_benefit(positive, positive.astype(float))
    assert np.allclose(curve, 0.2)
    assert useful_ranges(curve, treat_all(positive)) == [[0.01, 0.99]]


def test_treat_all_matches_the_formula():
    positive = np.array([1] * 20 + [0] * 80, dtype=bool)
    # prevalence 0.2 at threshold 0.1: 0.2 - 0.8 * 0.1 / 0.9
    assert treat_all(positive, np.array([0.1]))[0] == pytest.approx(0.2 - 0.8 / 9)
    # acting on everyone is what a score of 1 for all does
    assert np.allclose(net_benefit(positive, np.ones(100)), treat_all(positive))


def test_net_benefit_counts_true_and_false_positives():
    positive = np.array([1, 1, 0, 0], dtype=bool)
    score = np.array([0.9, 0.4, 0.6, 0.1])
    # at t = 0.5: TP 1 of 4, FP 1 of 4 weighted by 0.5 / 0.5
    assert net_benefit(positive, score, np.array([0.5]))[0] == pytest.approx(0.25 - 0.25)
    # at t = 0.3: TP 2, FP 1, weight 3/7
    assert net_benefit(positive, score, np.array([0.3]))[0] == pytest.approx(0.5 - 0.25 * 3 / 7)


def test_useful_ranges_are_where_the_model_beats_both_defaults():
    t = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    curve = np.array([0.10, 0.05, 0.04, -0.01, 0.02])
    all_ = np.array([0.12, 0.03, -0.05, -0.2, -0.4])
    assert useful_ranges(curve, all_, t) == [[0.2, 0.3], [0.5, 0.5]]
    assert describe_ranges([[0.2, 0.3], [0.5, 0.5]]) == "0.20-0.30, 0.50"
    assert describe_ranges([]) == "none"


def test_the_run_draws_curves_for_the_model_and_each_single_modality(tiny_runs):
    metrics = json.loads((tiny_runs["fused"] / "metrics.json").read_text())
    curves = metrics["test"]["decision_curves"]
    assert curves["thresholds"] == [float(t) for t in THRESHOLDS] and curves["n"] == metrics["n_test"]
    assert set(curves["classes"]) == {"covid", "pneumonia"}  # normal is no disease
    assert set(curves["classes"]["covid"]["models"]) == {"image + record", "image only", "record only"}
    assert len(curves["classes"]["covid"]["models"]["image only"]["net_benefit"]) == len(THRESHOLDS)
    assert (tiny_runs["fused"] / "plots" / "decision_curves_test.png").stat().st_size > 10_000
    card = (tiny_runs["fused"] / "MODEL_CARD.md").read_text()
    assert "## Decision curves (test split)" in card and "| covid | " in card
    single = json.loads((tiny_runs["image"] / "metrics.json").read_text())["test"]["decision_curves"]
    assert set(single["classes"]["covid"]["models"]) == {"image"}


def test_evaluate_reports_and_draws_them(tiny_runs, tmp_path, capsys):
    figure = tmp_path / "curves.png"
    assert evaluate_main(["--model", str(tiny_runs["fused"]), "--decision-curves", str(figure), "-q"]) == 0
    out = capsys.readouterr().out
    assert "decision curve, covid: useful thresholds image + record" in out and "prediction sets (90%" in out
    assert figure.stat().st_size > 10_000
    assert evaluate_main(["--model", str(tiny_runs["fused"]), "--decision-curves", str(tmp_path / "c.jpg")]) == 2
    assert ".png" in capsys.readouterr().err
