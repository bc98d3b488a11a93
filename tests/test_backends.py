"""Every fusion strategy through the same checks: save/load round trip, a missing
modality, explanations whose shares sum to 1, and auto choosing by inner CV only."""

import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion import Config, FusionClassifier, load_dataset, synthetic
from fusion.nets.backbones import create_backbone

STRATEGIES = ["stacked", "gbm"]


@pytest.fixture(scope="module")
def parts():
    return load_dataset(None, image_size=32, synthetic_n=160, seed=5).split(seed=0)


def _config(fusion: str, tuning, modalities=("image", "tabular")) -> Config:
    cfg = Config(modalities=modalities, fusion=fusion, tuning=tuning)
    cfg.image.image_size, cfg.image.pretrained = 32, "cxr"
    cfg.train.epochs = 2
    return cfg


@pytest.fixture(scope="module")
def fitted(parts, small_tuning):
    return {s: FusionClassifier(_config(s, small_tuning)).fit(parts["train"], parts["val"]) for s in STRATEGIES}


def test_shipped_weights_match_their_record_and_give_finite_embeddings():
    folder = resources.files("fusion.weights")
    record = json.loads(folder.joinpath("custom_cxr.json").read_text())
    data = folder.joinpath("custom_cxr.safetensors").read_bytes()
    assert hashlib.sha256(data).hexdigest() == record["sha256"]
    assert record["image_size"] == 128 and "kermany" in record["data"] and record["command"].startswith("python ")
    backbone = create_backbone("custom", "cxr")
    assert backbone.input_stats == (record["mean"], record["std"])
    with torch.no_grad():
        out = backbone.eval().forward_features(torch.rand(3, 1, 128, 128))
    assert out.shape == (3, backbone.output_dim) and torch.isfinite(out).all() and out.abs().sum() > 0


def test_unknown_named_weights_are_refused():
    with pytest.raises(ValueError, match=r"no weights named 'xray'.*\[.imagenet., .cxr.\]"):
        create_backbone("custom", "xray")
    cfg = Config(modalities=("image",))
    cfg.image.pretrained = "xray"
    with pytest.raises(ValueError, match=r"image\.pretrained must be one of"):
        cfg.validate()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_round_trip_gives_identical_probabilities(fitted, parts, strategy, tmp_path):
    clf = fitted[strategy]
    assert clf.backend_.name == strategy
    folder = clf.save(tmp_path / strategy)
    again = FusionClassifier.load(folder)
    assert again.backend_.name == strategy
    np.testing.assert_allclose(again.predict_dataset(parts["test"]), clf.predict_dataset(parts["test"]), atol=1e-6)
    assert not list(folder.glob("*.pkl")) and "pickle" not in (folder / "manifest.json").read_text()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_missing_modality_is_answered(fitted, strategy):
    clf = fitted[strategy]
    record, image = synthetic.example(seed=4, image_size=64)
    both = clf.predict(record, image)
    assert both.modalities == ("image", "tabular")
    only_image, only_record = clf.predict(None, image), clf.predict(record, None)
    assert only_image.modalities == ("image",) and only_record.modalities == ("tabular",)
    for p in (both, only_image, only_record):
        assert abs(sum(p.probabilities.values()) - 1) < 1e-6
    assert only_image.probabilities != both.probabilities != only_record.probabilities
    # A batch where one row lacks its record answers that row from its image alone.
    proba = clf.predict_proba([record, {}], [image, image])
    np.testing.assert_allclose(proba[1], list(only_image.probabilities.values()), atol=1e-6)
    np.testing.assert_allclose(proba[0], list(both.probabilities.values()), atol=1e-6)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_explanations_cover_both_modalities(fitted, strategy, tmp_path):
    clf = fitted[strategy]
    record, image = synthetic.example(seed=8, image_size=64)
    e = clf.explain(record, image, n_steps=8)
    assert e.probabilities == pytest.approx(clf.predict(record, image).probabilities, abs=1e-6)
    assert sum(e.modality_share.values()) == pytest.approx(1.0) and set(e.modality_share) == {"image", "tabular"}
    assert all(0 <= s <= 1 for s in e.modality_share.values())
    assert e.image_attribution.shape == (32, 32) and np.isfinite(e.image_attribution).all()
    assert set(e.tabular_attribution) == set(synthetic.FEATURES)
    assert all(np.isfinite(v) for v in e.tabular_attribution.values())
    assert clf.explain(None, image, n_steps=4).modality_share == {"image": 1.0, "tabular": 0.0}
    e.save(tmp_path / "why.png")


def test_single_modality_strategies_train_the_same_way(parts, small_tuning):
    for strategy in STRATEGIES:
        image = FusionClassifier(_config(strategy, small_tuning, ("image",))).fit(parts["train"], parts["val"])
        tabular = FusionClassifier(_config(strategy, small_tuning, ("tabular",))).fit(parts["train"], parts["val"])
        assert image.predict_dataset(parts["test"]).shape == tabular.predict_dataset(parts["test"]).shape


def test_auto_chooses_by_inner_cv_of_the_training_part_only(parts, small_tuning):
    # The fusion strategies only (tests/test_auto.py has the single-modality candidates).
    cfg = _config(
        "auto", small_tuning.__class__(**{**small_tuning.__dict__, "auto_candidates": ("joint", "stacked", "gbm")})
    )
    clf = FusionClassifier(cfg).fit(parts["train"], parts["val"])
    auto = clf.history_["auto"]
    assert set(auto["candidates"]) == {"joint", "stacked", "gbm"} and auto["chosen"] == clf.backend_.name
    assert auto["modalities"] == ["image", "tabular"] and auto["fusion_gain"] is None
    assert all(c["inner_cv_macro_auroc"] is not None for c in auto["candidates"].values())
    # Another validation split (even one with every label wrong) cannot change the choice.
    val = parts["val"]
    poisoned = val.subset(np.arange(len(val)))
    poisoned.labels = (val.labels + 1) % 3
    again = FusionClassifier(cfg).fit(parts["train"], poisoned).history_["auto"]
    for name, candidate in auto["candidates"].items():
        assert again["candidates"][name]["inner_cv_macro_auroc"] == candidate["inner_cv_macro_auroc"]
    assert again["chosen"] == auto["chosen"]


