"""Contract tests: every backbone, every modality subset, one shared interface."""

import numpy as np
import pytest
import torch

from fusion.config import Config, parse_modalities
from fusion.nets.backbones import (
    CustomCNN,
    ImageBranch,
    adapt_state_dict,
    create_backbone,
    freeze_blocks,
    imagenet_weights_path,
    load_backbone_weights,
)
from fusion.nets.joint import FusionModel, inference_copy
from fusion.nets.registry import BACKBONES
from fusion.nets.tabular import TabularMLP

SUBSETS = [("image",), ("tabular",), ("image", "tabular")]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_contract(name):
    backbone = create_backbone(name)
    size = 64
    with torch.no_grad():
        out = backbone.eval().forward_features(torch.randn(2, 1, size, size))
    assert out.shape == (2, backbone.output_dim)
    assert torch.isfinite(out).all()
    assert len(backbone.blocks()) == backbone.n_blocks
    assert backbone.default_size >= 16


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(ValueError, match=r"known backbones: \['custom', 'densenet169'\]"):
        create_backbone("resnet9000")


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("modalities", SUBSETS)
def test_fusion_model_contract(name, modalities):
    branches = {}
    if "image" in modalities:
        branches["image"] = ImageBranch(create_backbone(name))
    if "tabular" in modalities:
        branches["tabular"] = TabularMLP(7)
    model = FusionModel(branches, n_classes=3, modality_dropout=0.3)
    expected_in = sum(b.output_dim for b in branches.values()) + (len(branches) if len(branches) > 1 else 0)
    assert model.head[1].in_features == expected_in  # sized from the branches, not hard-coded
    inputs = {
        "image": torch.rand(4, 1, 48, 48) if "image" in modalities else None,
        "tabular": torch.randn(4, 7) if "tabular" in modalities else None,
    }
    model.train()
    logits, aux = model.forward_with_aux(inputs)
    assert logits.shape == (4, 3)
    assert set(aux) == (set(modalities) if len(modalities) > 1 else set())
    logits.sum().backward()
    model.eval()
    with torch.no_grad():
        assert model(inputs).shape == (4, 3)


def test_missing_modality_is_answered_by_a_fused_model():
    model = FusionModel({"image": ImageBranch(create_backbone("custom")), "tabular": TabularMLP(5)}, n_classes=3).eval()
    with torch.no_grad():
        only_tab = model({"image": None, "tabular": torch.randn(2, 5)})
        only_img = model({"image": torch.rand(2, 1, 32, 32), "tabular": None})
    assert only_tab.shape == only_img.shape == (2, 3)
    with pytest.raises(ValueError, match="at least one"):
        model({"image": None, "tabular": None})


def test_single_modality_model_rejects_the_other():
    model = FusionModel({"tabular": TabularMLP(5)}, n_classes=2).eval()
    with pytest.raises(ValueError, match=r"trained on \['tabular'\]"):
        model({"image": torch.rand(1, 1, 32, 32), "tabular": None})


@pytest.mark.parametrize(
    "value, expected",
    [("image,tabular", ("image", "tabular")), ("tabular,image", ("image", "tabular")), (["image"], ("image",))],
)
def test_parse_modalities(value, expected):
    assert parse_modalities(value) == expected


@pytest.mark.parametrize("value", ["", "image,image", "text", "image,audio"])
def test_parse_modalities_rejects(value):
    with pytest.raises(ValueError, match="modalities must be"):
        parse_modalities(value)


def test_freeze_blocks_fixes_parameters_and_batchnorm():
    backbone = create_backbone("custom")
    freeze_blocks(backbone, 2)
    blocks = backbone.blocks()
    assert not any(p.requires_grad for b in blocks[:2] for p in b.parameters())
    assert all(p.requires_grad for b in blocks[2:] for p in b.parameters())
    ImageBranch(backbone).train()  # train() must keep frozen batch norms in eval mode
    assert not blocks[0][1].training and blocks[2][1].training
    with pytest.raises(ValueError, match="between 0 and 4"):
        freeze_blocks(create_backbone("custom"), 5)


def test_densenet_freeze_counts_dense_blocks():
    backbone = create_backbone("densenet169")
    freeze_blocks(backbone, 3)
    assert not any(p.requires_grad for p in backbone.features.denseblock3.parameters())
    assert all(p.requires_grad for p in backbone.features.denseblock4.parameters())


def test_rgb_torchvision_state_dict_loads_into_grayscale_densenet(tmp_path):
    from torchvision.models import densenet169

    reference = densenet169(weights=None)
    state = reference.state_dict()
    path = tmp_path / "densenet169_rgb.pth"
    torch.save(state, path)
    backbone = create_backbone("densenet169")
    load_backbone_weights(backbone, path)
    expected = state["features.conv0.weight"].sum(dim=1, keepdim=True)
    assert torch.equal(backbone.features.conv0.weight, expected)
    assert torch.equal(
        backbone.features.denseblock4.denselayer32.conv2.weight, state["features.denseblock4.denselayer32.conv2.weight"]
    )


