"""The configuration: derived defaults that stay derived, one declaration per setting
(the train command, config_from_args and the error-to-flag map all come from it), and
the tuning grids as settings saved with the model."""

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fusion import Config, FusionClassifier, load_dataset
from fusion.config import ImageConfig, TuningConfig, settings
from fusion.model_folder import with_earlier_settings

FIXTURES = Path(__file__).resolve().parent / "data" / "old_format"


# ------------------------------------------------------- derived defaults (traps)
def test_a_backbone_chosen_after_validation_gets_its_own_input_size():
    """validate() used to write the custom backbone's 64 px into the config: a backbone
    chosen afterwards kept it (DenseNet169 takes 224)."""
    cfg = Config()
    cfg.image.backbone = "densenet169"
    cfg.validate()
    assert cfg.image.image_size is None
    assert cfg.resolved().image.image_size == 224
    cfg.image.backbone = "custom"
    assert cfg.validate().resolved().image.image_size == 64


def test_a_config_switched_back_to_joint_loses_the_frozen_strategies_weights():
    """validate() used to set pretrained='cxr' (and 128 px) for stacked; switched back to
    joint, the config kept both."""
    cfg = Config(fusion="stacked")
    cfg.fusion = "joint"
    cfg.validate()
    assert (cfg.image.pretrained, cfg.image.image_size) == (None, None)
    resolved = cfg.resolved()
    assert (resolved.image.pretrained, resolved.image.image_size) == (None, 64)
    cfg.fusion = "stacked"
    resolved = cfg.resolved()
    assert (resolved.image.pretrained, resolved.image.image_size) == ("cxr", 128)


def test_a_frozen_strategy_given_its_own_weights_after_validation_is_not_refused(tmp_path):
    """The derived 'cxr' used to count as a setting: image.weights set afterwards was then
    refused as a second starting point."""
    cfg = Config(fusion="gbm")
    cfg.image.weights = str(tmp_path / "backbone.pt")
    resolved = cfg.validate().resolved()
    assert (resolved.image.pretrained, resolved.image.weights) == (None, str(tmp_path / "backbone.pt"))
    assert resolved.image.image_size == 64  # the backbone's: the file is not shipped weights of known size
    cfg.image.pretrained = "cxr"
    with pytest.raises(ValueError, match="set at most one of them"):
        cfg.validate()


def test_what_the_user_set_is_kept_and_resolving_never_changes_the_config():
    cfg = Config(fusion="stacked", image=ImageConfig(image_size=48))
    before = copy.deepcopy(cfg)
    resolved = cfg.resolved()
    assert cfg == before and resolved is not cfg and resolved.image is not cfg.image
    assert resolved.image.image_size == 48  # set by the user: kept whatever the weights
    assert resolved.resolved() == resolved  # resolving again changes nothing
    with pytest.raises(ValueError, match=r"densenet169.*no shipped weights"):
        Config(fusion="stacked", image=ImageConfig(backbone="densenet169"))


def test_epochs_follow_the_data_and_the_steps_each_time_a_model_is_fitted():
    """train.epochs None is derived when training starts, never written back: a changed
    step count or batch size is followed by the next fit."""
    parts = load_dataset(None, synthetic_n=90, modalities=("tabular",), seed=0).split(seed=0)
    cfg = Config(modalities="tabular")
    cfg.train.steps, cfg.train.min_epochs, cfg.train.device = 4, 1, "cpu"
    n = len(parts["train"])
    clf = FusionClassifier(cfg).fit(parts["train"], parts["val"])
    assert cfg.train.epochs is None and clf.config_.train.epochs is None
    assert clf.history_["epochs"] == cfg.epochs_for(n) == 2  # 4 steps of 32 rows: 2 epochs of 63 rows
    cfg.train.batch_size = 16
    assert clf.set_params(config=cfg).fit(parts["train"], parts["val"]).history_["epochs"] == 1


