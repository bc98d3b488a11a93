"""FusionClassifier keeps scikit-learn's estimator contract where it fits.

scikit-learn's own checks that apply are run as they are (``APPLICABLE`` below). The
others do not apply, each for a reason:

- Every check that calls ``fit(X, y)`` on bare numpy arrays (``check_fit2d_1sample``,
  ``check_classifiers_train``, ``check_dont_overwrite_parameters``,
  ``check_estimators_overwrite_params``, ``check_fit_check_is_fitted``, ...): fusion
  fits patients described by a schema (a :class:`~fusion.data.Dataset` of records
  and/or films), not an anonymous matrix; there is no schema to validate a bare array
  against. The invariants those checks guard (fit leaves its parameters alone, state is
  set only by fit, ``classes_``) are asserted below on real data instead.
- ``check_estimators_unfitted``: it requires scikit-learn's own ``NotFittedError``
  class. fusion raises its own, which is, like scikit-learn's, both a ``ValueError``
  and an ``AttributeError``: importing scikit-learn just for the class would add more
  than a second to every command-line prediction.
"""

import copy

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils import estimator_checks

from fusion import Config, FusionClassifier, NotFittedError, load_dataset, synthetic

APPLICABLE = [
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_do_not_raise_errors_in_init_or_set_params",
]


@pytest.mark.parametrize("check", APPLICABLE)
def test_scikit_learn_checks_that_apply(check):
    getattr(estimator_checks, check)("FusionClassifier", FusionClassifier(Config()))


@pytest.fixture(scope="module")
def parts():
    return load_dataset(None, image_size=32, synthetic_n=90, seed=4).split(seed=0)


@pytest.mark.parametrize("kind", ["joint", "xgboost"])
def test_fit_leaves_its_parameter_alone_and_sets_fitted_state(parts, kind, small_tuning):
    cfg = Config(modalities="tabular", model="xgboost", tuning=small_tuning) if kind == "xgboost" else Config()
    cfg.image.image_size, cfg.train.epochs, cfg.train.device = 32, 1, "cpu"
    before = copy.deepcopy(cfg)
    clf = FusionClassifier(cfg)
    assert clf.fit(parts["train"], parts["val"]) is clf
    assert clf.config is cfg and cfg == before  # not validated in place, not replaced
    assert clf.config_ is not cfg and clf.config_.image.image_size == 32
    assert clf.classes_ == ("covid", "pneumonia", "normal")
    assert clf.n_features_in_ == len(synthetic.FEATURES)
    assert clf.backend_.name == kind


def test_clone_gives_an_unfitted_estimator_with_equal_parameters(parts):
    cfg = Config(modalities="tabular")
    cfg.train.epochs = 1
    fitted = FusionClassifier(cfg).fit(parts["train"], parts["val"])
    twin = clone(fitted)
    assert twin.config == cfg and twin.config is not cfg
    assert not hasattr(twin, "classes_")
    with pytest.raises(NotFittedError):
        twin.predict({"age": 50})
    twin.set_params(config=Config(modalities="image"))
    assert twin.get_params(deep=False) == {"config": Config(modalities="image")}
    with pytest.raises(ValueError, match="no parameter"):
        twin.set_params(epochs=3)


@pytest.mark.parametrize("call", ["predict", "predict_proba", "explain", "save"])
def test_not_fitted_error_is_a_value_error_and_an_attribute_error(call, tmp_path):
    clf = FusionClassifier()
    args = (tmp_path / "m",) if call == "save" else ({"age": 50},)
    for error in (NotFittedError, ValueError, AttributeError):
        with pytest.raises(error, match="not fitted"):
            getattr(clf, call)(*args)