def test_old_style_densenet_keys_are_renamed():
    backbone = create_backbone("densenet169")
    old = {"features.denseblock1.denselayer1.norm.1.weight": torch.ones(64)}
    assert "features.denseblock1.denselayer1.norm1.weight" in adapt_state_dict(old, backbone)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "custom.pth"
    torch.save(CustomCNN().state_dict(), path)
    with pytest.raises(ValueError, match="does not fit backbone DenseNet169"):
        load_backbone_weights(create_backbone("densenet169"), path)
    with pytest.raises(FileNotFoundError):
        load_backbone_weights(create_backbone("custom"), tmp_path / "nope.pth")


def test_imagenet_weights_absent_gives_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"never downloads.*image.weights"):
        imagenet_weights_path("densenet169")


def test_config_round_trip_and_errors():
    cfg = Config(modalities="tabular", model="xgboost")
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config().image.image_size is None and Config().resolved().image.image_size == 64
    with pytest.raises(ValueError, match="xgboost' is tabular only"):
        Config(model="xgboost")
    with pytest.raises(ValueError, match="unknown key"):
        Config.from_dict({**cfg.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="at most one of"):
        Config.from_dict(
            {**cfg.to_dict(), "model": "fusion", "image": {**cfg.to_dict()["image"], "weights": "a", "init_from": "b"}}
        )


def test_device_and_precision_resolution():
    from fusion.training.hardware import resolve_device, resolve_precision

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"train\.device: .cuda. was asked for but no CUDA GPU is available"):
            resolve_device("cuda")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")


def _trained_looking(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics, as training would."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_inference_copy_predicts_the_same_and_leaves_the_model_alone(name):
    torch.manual_seed(0)
    model = _trained_looking(
        FusionModel({"image": ImageBranch(create_backbone(name)), "tabular": TabularMLP(6)}, n_classes=3)
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = {"image": torch.rand(3, 1, 40, 40), "tabular": torch.randn(3, 6)}
    with torch.no_grad():
        expected = torch.softmax(model(inputs), 1)
        fp32 = inference_copy(model, "fp32")
        np.testing.assert_allclose(torch.softmax(fp32(inputs), 1), expected, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected_bf16 = torch.softmax(model(inputs).float(), 1)
        bf16 = inference_copy(model, "bf16")
        got_bf16 = torch.softmax(bf16(inputs), 1)  # no autocast: the copy holds its precision
    assert got_bf16.dtype == torch.float32
    np.testing.assert_allclose(got_bf16, expected_bf16, atol=2e-2)

    # BatchNorm right after a convolution is folded away: none in the custom CNN, the
    # stem's in DenseNet (its other norms precede their convolutions and stay).
    def norms(m):
        return sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())

    assert norms(fp32) == norms(model) - (4 if name == "custom" else 1)
    assert all(not p.requires_grad for p in bf16.parameters()) and not bf16.training
    backbone = bf16.branches["image"].backbone
    assert {m.weight.dtype for m in backbone.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))} == {
        torch.bfloat16
    }
    assert {m.running_var.dtype for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)} <= {torch.float32}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert norms(model) > 0 and all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        inference_copy(model, "fp16")


@pytest.mark.parametrize(
    "section, key, value, error, match",
    [
        ("train", "lr", "0.1", TypeError, r"train\.lr must be a number; got '0\.1'"),
        ("train", "lr", float("inf"), ValueError, r"train\.lr must be a finite number > 0"),
        ("train", "epochs", 2.5, TypeError, r"train\.epochs must be a whole number or null"),
        ("train", "seed", -1, ValueError, r"train\.seed must be a whole number between 0"),
        ("train", "xgb_tune", "yes", TypeError, r"train\.xgb_tune must be true or false"),
        ("image", "image_size", 100_000, ValueError, r"image\.image_size must be a whole number between 16 and 1024"),
        ("image", "image_size", 8, ValueError, r"image\.image_size must be a whole number between 16 and 1024"),
        ("image", "freeze", -1, ValueError, r"image\.freeze must be a whole number >= 0"),
        ("tabular", "hidden", (10**9,), ValueError, r"tabular\.hidden\[0\] must be a whole number between 1 and 4096"),
        ("tabular", "hidden", (), ValueError, r"tabular\.hidden must list 1 to 8 layer widths"),
        ("tabular", "hidden", "64", TypeError, r"tabular\.hidden must be a list of whole numbers"),
        ("tabular", "dropout", 1.0, ValueError, r"tabular\.dropout must be a finite number in \[0, 1\)"),
        ("head", "hidden", 0, ValueError, r"head\.hidden must be a whole number between 1 and 4096"),
        ("head", "aux_weight", -1.0, ValueError, r"head\.aux_weight must be a finite number >= 0"),
        ("data", "val_fraction", 0.9, ValueError, r"data\.val_fraction \+ data\.test_fraction must be < 1"),
        ("calibration", "healthy", ["normal", 3], TypeError, r"calibration\.healthy must be a list of strings"),
    ],
)
def test_config_checks_the_type_and_range_of_every_field(section, key, value, error, match):
    """In Python a wrong type is a TypeError; read from a file (from_dict) every
    problem is a ValueError naming the key where it was read."""
    cfg = Config()
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(error, match=match):
        cfg.validate()
    data = Config().to_dict()
    data[section][key] = list(value) if isinstance(value, tuple) else value
    with pytest.raises(ValueError, match=rf"^config\.{match}"):
        Config.from_dict(data)
