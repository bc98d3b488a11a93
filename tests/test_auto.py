"""``--fusion auto`` never ships a fused model that inner CV cannot tell from one
modality alone: on a cohort whose record is noise it ships the image alone and says
why (metrics.json, model card, ``modalities_``, ``Prediction.ignored``); where both
modalities carry signal it ships a fused model; the folder loads as what was chosen."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fusion import Config, FusionClassifier, synthetic
from fusion.backends.auto import Candidate, candidates, choose
from fusion.config import AUTO_CANDIDATES, TuningConfig
from fusion.training.run import run

# The cheap candidates (no network is trained): the frozen embedding's logistic model
# alone and stacked with the record, and the record's XGBoost alone.
CHEAP = ("stacked", "image_stacked", "tabular_xgboost")
CLASS_INDEX = {raw: i for i, raw in enumerate(synthetic.RAW_LABELS.values())}


def _cohort(folder, *, record_noise: bool, brighten) -> None:
    """The synthetic cohort (160 films, 32 px) as a folder, its images made brighter by
    ``brighten(class index)`` grey levels (so that a frozen embedding at 32 px sees the
    class) and, with ``record_noise``, every record moved to another row (the record
    then tells nothing of the class)."""
    table, images = synthetic.make_cohort(160, seed=5, image_size=32)
    labels = table["diagnosis"].map(CLASS_INDEX).to_numpy()
    if record_noise:
        order = np.random.default_rng(0).permutation(len(table))
        features = list(synthetic.FEATURES)
        table[features] = table[features].iloc[order].to_numpy()
    (folder / "images").mkdir(parents=True)
    for name, pixels, label in zip(table["image"], images, labels, strict=True):
        bright = np.clip(pixels.astype(int) + brighten(label), 0, 255).astype(np.uint8)
        Image.fromarray(bright).save(folder / "images" / name)
    table.to_csv(folder / "metadata.csv", index=False)


def _auto(folder, tuning: TuningConfig) -> Config:
    cfg = Config(fusion="auto", tuning=tuning)
    cfg.data.path, cfg.data.schema = str(folder), "synthetic"
    cfg.image.image_size = 32
    return cfg


@pytest.fixture(scope="module")
def cheap_tuning(small_tuning):
    return TuningConfig(**{**small_tuning.__dict__, "auto_candidates": CHEAP})


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory, cheap_tuning):
    root = tmp_path_factory.mktemp("auto_noise")
    _cohort(root / "data", record_noise=True, brighten=lambda c: 50 * c)
    return run(_auto(root / "data", cheap_tuning), root / "run")


def test_a_record_of_noise_gives_the_image_alone_and_says_why(noise_run):
    metrics = noise_run.metrics
    auto = metrics["auto"]
    assert set(auto["candidates"]) == set(CHEAP)
    assert auto["chosen"] == "image_stacked" and auto["backend"] == "stacked" and auto["modalities"] == ["image"]
    assert "the record added nothing measurable in inner CV" in auto["reason"]
    assert auto["reason"].endswith("this model uses the image only")
    for c in auto["candidates"].values():
        assert c["inner_cv_macro_auroc"] is not None and c["seconds"] >= 0
    assert auto["candidates"]["tabular_xgboost"]["inner_cv_macro_auroc"] < 0.65  # the record is noise
    assert auto["fusion_gain"]["single"] == "image_stacked" and auto["fusion_gain"]["margin_se"] == 1.0
    assert metrics["modalities"] == ["image"] and metrics["fusion"] == "auto" and metrics["backend"] == "stacked"
    assert metrics["config"]["modalities"] == ["image", "tabular"]  # what was asked for
    card = (noise_run.folder / "MODEL_CARD.md").read_text()
    assert "the record added nothing measurable in inner CV" in card and "this model uses the image only" in card
    assert "- Modalities: image; fusion strategy `auto`, backend `stacked`" in card
    assert "| image_stacked (chosen) | image |" in card


def test_an_image_only_auto_model_answers_as_one_and_round_trips(noise_run, tmp_path):
    clf = noise_run.classifier
    assert clf.modalities_ == ("image",) and clf.n_features_in_ == 0 and clf.preprocessor_ is None
    assert clf.schema_ is not None  # records are still validated, then reported ignored
    record, image = synthetic.example(seed=3, image_size=32)
    answer = clf.predict(record, image)
    assert answer.modalities == ("image",) and answer.ignored == ("tabular",)
    with pytest.raises(ValueError, match="'spo2'"):
        clf.predict({**record, "spo2": 140}, image)
    meta = json.loads((noise_run.folder / "config.json").read_text())
    assert meta["backend"] == "stacked" and meta["modalities"] == ["image"]
    assert meta["config"]["fusion"] == "auto" and meta["config"]["modalities"] == ["image", "tabular"]
    for folder in (noise_run.folder, FusionClassifier.load(noise_run.folder).save(tmp_path / "copy")):
        again = FusionClassifier.load(folder)
        assert again.modalities_ == ("image",) and again.backend_.name == "stacked" and again.config_.fusion == "auto"
        loaded = again.predict(record, image)
        assert (loaded.label, loaded.modalities, loaded.ignored) == (answer.label, ("image",), ("tabular",))
        assert loaded.probabilities == pytest.approx(answer.probabilities, abs=1e-6)


@pytest.fixture(scope="module")
def fused_run(tmp_path_factory, cheap_tuning):
    # The image tells pneumonia from the rest; the record tells the ill from the well.
    root = tmp_path_factory.mktemp("auto_fused")
    _cohort(root / "data", record_noise=False, brighten=lambda c: 50 * (c == 1))
    return run(_auto(root / "data", cheap_tuning), root / "run")


def test_both_modalities_with_signal_give_a_fused_model(fused_run):
    auto = fused_run.metrics["auto"]
    assert auto["chosen"] == "stacked" and auto["modalities"] == ["image", "tabular"], auto["reason"]
    assert auto["reason"].startswith("fusion added a measurable gain in inner CV")
    assert auto["reason"].endswith("this model uses the image and the record")
    assert auto["fusion_gain"]["low"] > 0 and auto["fusion_gain"]["fused"] == "stacked"
    assert fused_run.classifier.modalities_ == ("image", "tabular")


def test_an_auto_folder_saved_before_single_modalities_were_weighed_loads_unchanged(fused_run, tmp_path, rehash):
    """Such a folder's config.json lacks the settings added since; its outcome, a fusion
    strategy on the modalities asked for, is still one auto chooses among."""
    import shutil

    folder = shutil.copytree(fused_run.folder, tmp_path / "old")
    meta = json.loads((folder / "config.json").read_text())
    for section, key in (("tuning", "auto_candidates"), ("tuning", "auto_margin_se")):
        del meta["config"][section][key]
    (folder / "config.json").write_text(json.dumps(meta))
    rehash(folder)
    old, new = FusionClassifier.load(folder), fused_run.classifier
    assert old.backend_.name == "stacked" and old.modalities_ == ("image", "tabular")
    assert old.config_.tuning.auto_candidates == AUTO_CANDIDATES
    record, image = synthetic.example(seed=2, image_size=32)
    assert old.predict(record, image).probabilities == pytest.approx(new.predict(record, image).probabilities)


def test_the_image_network_alone_is_a_candidate_that_loads_as_itself(tmp_path, small_tuning):
    tuning = TuningConfig(**{**small_tuning.__dict__, "auto_candidates": ("image_joint",)})
    cfg = Config(fusion="auto", tuning=tuning)
    cfg.image.image_size, cfg.train.epochs, cfg.data.synthetic_n = 32, 1, 90
    result = run(cfg, tmp_path / "run")
    clf = result.classifier
    assert clf.backend_.name == "joint" and clf.modalities_ == ("image",)
    assert result.metrics["auto"]["chosen"] == "image_joint" and "uses the image" in result.metrics["auto"]["reason"]
    again = FusionClassifier.load(result.folder)
    assert again.network_.modalities == ("image",)
    record, image = synthetic.example(seed=1, image_size=32)
    assert again.predict(record, image).probabilities == pytest.approx(clf.predict(record, image).probabilities)


# ------------------------------------------------------------- the rule alone
def _oof(y: np.ndarray, signal: float, rng: np.random.Generator, noise: np.ndarray | None = None) -> np.ndarray:
    """Probabilities of three classes whose true class gets ``signal`` more log-odds
    than ``noise`` (drawn from ``rng`` when not given)."""
    logits = rng.normal(0.0, 1.0, (len(y), 3)) if noise is None else noise.copy()
    logits[np.arange(len(y)), y] += signal
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def _scores(oof: dict, y) -> dict:
    from fusion.backends.members import log_loss
    from fusion.evaluation import macro_auroc

    return {k: {"inner_cv_macro_auroc": macro_auroc(y, p), "inner_cv_log_loss": log_loss(y, p)} for k, p in oof.items()}


POOL = (Candidate("joint", "joint", ("image", "tabular")), Candidate("image_joint", "joint", ("image",)))


def test_a_fused_gain_within_the_noise_ships_the_single_modality():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    image = _oof(y, 2.0, rng)
    # The fused model is the image model plus a little noise of its own: a gain, if any, is luck.
    fused = 0.9 * image + 0.1 * _oof(y, 0.3, rng)
    oof = {"joint": fused, "image_joint": image}
    scores = _scores(oof, y)
    scores["joint"]["inner_cv_macro_auroc"] = scores["image_joint"]["inner_cv_macro_auroc"] + 1e-4  # best by a hair
    chosen, why = choose(POOL, scores, oof, y, None)
    assert chosen.name == "image_joint" and "within the noise" in why["reason"]
    assert why["reason"].startswith("the record added nothing measurable in inner CV")
    assert why["reason"].endswith("this model uses the image only")
    # A clear gain is shipped.
    oof["joint"] = _oof(y, 3.5, rng)
    chosen, why = choose(POOL, _scores(oof, y), oof, y, None)
    assert (
        chosen.name == "joint"
        and why["fusion_gain"]["low"] > 0
        and why["fusion_gain"]["level"] == pytest.approx(0.6827)
    )


def test_margin_zero_lets_the_higher_score_win_and_more_margin_asks_more():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    noise = rng.normal(0.0, 1.0, (len(y), 3))
    # Mostly the same errors, a few of its own: a small gain, a few standard errors wide.
    oof = {"image_joint": _oof(y, 1.5, rng, noise), "joint": _oof(y, 1.7, rng, noise + rng.normal(0, 0.3, noise.shape))}
    scores = _scores(oof, y)
    assert scores["joint"]["inner_cv_macro_auroc"] > scores["image_joint"]["inner_cv_macro_auroc"]
    assert choose(POOL, scores, oof, y, None, margin_se=0.0)[0].name == "joint"
    assert choose(POOL, scores, oof, y, None, margin_se=1.0)[0].name == "joint"
    assert choose(POOL, scores, oof, y, None, margin_se=5.0)[0].name == "image_joint"


def test_the_candidates_follow_the_request_and_the_setting():
    both = candidates(("image", "tabular"))
    assert [c.name for c in both] == list(AUTO_CANDIDATES)
    assert {c.name: c.modalities for c in both}["tabular_xgboost"] == ("tabular",)
    assert [c.name for c in candidates(("image",))] == ["joint", "stacked", "gbm"]
    assert all(c.modalities == ("image",) for c in candidates(("image",)))
    assert [c.name for c in candidates(("image", "tabular"), ("gbm", "image_gbm"))] == ["gbm", "image_gbm"]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (("joint", "xgboost"), r"tuning\.auto_candidates must be a non-empty list of \["),
        ((), r"tuning\.auto_candidates must be"),
        (("joint", "joint"), r"without repeats"),
    ],
)
def test_unknown_candidates_are_refused(value, match):
    with pytest.raises(ValueError, match=match):
        Config(fusion="auto", tuning=TuningConfig(auto_candidates=value))


def test_a_margin_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"tuning\.auto_margin_se must be a finite number between 0 and 5"):
        Config(tuning=TuningConfig(auto_margin_se=-1.0))


def test_a_saved_outcome_auto_would_not_choose_is_refused(noise_run, tmp_path, rehash):
    import shutil

    folder = shutil.copytree(noise_run.folder, tmp_path / "edited")
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["tuning"]["auto_candidates"] = ["stacked", "tabular_xgboost"]  # image_stacked no longer allowed
    (folder / "config.json").write_text(json.dumps(meta))
    rehash(folder)
    with pytest.raises(ValueError, match=r"'stacked' on .*modalities \['image'\] is not a model that config\.fusion"):
        FusionClassifier.load(folder)