def test_a_model_folder_saves_the_resolved_values_and_rebuilds_the_same_network(tmp_path, small_tuning):
    """What was derived (the shipped weights of a frozen strategy, their 128 px) is what
    config.json holds, so the folder does not depend on later defaults."""
    parts = load_dataset(None, image_size=128, synthetic_n=60, modalities=("image",), seed=1).split(seed=0)
    cfg = Config(modalities="image", fusion="gbm", tuning=small_tuning)
    clf = FusionClassifier(cfg).fit(parts["train"], parts["val"])
    assert cfg.image.pretrained is None and cfg.image.image_size is None
    saved = json.loads((clf.save(tmp_path / "m") / "config.json").read_text())["config"]
    assert (saved["image"]["pretrained"], saved["image"]["image_size"]) == ("cxr", 128)
    assert saved["tuning"] == json.loads(json.dumps(small_tuning.__dict__))
    again = FusionClassifier.load(tmp_path / "m")
    assert again.config_ == clf.config_ and again.config_.tuning == small_tuning
    np.testing.assert_allclose(again.predict_dataset(parts["test"]), clf.predict_dataset(parts["test"]), atol=1e-6)


def test_a_folder_saved_before_the_tuning_settings_existed_loads_unchanged(tiny_runs, tmp_path, rehash):
    """``data/old_format/config_before_issue22.json`` is the config.json of a tabular network saved
    by the tree before this change (no tuning section); it loads with the defaults it
    was trained with, and the model predicts exactly as before."""
    old = json.loads((FIXTURES / "config_before_issue22.json").read_text())
    assert "tuning" not in old["config"]
    # trained with the class weights that were the default before train.balance existed
    config = Config.from_dict(with_earlier_settings(old["config"]))
    assert config.train.balance == "weights"
    assert config.resolved() == config and config.tuning == TuningConfig()
    folder = Path(shutil.copytree(tiny_runs["tabular"], tmp_path / "model"))
    shutil.copyfile(FIXTURES / "config_before_issue22.json", folder / "config.json")
    rehash(folder)
    ds = load_dataset(None, synthetic_n=30, modalities=("tabular",), seed=7)
    loaded = FusionClassifier.load(folder)
    assert loaded.config_ == config
    np.testing.assert_array_equal(
        loaded.predict_dataset(ds), FusionClassifier.load(tiny_runs["tabular"]).predict_dataset(ds)
    )


# --------------------------------------------------------- one declaration each
def test_every_setting_is_declared_with_what_it_does():
    names = [s.name for s in settings()]
    assert len(names) == len(set(names)) and "train.lr" in names and "tuning.xgb_rounds" in names
    assert all(s.help and not s.help.endswith(".") for s in settings())
    flags = [s.flag for s in settings() if s.flag]
    assert len(flags) == len(set(flags))


def test_a_setting_with_choices_is_checked_against_its_declaration():
    cfg = Config()
    cfg.train.device = "tpu"
    with pytest.raises(ValueError, match=r"^train\.device must be one of \('auto', 'cpu', 'cuda'\); got 'tpu'"):
        cfg.validate()
    cfg = Config()
    cfg.image.pretrained = "xray"
    with pytest.raises(ValueError, match=r"image\.pretrained must be one of \('imagenet', 'cxr'\) or unset"):
        cfg.validate()


@pytest.mark.parametrize(
    "section, key, value, match",
    [
        ("tuning", "inner_folds", 1, r"tuning\.inner_folds must be a whole number >= 2"),
        ("tuning", "xgb_rounds", (), r"tuning\.xgb_rounds must list at least one value"),
        ("tuning", "xgb_subsample", (0.5, 1.5), r"tuning\.xgb_subsample\[1\] must be a finite number in \(0, 1\]"),
        ("tuning", "linear_c", (0.0,), r"tuning\.linear_c\[0\] must be a finite number > 0"),
    ],
)
def test_the_tuning_grids_are_checked_like_every_setting(section, key, value, match):
    cfg = Config()
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(ValueError, match=match):
        cfg.validate()
    data = Config().to_dict()
    data[section][key] = list(value) if isinstance(value, tuple) else value
    with pytest.raises(ValueError, match=rf"^config\.{match}"):
        Config.from_dict(data)