# ------------------------------------------------------------------ issue 21
BACKEND_FILES = {
    "stacked": ["stacked.json", "stacked_record.json", "embedder.safetensors"],
    "gbm": ["gbm.json", "gbm_state.json", "embedder.safetensors"],
}


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_backends")
    return {s: fitted[s].save(root / s) for s in STRATEGIES}


def _copy(folder, tmp_path):
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "model"))


@pytest.mark.parametrize("strategy, name", [(s, f) for s, files in BACKEND_FILES.items() for f in files])
def test_every_backend_file_must_be_listed(saved, tmp_path, rehash, strategy, name):
    folder = _copy(saved[strategy], tmp_path)
    rehash(folder, drop=(name,))
    with pytest.raises(ValueError, match=re.escape(name)):
        FusionClassifier.load(folder)
    (folder / name).unlink()
    with pytest.raises(ValueError, match=rf"manifest\.json does not list {re.escape(name)}"):
        FusionClassifier.load(folder)


def _zeroed(data: bytes) -> bytes:
    from safetensors.torch import load, save

    return save({k: v.zero_() for k, v in load(data).items()})


def _json(edit):
    def change(data: bytes) -> bytes:
        content = json.loads(data)
        edit(content)
        return json.dumps(content).encode()

    return change


def _scale_leaves(model: dict) -> None:
    """Every leaf value of every tree times ten: the same trees, other probabilities."""
    for tree in model["learner"]["gradient_booster"]["model"]["trees"]:
        for i, left in enumerate(tree["left_children"]):
            if left == -1:
                tree["split_conditions"][i] *= 10


SWAPS = [
    ("stacked", "stacked.json", _json(lambda s: s["image_model"]["intercept"].__setitem__(0, 5.0))),
    ("stacked", "stacked_record.json", _json(_scale_leaves)),
    ("stacked", "embedder.safetensors", _zeroed),
    ("gbm", "gbm.json", _json(_scale_leaves)),
    ("gbm", "embedder.safetensors", _zeroed),
]


@pytest.mark.parametrize("strategy, name, change", SWAPS, ids=[f"{s}-{n}" for s, n, _ in SWAPS])
def test_a_backend_file_swapped_after_hashing_is_never_parsed(
    saved, parts, tmp_path, swap_after_hashing, strategy, name, change
):
    folder = _copy(saved[strategy], tmp_path)
    expected = FusionClassifier.load(folder).predict_dataset(parts["test"])
    swapped = swap_after_hashing(folder / name, change((folder / name).read_bytes()))
    got = FusionClassifier.load(folder).predict_dataset(parts["test"])
    assert swapped
    np.testing.assert_array_equal(got, expected)


EDITS = [
    ("stacked", "stacked.json", lambda s: s.update(prior=[0.5, 0.6, -0.1]), r"stacked\.json: prior"),
    ("stacked", "stacked.json", lambda s: s.update(prior=[0.5, 0.5]), r"stacked\.json: prior"),
    ("stacked", "stacked.json", lambda s: s["combiners"]["image"].update(kind="magic"), r"combiners\.image\.kind"),
    ("stacked", "stacked.json", lambda s: s["combiners"].pop("image"), r"stacked\.json: combiners"),
    ("stacked", "stacked.json", lambda s: s["image_model"].update(coef=[[1.0]]), r"stacked\.json: image_model\.coef"),
    (
        "stacked",
        "stacked.json",
        lambda s: s["image_model"].update(scale=[0.0] * len(s["image_model"]["scale"])),
        r"stacked\.json: image_model\.scale",
    ),
    ("gbm", "gbm_state.json", lambda s: s.update(embedding_mean=[0.0]), r"gbm_state\.json: embedding_mean"),
    ("gbm", "gbm_state.json", lambda s: s.update(extra=1), r"gbm_state\.json has unknown key"),
]


@pytest.mark.parametrize("strategy, name, edit, match", EDITS, ids=[m for *_, m in EDITS])
def test_a_hand_edited_backend_state_is_refused(saved, tmp_path, rehash, strategy, name, edit, match):
    folder = _copy(saved[strategy], tmp_path)
    content = json.loads((folder / name).read_text())
    edit(content)
    (folder / name).write_text(json.dumps(content))
    rehash(folder)
    with pytest.raises(ValueError, match=match):
        FusionClassifier.load(folder)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_booster_member_of_other_columns_is_refused(saved, tmp_path, rehash, strategy):
    """A booster file from another model (hashes updated) does not fit this one: the
    other strategy's booster reads other columns (record only, or embedding + record)."""
    import shutil

    mine, other = ("gbm.json", "stacked_record.json") if strategy == "gbm" else ("stacked_record.json", "gbm.json")
    folder = _copy(saved[strategy], tmp_path)
    shutil.copy(saved["stacked" if strategy == "gbm" else "gbm"] / other, folder / mine)
    rehash(folder)
    with pytest.raises(ValueError, match=rf"{re.escape(mine)}: the booster reads \d+ features; this model gives it"):
        FusionClassifier.load(folder)
