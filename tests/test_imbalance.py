"""Imbalanced classes: how the network trains (``train.balance``: class weights,
class-balanced batches or neither) and how a label is read off the probabilities
(``calibration.decision``: argmax, or balanced: the class whose probability most
exceeds its prior). Defaults are today's; the settings are saved with the model and old
folders load with today's behaviour."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion import Config, FusionClassifier, load_dataset, select_by_validation
from fusion.backends.base import class_weights
from fusion.evaluation.calibration import Calibration, embodied_priors
from fusion.prediction import decide
from fusion.selection import balanced_accuracy
from fusion.training.loop import epoch_order, loss_weights
from fusion.training.run import score

OLD = Path(__file__).parent / "data" / "old_format"


# ------------------------------------------------------------------ training
def test_sampling_draws_every_class_equally_often():
    labels = torch.tensor([0] * 900 + [1] * 80 + [2] * 20)
    counts = np.zeros(3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        order = epoch_order(labels, "sampling", generator)
        assert len(order) == len(labels)
        counts += np.bincount(labels[order].numpy(), minlength=3)
    shares = counts / counts.sum()
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.02)  # 20 epochs of 1,000 draws
    # The rare class's rows recur within an epoch; frequent ones are left out of it.
    assert len(set(order[labels[order] == 2].tolist())) <= 20 < (labels[order] == 2).sum()


@pytest.mark.parametrize("balance", ["weights", "none"])
def test_other_balances_visit_every_row_once_in_todays_order(balance):
    labels = torch.tensor([0] * 30 + [1] * 5)
    order = epoch_order(labels, balance, torch.Generator().manual_seed(7))
    assert torch.equal(order, torch.randperm(35, generator=torch.Generator().manual_seed(7)))


def test_only_weights_weigh_the_loss():
    labels = np.array([0] * 30 + [1] * 10)
    np.testing.assert_array_equal(loss_weights(labels, 2, "weights"), class_weights(labels, 2))
    np.testing.assert_array_equal(loss_weights(labels, 2, "sampling"), [1.0, 1.0])
    np.testing.assert_array_equal(loss_weights(labels, 2, "none"), [1.0, 1.0])


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match=r"^train\.balance must be one of \('weights', 'sampling', 'none'\)"):
        Config().with_params(train__balance="oversample").validate()
    with pytest.raises(ValueError, match=r"^calibration\.decision must be one of \('argmax', 'balanced'\)"):
        Config().with_params(calibration__decision="threshold").validate()


# ------------------------------------------------------------------ the decision
def _gaussian_cohort(n: int, priors, seed: int = 0):
    """Classes with the given priors, one feature N(class, 1): the exact posterior."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(priors), n, p=priors)
    x = rng.normal(y.astype(float), 1.0)
    likelihood = np.exp(-((x[:, None] - np.arange(len(priors))) ** 2) / 2)
    posterior = likelihood * priors
    return y, posterior / posterior.sum(axis=1, keepdims=True), likelihood / likelihood.sum(axis=1, keepdims=True)


def test_the_balanced_decision_raises_the_rare_classes_recall():
    priors = np.array([0.8, 0.15, 0.05])
    y, posterior, _ = _gaussian_cohort(20_000, priors)
    estimated = embodied_priors(y, posterior)
    np.testing.assert_allclose(estimated, priors, atol=0.01)  # calibrated: the class frequencies
    argmax, balanced = decide(posterior), decide(posterior, estimated)

    def recall(pred, c):
        return (pred[y == c] == c).mean()

    assert recall(balanced, 2) > recall(argmax, 2) + 0.3 and recall(balanced, 1) > recall(argmax, 1)
    assert balanced_accuracy(y, balanced) > balanced_accuracy(y, argmax) + 0.1


def test_a_class_weighted_model_is_not_corrected_twice():
    """Weighted training already divides by the prior: the priors it embodies are
    about uniform, and the balanced decision is then its argmax."""
    y, _, weighted = _gaussian_cohort(20_000, np.array([0.8, 0.15, 0.05]))
    estimated = embodied_priors(y, weighted)
    np.testing.assert_allclose(estimated, [1 / 3] * 3, atol=0.02)
    assert (decide(weighted, estimated) == decide(weighted)).mean() > 0.98


@pytest.fixture(scope="module")
def imbalanced():
    """The synthetic cohort with the normal class made rare (one in eight kept)."""
    ds = load_dataset(None, image_size=32, synthetic_n=600, seed=2)
    keep = np.flatnonzero((ds.labels != 2) | (np.arange(len(ds)) % 8 == 0))
    return ds.subset(keep).split(seed=0)


def _network(balance: str, decision: str) -> Config:
    cfg = Config(modalities=("tabular",))
    cfg.train.epochs, cfg.train.balance, cfg.calibration.decision = 5, balance, decision
    return cfg


@pytest.fixture(scope="module")
def picked(imbalanced):
    """A record network trained without class weights, read by either decision, the
    decision chosen on the validation split."""
    candidates = {d: _network("none", d) for d in ("argmax", "balanced")}
    return select_by_validation(candidates, imbalanced["train"], imbalanced["val"])


@pytest.fixture(scope="module")
def plain(picked):
    """The record network read by the balanced decision."""
    return picked.models["balanced"]