def test_the_tuning_defaults_are_the_grids_the_backends_used_to_hold():
    """The values of the former module globals (members.XGB_GRID, XGB_ROUNDS, LINEAR_C,
    INNER_FOLDS, auto.AUTO_FOLDS), in the same order: the same candidates, so training
    is bit-identical."""
    from fusion.backends.members import xgb_candidates

    t = TuningConfig()
    assert (t.inner_folds, t.auto_folds, t.linear_c, t.xgb_rounds) == (
        4,
        3,
        (0.01, 0.03, 0.1, 0.3, 1.0),
        (25, 50, 100, 200),
    )
    assert t.xgb_grid == {
        "max_depth": (2, 4),
        "learning_rate": (0.05, 0.15),
        "min_child_weight": (1.0, 4.0),
        "subsample": (0.8,),
        "colsample_bytree": (0.8,),
    }
    assert xgb_candidates(t.xgb_grid)[:2] == [
        {"max_depth": 2, "learning_rate": 0.05, "min_child_weight": 1.0, "subsample": 0.8, "colsample_bytree": 0.8},
        {"max_depth": 2, "learning_rate": 0.05, "min_child_weight": 4.0, "subsample": 0.8, "colsample_bytree": 0.8},
    ]


def _example(s):
    """A value for the flag of setting ``s`` other than its default, as typed and as the
    configuration holds it."""
    if isinstance(s.default, bool):
        return [], not s.default
    if s.hint == (bool | None):  # --flag / --no-flag; unset follows the data
        return [], True
    if s.choices:
        value = next(c for c in s.choices if c != s.default)
        return [str(value)], value  # typed as text (image.channels' choices are numbers)
    if s.name == "modalities":
        return ["tabular"], ("tabular",)
    kind = s.hint if s.hint in (int, float, str) else next(a for a in s.hint.__args__ if a is not type(None))
    value = {int: (s.default or 47) + 1, float: (s.default or 1.0) / 4, str: "elsewhere"}[kind]
    return [str(value)], value


@pytest.mark.parametrize("s", [s for s in settings() if s.flag], ids=lambda s: s.flag)
def test_each_flag_sets_its_setting_and_errors_name_it(s):
    """Declared once, a setting's flag reaches the parser, config_from_args and the map
    that errors use to name flags."""
    from fusion.cli import FIELD_FLAGS, config_from_args
    from fusion.train import build_parser

    typed, expected = _example(s)
    extra = ["--modalities", "tabular"] if s.name == "model" else []
    cfg = config_from_args(build_parser().parse_args([s.flag, *typed, *extra]))
    assert cfg.get(s.name) == expected
    default = config_from_args(build_parser().parse_args([]))
    assert default == Config() and default.get(s.name) == s.default
    assert FIELD_FLAGS[s.name] == s.flag


def test_the_cli_default_config_is_the_library_s():
    """No flag given, the command trains exactly what Config() describes."""
    from fusion.cli import config_from_args
    from fusion.train import build_parser

    assert config_from_args(build_parser().parse_args([])).to_dict() == Config().to_dict()


def test_mirrored_and_turned_images_train_three_times_as_many_epochs_unless_epochs_are_set():
    """Eight views of each image take longer to learn: the derived epochs triple with
    image.flip_rotate on an image model, not on a record-only one, not when set."""
    cfg = Config()
    assert cfg.epochs_for(5363) == 10  # HAM10000's training part: 168 steps an epoch, at least 10
    cfg.image.flip_rotate = True
    assert cfg.epochs_for(5363) == 30 and cfg.epochs_for(100) == 3 * Config().epochs_for(100)
    assert Config(modalities=("tabular",), image=ImageConfig(flip_rotate=True)).epochs_for(5363) == 10
    cfg.train.epochs = 7
    assert cfg.epochs_for(5363) == 7
