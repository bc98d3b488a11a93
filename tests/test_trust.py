"""Numbers a clinician-researcher can trust: calibration, operating points, intervals
by patient, subgroups, modality shares with known answers, the model card."""

import json

import numpy as np
import pytest
import torch

from fusion import load_dataset
from fusion.evaluation import (
    balanced_accuracy,
    bootstrap_interval,
    classification_metrics,
    macro_auroc,
    metric_intervals,
)
from fusion.evaluation.calibration import Calibration, nll
from fusion.evaluation.subgroups import subgroup_report
from fusion.explain import explain_network, modality_shares
from fusion.nets.joint import FusionModel
from fusion.nets.tabular import TabularMLP
from tests.conftest import SHARED_DATA


def _overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities that rank well but claim far too much certainty."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), y] += 1.2
    sharp = np.exp(logits * 6)
    return y, sharp / sharp.sum(axis=1, keepdims=True)


def test_temperature_scaling_lowers_nll_of_an_overconfident_model_and_keeps_its_answers():
    y, proba = _overconfident(600)
    cal = Calibration.fit(y[:300], proba[:300])
    assert cal.method in ("temperature", "vector") and cal.temperature > 2  # it cools an overconfident model
    temperature_only = Calibration(method="temperature", temperature=cal.temperature)
    for rows in (slice(0, 300), slice(300, 600)):  # validation, and unseen rows
        after = temperature_only.apply(proba[rows])
        assert nll(y[rows], after) < nll(y[rows], proba[rows])
        np.testing.assert_array_equal(after.argmax(1), proba[rows].argmax(1))
    assert nll(y[300:], cal.apply(proba[300:])) < nll(y[300:], proba[300:])


def test_vector_scaling_needs_every_class_and_never_inverts_one():
    # covid-chestxray's validation split holds two or three normals: per-class parameters
    # fitted on them once turned a scale negative and ranked normals upside down.
    y, proba = _overconfident(300, seed=2)
    rare = np.flatnonzero(y == 2)[5:]
    keep = np.setdiff1d(np.arange(300), rare)  # five rows of class 2 left
    assert Calibration.fit(y[keep], proba[keep]).method == "temperature"
    # A model whose classes need different corrections, with evidence for each: scales stay positive.
    skewed = proba ** np.array([0.3, 1.0, 3.0])
    skewed /= skewed.sum(axis=1, keepdims=True)
    cal = Calibration.fit(y, skewed)
    if cal.method == "vector":
        assert min(cal.scale) > 0
    assert macro_auroc(y, cal.apply(skewed)) > 0.7


def test_operating_points_reach_the_target_sensitivity_on_validation():
    y, proba = _overconfident(400, seed=1)
    cal = Calibration.fit(y, proba)
    cal.set_operating_points(y, proba, ("covid", "pneumonia", "normal"), ["covid", "pneumonia"], 0.95)
    assert set(cal.thresholds) == {"covid", "pneumonia"}
    calibrated = cal.apply(proba)
    for i, c in enumerate(("covid", "pneumonia")):
        assert (calibrated[y == i, i] >= cal.thresholds[c]).mean() >= 0.95


def test_intervals_contain_the_point_and_narrow_as_n_grows():
    widths = []
    for n in (60, 240, 960):
        y, proba = _overconfident(n, seed=2)
        r = bootstrap_interval(y, proba, n_boot=400, seed=0)
        assert r["low"] <= r["point"] <= r["high"]
        m = metric_intervals(y, proba, ("a", "b", "c"), n_boot=400, seed=0)
        assert m["accuracy"]["low"] <= float((proba.argmax(1) == y).mean()) <= m["accuracy"]["high"]
        assert m["ece"]["low"] <= m["ece"]["high"]
        balanced = classification_metrics(y, proba, ("a", "b", "c"))["balanced_accuracy"]
        assert m["balanced_accuracy"]["low"] <= balanced <= m["balanced_accuracy"]["high"]
        widths.append(r["high"] - r["low"])
    assert widths[0] > widths[1] > widths[2]
    # Seeded: the same interval every time.
    assert bootstrap_interval(y, proba, n_boot=100, seed=3) == bootstrap_interval(y, proba, n_boot=100, seed=3)


def test_the_balanced_accuracy_interval_agrees_with_a_patient_bootstrap_of_it():
    # The vectorised bootstrap (metric_intervals) and the plain one (bootstrap_interval)
    # draw the same patients from the same seed: the same interval.
    y, proba = _overconfident(300, seed=4)
    groups = np.arange(300) // 3
    fast = metric_intervals(y, proba, ("a", "b", "c"), groups, n_boot=200, seed=5)["balanced_accuracy"]
    plain = bootstrap_interval(
        y, proba, groups, metric=lambda t, p: balanced_accuracy(t, p.argmax(1)), n_boot=200, seed=5
    )
    assert fast["low"] == pytest.approx(plain["low"]) and fast["high"] == pytest.approx(plain["high"])


def test_patients_are_resampled_whole():
    """Two films of one patient always move together: column 0 of each row's
    'probabilities' carries its patient id, and each replicate must hold both films of
    every patient it draws."""
    n_patients = 40
    groups = np.repeat(np.arange(n_patients), 2)
    y = np.tile([0, 1], n_patients)
    ids = np.c_[groups.astype(float), np.zeros(len(groups))]
    seen = []

    def metric(y_sample, proba_sample):
        counts = np.bincount(proba_sample[:, 0].astype(int), minlength=n_patients)
        seen.append(counts)
        return 0.0

    bootstrap_interval(y, ids, groups, metric=metric, n_boot=50, seed=0)
    assert all(np.all(c % 2 == 0) for c in seen[1:])  # the first call is the point on all rows