def test_one_patient_and_many_patient_forms(tiny_runs):
    clf = FusionClassifier.load(tiny_runs["fused"])
    table, images = synthetic.make_cohort(5, seed=9, image_size=40)
    records = table[list(synthetic.FEATURES)]
    labels = clf.predict(records, list(images))
    proba = clf.predict_proba(records, list(images))
    assert labels.shape == (5,) and proba.shape == (5, 3)
    assert list(labels) == [clf.classes_[i] for i in proba.argmax(1)]
    one = clf.predict(records.iloc[0].to_dict(), images[0])  # a dict and one image: one Prediction
    assert one.label == labels[0]
    np.testing.assert_allclose(list(one.probabilities.values()), proba[0], atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(records.iloc[0].to_dict(), images[0]), proba[:1], atol=1e-6)
    # A stacked (n, H, W) array is many films; an (H, W) array one.
    assert clf.predict(None, images).shape == (5,)
    assert clf.predict(None, images[0]).modalities == ("image",)


# ------------------------------------------------------------------ issue 22
def test_nested_parameters_name_every_setting_and_set_a_copy():
    cfg = Config(modalities="tabular")
    clf = FusionClassifier(cfg)
    params = clf.get_params(deep=True)
    assert params["config"] is cfg and params["config__train"] is cfg.train
    assert params["config__train__lr"] == 2e-3 and params["config__tuning__inner_folds"] == 4
    assert FusionClassifier().get_params()["config__image__backbone"] == "custom"  # the default config's
    assert clf.set_params(config__train__lr=0.01, config__image__augment=False) is clf
    assert clf.config.train.lr == 0.01 and not clf.config.image.augment
    assert cfg.train.lr == 2e-3 and cfg.image.augment and clf.config is not cfg  # the given Config is untouched
    # A section and its setting in one call: the section first, then the setting in it.
    clf.set_params(config__train=type(cfg.train)(epochs=2), config__train__seed=5)
    assert (clf.config.train.epochs, clf.config.train.seed, clf.config.train.lr) == (2, 5, 2e-3)
    with pytest.raises(ValueError, match=r"no setting 'train__lrr'; known: \['train__epochs'"):
        clf.set_params(config__train__lrr=0.1)
    with pytest.raises(ValueError, match="no parameter"):
        clf.set_params(lr=0.1)
    with pytest.raises(TypeError, match="config must be a Config"):
        FusionClassifier(config=3).set_params(config__train__lr=0.1)
    assert FusionClassifier(config=3).get_params() == {"config": 3}


def _searchable(ds):
    """``ds`` as scikit-learn's cross-validation indexes samples (``X[rows, ...]``): a
    Dataset whose rows are taken by index, each part a Dataset again. fusion fits a
    Dataset (records and films with their schema), not a matrix and a label vector."""
    from dataclasses import dataclass, fields

    from fusion.data.dataset import Dataset

    @dataclass
    class Rows(Dataset):
        @property
        def shape(self) -> tuple[int]:
            return (len(self),)

        def __getitem__(self, key):
            return self.subset(key[0] if isinstance(key, tuple) else key)

    return Rows(**{f.name: getattr(ds, f.name) for f in fields(ds)})


def test_grid_search_tunes_a_nested_setting(parts):
    """GridSearchCV clones the estimator, sets ``config__train__lr`` on each clone and
    fits it; the Config it was given never changes."""
    from sklearn.model_selection import GridSearchCV

    from fusion import classification_metrics, grouped_kfold

    cfg = Config(modalities="tabular")
    cfg.train.epochs, cfg.train.device = 2, "cpu"
    before = copy.deepcopy(cfg)
    train = parts["train"]

    def macro_f1(estimator, X, y=None):
        return classification_metrics(X.labels, estimator.predict_dataset(X), estimator.classes_)["macro_f1"]

    search = GridSearchCV(
        FusionClassifier(cfg),
        {"config__train__lr": [1e-4, 3e-2]},
        cv=grouped_kfold(train.labels, train.groups, k=2, seed=0),
        scoring=macro_f1,
    ).fit(_searchable(train))
    assert [p["config__train__lr"] for p in search.cv_results_["params"]] == [1e-4, 3e-2]
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and scores[0] != scores[1]  # each candidate trained with its own rate
    best = search.best_estimator_
    assert best.config_.train.lr == search.best_params_["config__train__lr"] and best.classes_ == train.classes
    assert search.estimator.config is cfg and cfg == before  # nothing set on the Config given
