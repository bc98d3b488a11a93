"""Split conformal prediction sets: the coverage they promise, per class too, with
patients as the exchangeable units."""

from __future__ import annotations

import numpy as np
import pytest

from fusion.checks import Where
from fusion.evaluation.conformal import ConformalSets, coverage_report, pattern, threshold


def _draw(rng, n, k=3, sharp=2.0, prior=None):
    """Rows of a noisy classifier: true classes and calibrated-looking probabilities."""
    y = rng.choice(k, size=n, p=prior)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += sharp
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def test_marginal_coverage_is_within_the_theoretical_bounds():
    """Over many calibration draws, the mean coverage lies in [1 - a, 1 - a + 1/(n+1)]
    (Vovk 2005; Angelopoulos & Bates 2021, Theorem 1), up to Monte Carlo error."""
    n, alpha, draws = 49, 0.1, 600
    coverages = []
    for seed in range(draws):
        rng = np.random.default_rng(seed)
        y_cal, p_cal = _draw(rng, n)
        y_new, p_new = _draw(rng, 200)
        sets = ConformalSets.fit(y_cal, {"image": p_cal}, None, coverage=1 - alpha)
        inside = sets.contains(p_new, "image")
        coverages.append(inside[np.arange(len(y_new)), y_new].mean())
    mean, se = np.mean(coverages), np.std(coverages) / np.sqrt(draws)
    assert 1 - alpha - 3 * se <= mean <= 1 - alpha + 1 / (n + 1) + 3 * se


def test_class_conditional_coverage_holds_in_a_rare_class():
    alpha, draws, prior = 0.1, 300, [0.8, 0.15, 0.05]
    marginal, mondrian = [], []
    for seed in range(draws):
        rng = np.random.default_rng(seed)
        y_cal, p_cal = _draw(rng, 600, sharp=1.0, prior=prior)
        y_new, p_new = _draw(rng, 600, sharp=1.0, prior=prior)
        rare = y_new == 2
        for method, out in (("marginal", marginal), ("class", mondrian)):
            sets = ConformalSets.fit(y_cal, {"tabular": p_cal}, None, coverage=1 - alpha, method=method)
            inside = sets.contains(p_new, "tabular")
            out.append(inside[rare, 2].mean())
    assert np.mean(mondrian) >= 1 - alpha - 0.01
    assert np.mean(marginal) < np.mean(mondrian)  # the rare class is what marginal sets under-cover


def test_too_few_patients_rule_nothing_out():
    sets = ConformalSets.fit(np.array([0, 1, 2]), {"image": np.eye(3)}, None, coverage=0.9)
    assert sets.minimum["image"] == [0.0, 0.0, 0.0]
    assert sets.contains(np.array([[0.98, 0.01, 0.01]]), "image").all()


def test_each_patient_weighs_one_whatever_its_number_of_films():
    scores = np.array([0.1] * 10 + [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    groups = np.array([0] * 10 + list(range(1, 10)))
    # 10 patients (one of them with ten films): the ceil(0.9 * 11) = 10th smallest patient score.
    assert threshold(scores, groups, 0.1) == 0.95
    # as ten separate patients the ten films would count ten times and pull the quantile down
    assert threshold(scores, None, 0.1) == 0.9
    single = np.arange(19)
    assert threshold(scores, single, 0.1) == threshold(scores, None, 0.1)


def test_an_empty_set_gets_the_most_probable_class():
    sets = ConformalSets(coverage=0.9, minimum={"image": [0.9, 0.9, 0.9]})
    inside = sets.contains(np.array([[0.5, 0.3, 0.2]]), ["image"])
    assert inside.tolist() == [[True, False, False]]


def test_a_missing_pattern_is_named():
    sets = ConformalSets(coverage=0.9, minimum={"image+tabular": [0.1, 0.1]})
    with pytest.raises(KeyError, match="inputs 'image'"):
        sets.contains(np.array([[0.5, 0.5]]), "image")


def test_round_trip_and_strict_reading():
    rng = np.random.default_rng(0)
    y, p = _draw(rng, 80)
    sets = ConformalSets.fit(y, {pattern(["tabular", "image"]): p, "image": p}, None, coverage=0.8, method="class")
    again = ConformalSets.from_dict(sets.to_dict(), 3, where=Where("calibration.json") / "conformal")
    assert again == sets
    bad = sets.to_dict() | {"minimum": {"image": [0.1, 1.5, 0.2]}}
    with pytest.raises(ValueError, match=r"conformal.minimum.image\[1\]"):
        ConformalSets.from_dict(bad, 3, where=Where("calibration.json") / "conformal")
    with pytest.raises(ValueError, match="must hold 3"):
        ConformalSets.from_dict(sets.to_dict() | {"minimum": {"image": [0.1]}}, 3, where=Where("c") / "conformal")
    with pytest.raises(ValueError, match="names inputs 'dicom'"):
        ConformalSets.from_dict(sets.to_dict() | {"minimum": {"dicom": [0.1] * 3}}, 3, where=Where("c"))
    with pytest.raises(ValueError, match="coverage"):
        ConformalSets.from_dict(sets.to_dict() | {"coverage": 1.0}, 3, where=Where("c"))


def test_coverage_report_counts_sets_and_gives_intervals():
    y = np.array([0, 0, 1, 1, 2, 2])
    inside = np.array(
        [[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 1]],
        dtype=bool,
    )
    r = coverage_report(y, inside, ["a", "b", "c"], groups=np.arange(6), n_boot=200)
    assert r["coverage"]["value"] == pytest.approx(5 / 6)
    assert r["set_size"]["value"] == pytest.approx(9 / 6)
    assert r["sizes"] == {"1": 4, "2": 1, "3": 1}
    assert r["per_class"]["b"]["coverage"]["value"] == 0.5
    assert r["coverage"]["low"] <= r["coverage"]["value"] <= r["coverage"]["high"]