def test_subgroups_on_the_synthetic_cohort(tiny_runs):
    from fusion import FusionClassifier

    clf = FusionClassifier.load(tiny_runs["fused"])
    ds = load_dataset(None, image_size=32, synthetic_n=300, seed=9)
    proba = clf.predict_dataset(ds)
    report = subgroup_report(
        ds.records, ds.labels, proba, clf.classes_, ds.groups, ["sex", "age_band"], ds.schema, n_boot=200
    )
    assert set(report["sex"]) == {"F", "M"} and sum(e["n"] for e in report["sex"].values()) == 300
    assert list(report["age_band"]) == [b for b in ("< 40", "40-65", ">= 65") if b in report["age_band"]]
    for entry in report["sex"].values():
        assert entry["interval"]["low"] <= entry["macro_auroc"] <= entry["interval"]["high"]
        assert set(entry["sensitivity"]) == set(clf.classes_) and isinstance(entry["flagged"], bool)
    with pytest.raises(ValueError, match="declares no bands"):
        subgroup_report(ds.records, ds.labels, proba, clf.classes_, ds.groups, ["crp"], ds.schema)


@pytest.mark.skipif(not (SHARED_DATA / "covid-chestxray").is_dir(), reason="covid-chestxray is not in ../shared/data")
def test_subgroups_on_covid_chestxray():
    ds = load_dataset(SHARED_DATA / "covid-chestxray", "covid_chestxray", modalities=("tabular",))
    rng = np.random.default_rng(0)
    proba = rng.dirichlet([1, 1, 1], len(ds))
    report = subgroup_report(
        ds.records, ds.labels, proba, ds.classes, ds.groups, ["sex", "view", "age"], ds.schema, n_boot=100
    )
    assert {"F", "M", "missing"} >= set(report["sex"]) and "AP Supine" in report["view"]
    assert sum(e["n"] for e in report["view"].values()) == len(ds)


# ------------------------------------------------------------ modality shares
def test_shares_known_answers():
    both = frozenset({"image", "tabular"})

    def ignores_image(s):
        return 2.0 if "tabular" in s else 0.0

    assert modality_shares(ignores_image, ("image", "tabular"), both) == {"image": 0.0, "tabular": 1.0}

    def symmetric(s):
        return 1.5 * len(s)

    assert modality_shares(symmetric, ("image", "tabular"), both) == {"image": 0.5, "tabular": 0.5}

    def interacting(s):  # each alone does nothing, together they decide: shared equally
        return 3.0 if s == both else 0.0

    assert modality_shares(interacting, ("image", "tabular"), both) == {"image": 0.5, "tabular": 0.5}
    assert modality_shares(symmetric, ("image", "tabular"), ["image"]) == {"image": 1.0, "tabular": 0.0}


def test_a_saturated_prediction_does_not_give_the_record_share_zero():
    """The image alone drives p(class 1) to ~1; the record still moves the logit. On
    the probability scale the record's effect vanishes (the old 100/0 split); on the
    log-odds scale it keeps its share."""

    class Image(torch.nn.Module):
        output_dim = 1

        def forward(self, x):
            return x.mean(dim=(1, 2, 3)).unsqueeze(1)

    tabular = TabularMLP(1, hidden=(1,), dropout=0.0)
    model = FusionModel({"image": Image(), "tabular": tabular}, n_classes=2, hidden=2, dropout=0.0)
    with torch.no_grad():
        tabular.net[0].weight.fill_(1.0)
        tabular.net[0].bias.zero_()
        model.head[1].weight.copy_(torch.tensor([[40.0, 0.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0]]))
        model.head[1].bias.zero_()
        model.head[4].weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        model.head[4].bias.zero_()
    inputs = {"image": torch.ones(1, 1, 16, 16), "tabular": torch.tensor([[1.0]])}
    with torch.no_grad():
        p = torch.softmax(model(inputs), 1)[0, 1].item()
    assert p > 0.999999
    out = explain_network(model.eval(), inputs, 1, image_mean=0.0, n_steps=8)
    assert 0.05 < out.modality_share["tabular"] < 0.5 and out.modality_share["image"] > 0.5


# ------------------------------------------------------------------ the card
def test_every_run_folder_has_a_model_card_naming_its_test_n_and_intervals(tiny_runs):
    for name, run in tiny_runs.items():
        card = (run / "MODEL_CARD.md").read_text()
        metrics = json.loads((run / "metrics.json").read_text())
        assert f"## Metrics: test ({metrics['n_test']} films)" in card, name
        auroc = metrics["test"]["auroc_macro"]
        interval = metrics["test"]["intervals"]["auroc_macro"]
        assert f"| macro AUROC | {auroc:.3f} [{interval['low']:.3f}, {interval['high']:.3f}] |" in card
        assert "Not a medical device" in card and "## Known limitations" in card
        assert "Calibration on test: ECE" in card
        balanced, interval = metrics["test"]["balanced_accuracy"], metrics["test"]["intervals"]["balanced_accuracy"]
        assert (
            f"| balanced accuracy (mean per-class sensitivity) | {balanced:.3f} "
            f"[{interval['low']:.3f}, {interval['high']:.3f}] |" in card
        )
    assert macro_auroc(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]])) == 1.0
