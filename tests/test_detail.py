"""The detail limit of the image branch (``image.detail``, ``[image] detail``): from the
schema or the flag to the network, the saved folder, the frozen embedders, the card and
the ONNX graph.

The known answer: a one-pixel checkerboard holds nothing but fine detail, so a branch
that reads no detail finer than half the side sees it as the flat image of its mean.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion import Config, FusionClassifier, load_dataset
from fusion.cli import config_from_args, in_flags
from fusion.config import ImageConfig
from fusion.errors import ConfigError, SchemaError
from fusion.nets.backbones import ImageBranch, create_backbone
from fusion.schema import builtin_schemas, load_schema, parse_schema
from fusion.train import build_parser
from fusion.train import main as train

SIZE = 32  # the conftest cohort's side
DETAIL = 16


def _checkerboard(side: int) -> torch.Tensor:
    """(1, 1, side, side): 0 and 1 alternating pixel by pixel; its mean is 0.5."""
    i = torch.arange(side)
    return ((i[:, None] + i[None, :]) % 2).float()[None, None]


def _branch(detail: int | None) -> ImageBranch:
    torch.manual_seed(0)
    return ImageBranch(create_backbone("custom"), 0.5, 0.25, detail).eval()


# ------------------------------------------------------------------ the network
@torch.no_grad()
def test_the_branch_sees_a_checkerboard_as_its_flat_mean_only_with_a_detail_limit():
    board, flat = _checkerboard(64), torch.full((1, 1, 64, 64), 0.5)
    limited = _branch(32)
    torch.testing.assert_close(limited(board), limited(flat))
    assert torch.equal(limited.low_pass(board), flat)
    plain = _branch(None)
    assert not torch.allclose(plain(board), plain(flat))
    torch.testing.assert_close(plain(board), _branch(64)(board))  # the input's own side: a no-op
    torch.testing.assert_close(plain(board), _branch(0)(board))  # 0 in a configuration: none


def test_the_limit_adds_no_weights_so_state_dicts_are_unchanged():
    assert _branch(32).state_dict().keys() == _branch(None).state_dict().keys()
    _branch(32).load_state_dict(_branch(None).state_dict())


@torch.no_grad()
def test_a_detail_limit_keeps_what_is_coarser_than_it():
    """Blocks of 2 x 2 equal pixels hold no detail finer than 32 px of 64: average
    pooling keeps them, and bilinear interpolation back to 64 px is only a slight blur."""
    coarse = torch.rand(1, 1, 32, 32).repeat_interleave(2, -1).repeat_interleave(2, -2)
    out = _branch(32).low_pass(coarse)
    assert out.shape == coarse.shape and (out - coarse).abs().mean() < 0.2


# ----------------------------------------------------------- the configuration
@pytest.mark.parametrize(
    ("detail", "size", "message"),
    [
        (4, None, r"image\.detail must be 0 \(none\) or a whole number of at least 8; got 4"),
        (-1, None, r"image\.detail must be a whole number >= 0"),
        (48, 64, r"image\.detail must divide image\.image_size 64: 8, 16, 32 or 64 \(64: no limit\), or 0"),
        (32, 48, r"must divide image\.image_size 48: 8, 12, 16, 24 or 48 \(48: no limit\), or 0 \(none\); got 32"),
    ],
)
def test_a_detail_the_branch_cannot_honour_is_refused_naming_the_field(detail, size, message):
    with pytest.raises(ConfigError, match=message) as err:
        Config(image=ImageConfig(detail=detail, image_size=size)).resolved()
    assert err.value.field == "image.detail" and "--detail" in in_flags(err.value)


def test_the_derived_image_size_is_checked_and_a_detail_as_large_as_the_side_is_no_limit():
    cfg = Config(image=ImageConfig(detail=24))  # the size is not known yet: accepted
    with pytest.raises(ConfigError, match=r"must divide image\.image_size 64"):
        cfg.resolved()  # the custom backbone's 64 px
    assert Config(image=ImageConfig(detail=64)).resolved().image.detail == 64
    assert Config(image=ImageConfig(detail=0)).resolved(1, False, 32).image.detail == 0  # set: wins
    with pytest.raises(TypeError, match=r"image\.detail must be"):
        Config(image=ImageConfig(detail="32"))


def test_detail_follows_the_data_when_unset():
    """Unset, the schema's value (checked against the size, saying where it came from);
    0 (none) once the data are known and say nothing, as flip_rotate is false."""
    assert Config().resolved().image.detail is None  # the data are not known yet
    assert Config().resolved(1).image.detail == 0
    assert Config().resolved(1, False, 32).image.detail == 32
    assert Config(image=ImageConfig(detail=8)).resolved(1, False, 32).image.detail == 8
    small = Config(image=ImageConfig(image_size=16))
    with pytest.raises(ConfigError, match=r"image\.detail \(the schema's \[image\] detail\) must divide .* 16"):
        small.resolved(1, False, 32)
    tabular = Config(modalities=("tabular",), image=ImageConfig(image_size=16))
    assert tabular.resolved(1, False, 32).image.detail == 32  # no image: nothing to divide


def test_a_model_started_from_shipped_weights_reads_with_their_detail(monkeypatch):
    """Weights that learnt from films limited in detail (``ShippedWeights.detail``): a
    model that starts from them (or a frozen-backbone strategy, which defaults to them)
    reads its films the same way, unless the schema or the setting says otherwise. The
    shipped cxr weights read all the detail."""
    import dataclasses

    import fusion.config as config_module
    from fusion.nets.registry import backbone_spec

    assert Config(image=ImageConfig(pretrained="cxr")).resolved(1).image.detail == 0
    spec = backbone_spec("custom")
    limited = dataclasses.replace(spec, shipped={"cxr": dataclasses.replace(spec.shipped["cxr"], detail=32)})
    monkeypatch.setattr(config_module, "backbone_spec", lambda name: limited)
    assert Config(image=ImageConfig(pretrained="cxr")).resolved(1).image.detail == 32
    assert Config(fusion="stacked").resolved(1).image.detail == 32
    assert Config(image=ImageConfig(pretrained="cxr", detail=0)).resolved(1).image.detail == 0
    assert Config(image=ImageConfig(pretrained="cxr")).resolved(1, False, 16).image.detail == 16
    assert Config(modalities=("tabular",), fusion="stacked").resolved(1).image.detail == 0
    with pytest.raises(ConfigError, match=r"image\.detail \(the shipped weights' detail\) must divide .* 48"):
        Config(image=ImageConfig(pretrained="cxr", image_size=48)).resolved(1)


def test_the_train_command_reads_detail_and_zero_as_none():
    parser = build_parser()
    assert config_from_args(parser.parse_args([])).image.detail is None
    assert config_from_args(parser.parse_args(["--detail", "32"])).image.detail == 32
    assert config_from_args(parser.parse_args(["--detail", "0"])).image.detail == 0
    with pytest.raises(ConfigError, match="at least 8"):
        config_from_args(parser.parse_args(["--detail", "5"]))


# ------------------------------------------------------------------- the schema
NPZ = '[label]\ncolumn = "y"\nclasses = { a = ["0"], b = ["1"] }\n[image]\n'


def test_the_schema_declares_detail_and_refuses_what_is_not_a_side():
    assert parse_schema(NPZ + "detail = 32\n").image_detail == 32  # no image column needed to say it
    assert parse_schema(NPZ + "channels = 1\n").image_detail is None
    for bad in ("4", "0", '"32"', "32.0", "true"):
        with pytest.raises(SchemaError, match=r"\[image\] 'detail' must be a whole number of at least 8") as err:
            parse_schema(NPZ + f"detail = {bad}\n")
        assert err.value.field == "[image] detail"


def test_only_the_kermany_schema_limits_detail():
    declared = {name: load_schema(name).image_detail for name in builtin_schemas()}
    assert declared.pop("kermany_cxr") == 32 and set(declared.values()) == {None}


# ------------------------------------------------------------- trained models
@pytest.fixture(scope="module")
def detail_folder(tmp_path_factory, cohort):
    """The conftest cohort as a folder whose schema declares ``detail = 16``."""
    from PIL import Image

    table, images = cohort
    folder = tmp_path_factory.mktemp("detail") / "cohort"
    (folder / "images").mkdir(parents=True)
    for name, pixels in zip(table["image"], images, strict=True):
        Image.fromarray(pixels).save(folder / "images" / name)
    table.to_csv(folder / "metadata.csv", index=False)
    text = load_schema("synthetic").text
    (folder / "schema.toml").write_text(text.replace('folder = "images"\n', f'folder = "images"\ndetail = {DETAIL}\n'))
    return folder


@pytest.fixture(scope="module")
def detail_run(detail_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("detail_run") / "run"
    flags = ["--modalities", "image", "--image-size", str(SIZE), "--epochs", "1", "--quiet"]
    assert train(["--data", str(detail_folder), *flags, "--out", str(out)]) == 0
    return out


def test_the_schema_detail_reaches_the_train_commands_model_folder_and_card(detail_run):
    saved = json.loads((detail_run / "config.json").read_text())["config"]["image"]
    assert saved["detail"] == DETAIL
    clf = FusionClassifier.load(detail_run)
    assert clf.config_.image.detail == DETAIL and clf.network_.branches["image"].detail == DETAIL
    assert f"Image detail: limited to {DETAIL} x {DETAIL} px" in (detail_run / "MODEL_CARD.md").read_text()


def test_the_flag_overrides_the_schema(detail_folder, tmp_path):
    from fusion.evaluation.card import _detail_lines
    from fusion.training.run import resolved_for_data

    out = tmp_path / "run"
    flags = ["--modalities", "image", "--image-size", str(SIZE), "--epochs", "1", "--quiet"]
    assert train(["--data", str(detail_folder), *flags, "--detail", "8", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["image"]["detail"] == 8
    none = config_from_args(build_parser().parse_args([*flags[:-1], "--detail", "0"]))
    assert resolved_for_data(none, detail_folder, None).image.detail == 0  # what that run would train with
    for detail in (0, SIZE):  # none, or no finer detail than the images hold: the card says nothing
        metrics = {"backbone": "custom", "config": {"image": {"detail": detail, "image_size": SIZE}}}
        assert _detail_lines(metrics, "films") == []


def test_a_schema_detail_that_does_not_divide_the_size_is_refused_before_images_load(detail_folder, capsys):
    assert train(["--data", str(detail_folder), "--image-size", "24", "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "image.detail (the schema's [image] detail) must divide image.image_size 24" in err and "--detail" in err


def test_fit_follows_the_schema_and_the_folder_round_trips(detail_folder, tmp_path):
    ds = load_dataset(detail_folder, image_size=SIZE)
    parts = ds.split(seed=0)
    cfg = Config(modalities=("image", "tabular"), image=ImageConfig(image_size=SIZE))
    cfg.train.epochs = 1
    clf = FusionClassifier(cfg).fit(parts["train"], parts["val"])
    assert clf.config_.image.detail == DETAIL and cfg.image.detail is None  # the request is left alone
    again = FusionClassifier.load(clf.save(tmp_path / "model"))
    assert again.config_.image.detail == DETAIL and again.network_.branches["image"].detail == DETAIL
    np.testing.assert_allclose(again.predict_dataset(parts["test"]), clf.predict_dataset(parts["test"]), atol=1e-6)
    record = parts["test"].records.iloc[0].to_dict()
    explanation = again.explain(record, parts["test"].images[0], n_steps=4)
    assert explanation.image_attribution.shape == (SIZE, SIZE)
    assert np.isfinite(explanation.image_attribution).all()
    assert abs(sum(explanation.modality_share.values()) - 1) < 1e-6


def test_a_folder_saved_before_the_setting_loads_with_all_detail(detail_run, tmp_path, rehash):
    import shutil

    from fusion.model_folder import CONFIG

    folder = shutil.copytree(detail_run, tmp_path / "old")
    meta = json.loads((folder / CONFIG).read_text())
    del meta["config"]["image"]["detail"]
    (folder / CONFIG).write_text(json.dumps(meta))
    rehash(folder)
    clf = FusionClassifier.load(folder)
    assert clf.config_.image.detail is None and clf.network_.branches["image"].detail is None
    old = Path(__file__).parent / "data" / "old_format" / "network"  # a tabular network
    assert FusionClassifier.load(old).config_.image.detail is None


def test_the_frozen_embedders_read_the_same_limited_image(detail_folder, small_tuning, tmp_path):
    """stacked (and gbm, through the same embedder) limit what the frozen backbone
    reads as the joint network does, and the folder keeps it."""
    ds = load_dataset(detail_folder, image_size=SIZE)
    cfg = Config(modalities=("image",), fusion="stacked", tuning=small_tuning, image=ImageConfig(image_size=SIZE))
    clf = FusionClassifier(cfg).fit(ds)
    assert clf.backend_.embedder_.branch_.detail == DETAIL
    again = FusionClassifier.load(clf.save(tmp_path / "stacked"))
    assert again.backend_.embedder_.branch_.detail == DETAIL
    np.testing.assert_allclose(again.predict_dataset(ds), clf.predict_dataset(ds), atol=1e-6)