def test_predict_metrics_and_labels_follow_the_balanced_decision(plain, imbalanced):
    test = imbalanced["test"]
    proba = plain.predict_dataset(test)
    labels = plain.calibration_.decide(proba)
    rare = test.labels == 2
    assert (labels[rare] == 2).mean() > (proba.argmax(1)[rare] == 2).mean()  # the rare class recovered
    records = test.records.to_dict("records")
    assert list(plain.predict(test.records)) == [plain.classes_[i] for i in labels]
    assert [plain.predict(records[i]).label for i in range(10)] == [plain.classes_[i] for i in labels[:10]]
    metrics, _, _ = score(plain, test)
    recall = {c: metrics["per_class"][c]["recall"] for c in plain.classes_}
    assert recall["normal"] == pytest.approx((labels[rare] == 2).mean())
    assert metrics["accuracy"] == pytest.approx((labels == test.labels).mean())
    assert metrics["auroc_macro"] == pytest.approx(np.mean([metrics["per_class"][c]["auroc"] for c in plain.classes_]))


def test_an_explanation_explains_the_label_given(plain, imbalanced):
    test = imbalanced["test"]
    proba = plain.predict_dataset(test)
    row = int(np.flatnonzero(plain.calibration_.decide(proba) != proba.argmax(1))[0])  # where the rules differ
    record = test.records.iloc[row].to_dict()
    label = plain.predict(record).label
    assert label != plain.classes_[int(proba[row].argmax())]
    assert plain.explain(record, n_steps=4).target == label


def test_balanced_decision_and_balance_round_trip_in_a_folder(plain, imbalanced, tmp_path):
    folder = plain.save(tmp_path / "model")
    saved = json.loads((folder / "calibration.json").read_text())
    assert saved["decision"] == "balanced" and len(saved["priors"]) == 3
    config = json.loads((folder / "config.json").read_text())["config"]
    assert config["train"]["balance"] == "none" and config["calibration"]["decision"] == "balanced"
    again = FusionClassifier.load(folder)
    assert again.calibration_.decision == "balanced" and again.calibration_.priors == plain.calibration_.priors
    rows = imbalanced["test"].records
    assert list(again.predict(rows)) == list(plain.predict(rows))


def test_the_default_decision_writes_nothing_new():
    assert set(Calibration().to_dict()) == {
        "method", "temperature", "scale", "shift", "thresholds", "target_sensitivity", "report"
    }  # fmt: skip


@pytest.mark.parametrize("name", ["network", "xgboost"])
def test_old_folders_load_with_todays_argmax(name):
    clf = FusionClassifier.load(OLD / name)
    assert clf.calibration_.decision == "argmax" and clf.calibration_.priors == []
    assert clf.config_.train.balance == "weights" and clf.config_.calibration.decision == "argmax"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"decision": "balanced"}, r"priors must hold 3 positive numbers"),
        ({"decision": "balanced", "priors": [0.5, 0.5]}, r"priors must hold 3 positive numbers"),
        ({"decision": "balanced", "priors": [0.5, 0.0, 0.5]}, r"priors\[1\] must be"),
        ({"priors": [0.2, 0.3, 0.5]}, r"priors must hold none for argmax"),
        ({"decision": "vote"}, r"decision must be one of \['argmax', 'balanced'\]"),
    ],
)
def test_a_hand_edited_decision_is_refused(plain, tmp_path, rehash, edit, match):
    folder = plain.save(tmp_path / "model")
    saved = json.loads((folder / "calibration.json").read_text())
    saved = {k: v for k, v in saved.items() if k not in ("decision", "priors")}
    (folder / "calibration.json").write_text(json.dumps({**saved, **edit}))
    rehash(folder)
    with pytest.raises(ValueError, match=match):
        FusionClassifier.load(folder)


# ------------------------------------------------------------------ chosen by validation
def test_the_decision_is_chosen_by_validation_without_training_twice(picked, imbalanced):
    assert picked.models["argmax"].backend_ is picked.models["balanced"].backend_  # trained once
    assert picked.models["argmax"].calibration_.decision == "argmax"
    val = imbalanced["val"]
    for name, model in picked.models.items():
        expected = balanced_accuracy(val.labels, model.calibration_.decide(model.predict_dataset(val)))
        assert picked.scores[name] == pytest.approx(expected)
    assert picked.chosen == "balanced" and picked.model is picked.models["balanced"]


def test_a_selection_needs_a_validation_part(imbalanced):
    with pytest.raises(ValueError, match="non-empty validation part"):
        select_by_validation({"a": _network("none", "argmax")}, imbalanced["train"], None)


def test_an_imbalance_setting_trains_and_is_saved_with_the_run(tmp_path):
    from fusion.training.run import run

    cfg = _network("sampling", "balanced")
    cfg.data.synthetic_n, cfg.train.epochs = 90, 1
    result = run(cfg, tmp_path / "run")
    assert result.metrics["config"]["train"]["balance"] == "sampling"
    assert result.metrics["calibration"]["decision"] == "balanced"
    card = (result.folder / "MODEL_CARD.md").read_text()
    assert "- Decision: balanced: the class whose probability most exceeds its prior" in card
    assert "- Class imbalance in training the network: class-balanced batches" in card
    shutil.rmtree(result.folder / "plots")
