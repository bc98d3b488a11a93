import numpy as np
import pytest

from fusion.evaluation import classification_metrics, expected_calibration_error, format_metrics


def test_perfect_predictions():
    y = np.array([0, 1, 2, 2])
    m = classification_metrics(y, np.eye(3)[y], ("a", "b", "c"))
    assert m["accuracy"] == m["macro_f1"] == m["auroc_macro"] == 1.0
    assert m["per_class"]["c"]["support"] == 2 and m["per_class"]["a"]["specificity"] == 1.0
    assert m["ece"] == pytest.approx(0.0)


def test_known_confusion_and_sensitivity():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    m = classification_metrics(y, proba, ("neg", "pos"))
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["per_class"]["neg"]["sensitivity"] == 0.5 and m["per_class"]["pos"]["sensitivity"] == 1.0
    assert m["per_class"]["pos"]["specificity"] == 0.5
    assert "macro-F1" in format_metrics(m)


def test_auroc_undefined_with_one_class_present():
    m = classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]), ("a", "b"))
    assert m["auroc_macro"] is None and m["per_class"]["b"]["auroc"] is None


def test_ece_of_overconfident_model():
    y = np.array([0, 1, 0, 1])
    proba = np.tile([0.95, 0.05], (4, 1))
    assert expected_calibration_error(y, proba) == pytest.approx(0.45)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(np.array([0, 1]), np.ones((3, 2)), ("a", "b"))


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_present():
    from sklearn.metrics import balanced_accuracy_score

    from fusion.evaluation import balanced_accuracy

    rng = np.random.default_rng(0)
    y = rng.choice(4, 300, p=[0.7, 0.2, 0.08, 0.02])
    pred = np.where(rng.random(300) < 0.6, y, 0)  # the majority class wins the doubtful rows
    assert balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))
    # Everything called the majority class: accuracy 0.7, balanced accuracy 1/4 (chance).
    majority = np.zeros(300, dtype=int)
    assert balanced_accuracy(y, majority) == pytest.approx(0.25)
    proba = np.eye(4)[pred] * 0.7 + 0.075
    m = classification_metrics(y, proba, ("a", "b", "c", "d"))
    assert m["balanced_accuracy"] == pytest.approx(np.mean([m["per_class"][c]["recall"] for c in "abcd"]))
    assert "balanced accuracy" in format_metrics(m)
    # A class absent from the labels is left out, as macro-F1 leaves it out.
    assert balanced_accuracy(np.array([0, 0, 1]), np.array([0, 2, 1])) == pytest.approx(0.75)


def test_metrics_written_before_balanced_accuracy_still_format():
    m = classification_metrics(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), ("a", "b"))
    del m["balanced_accuracy"]
    assert "balanced accuracy" not in format_metrics(m) and "macro-F1" in format_metrics(m)
