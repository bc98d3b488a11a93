"""Fusion heads: each head's contract (shape, presence mask, gradients), its fallbacks
when a modality is missing, and the whole path a head's model takes (save and load,
ONNX, modality shares); unknown heads refused with the known ones listed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fusion import FusionClassifier, synthetic
from fusion.config import Config, HeadConfig
from fusion.errors import ConfigError
from fusion.explain import explain_network
from fusion.model_folder import with_earlier_settings
from fusion.nets.backbones import ImageBranch, create_backbone
from fusion.nets.heads import HEADS, create_head, head_spec
from fusion.nets.heads.concat import ConcatHead
from fusion.nets.joint import FusionModel, inference_copy
from fusion.nets.tabular import TabularMLP

KINDS = sorted(HEADS)
N_FEATURES = 7


def network(kind: str, modalities=("image", "tabular"), seed: int = 0) -> FusionModel:
    torch.manual_seed(seed)
    branches = {}
    if "image" in modalities:
        branches["image"] = ImageBranch(create_backbone("custom"))
    if "tabular" in modalities:
        branches["tabular"] = TabularMLP(N_FEATURES)
    return FusionModel(branches, n_classes=3, hidden=16, modality_dropout=0.3, head_kind=kind)


def inputs(n: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 1, 32, 32, generator=g), "tabular": torch.randn(n, N_FEATURES, generator=g)}


def trained(model: FusionModel) -> FusionModel:
    """``model`` with every weight moved off its initial value (FiLM's scale starts at
    zero, where the record could not change the image features), in eval mode."""
    with torch.no_grad():
        for p in model.fuse.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("modalities", [("image",), ("tabular",), ("image", "tabular")])
def test_every_head_answers_every_modality_subset(kind, modalities):
    model = network(kind, modalities)
    x = {m: v for m, v in inputs().items() if m in modalities}
    model.train()
    logits, aux = model.forward_with_aux(x)
    assert logits.shape == (4, 3)
    assert set(aux) == (set(modalities) if len(modalities) > 1 else set())
    assert model.head[1].in_features == model.fuse.output_dim  # the classifier is sized from the head
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (4, 3)
        if len(modalities) > 1:
            assert model({"image": x["image"], "tabular": None}).shape == (4, 3)
            assert model({"image": None, "tabular": x["tabular"]}).shape == (4, 3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("modalities", [("image",), ("tabular",)])
def test_a_one_modality_network_is_the_same_whatever_the_head(kind, modalities):
    """Nothing to join: every kind builds the concat head, same weights, same outputs."""
    model, reference = network(kind, modalities), network("concat", modalities)
    assert isinstance(model.fuse, ConcatHead)
    assert model.state_dict().keys() == reference.state_dict().keys()
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("missing", [0, 1])
def test_a_modality_of_presence_zero_does_not_change_the_output(kind, missing):
    model = trained(network(kind))
    x, other = inputs(seed=1), inputs(seed=2)
    name = model.modalities[missing]
    presence = torch.ones(4, 2)
    presence[:, missing] = 0.0
    changed = {**x, name: other[name]}
    with torch.no_grad():
        out = model(x, presence=presence)
        assert torch.equal(out, model(changed, presence=presence))
        # A missing input (None) is presence 0, and a presence of ones is everything given.
        assert torch.equal(out, model({**x, name: None}))
        assert torch.allclose(model(x, presence=torch.ones(4, 2)), model(x), atol=1e-6)
        # The modality matters when present (the test is not vacuous).
        assert not torch.allclose(model(x), model(changed))


@pytest.mark.parametrize("kind", KINDS)
def test_a_row_missing_a_modality_answers_as_it_would_alone(kind):
    """Presence is per row: one row's missing record does not touch its neighbours."""
    model = trained(network(kind))
    x = inputs()
    presence = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    with torch.no_grad():
        mixed = model(x, presence=presence)
        for i in range(4):
            row = {m: v[i : i + 1] for m, v in x.items()}
            assert torch.allclose(mixed[i : i + 1], model(row, presence=presence[i : i + 1]), atol=1e-5)


def test_film_without_the_record_is_its_image_path():
    model = trained(network("film"))
    x = inputs()
    with torch.no_grad():
        image_path = model.head(model.branches["image"](x["image"]))
        assert torch.equal(model({"image": x["image"], "tabular": None}), image_path)
        assert not torch.allclose(model(x), image_path)  # with the record, the record counts


def test_film_without_the_image_reads_the_records_shift():
    model = trained(network("film"))
    x = inputs()
    with torch.no_grad():
        record_path = model.head(model.fuse.shift(model.branches["tabular"](x["tabular"])))
        assert torch.equal(model({"image": None, "tabular": x["tabular"]}), record_path)


def test_film_starts_as_an_image_model_plus_a_record_term():
    model = network("film").eval()
    x = inputs()
    with torch.no_grad():
        z = model.branches["image"](x["image"])
        shift = model.fuse.shift(model.branches["tabular"](x["tabular"]))
        assert torch.allclose(model(x), model.head(z + shift), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_both_branches_and_the_head(kind):
    model = network(kind).train()
    logits, _ = model.forward_with_aux(inputs(8))
    logits.sum().backward()  # the fused logits alone, without the branches' own losses
    for name in ("image", "tabular"):
        grads = [p.grad for p in model.branches[name].parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name
    assert all(p.grad is not None for p in model.fuse.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_the_inference_copy_predicts_what_the_network_does(kind):
    model = trained(network(kind))
    x = inputs()
    presence = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    frozen = inference_copy(model)
    with torch.no_grad():
        assert torch.allclose(frozen(x), model(x), atol=1e-5)
        assert torch.allclose(frozen(x, presence=presence), model(x, presence=presence), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_modality_shares_sum_to_one_for_every_head(kind):
    model = trained(network(kind))
    x = {m: v[:1] for m, v in inputs().items()}
    out = explain_network(model, x, None, image_mean=0.5, n_steps=8)
    assert sum(out.modality_share.values()) == pytest.approx(1.0)
    assert all(0 <= s <= 1 for s in out.modality_share.values())
    assert out.image_attribution.shape == (32, 32) and out.tabular_attribution.shape == (N_FEATURES,)
    alone = explain_network(model, {"image": x["image"], "tabular": None}, None, image_mean=0.5, n_steps=8)
    assert alone.modality_share == {"image": 1.0, "tabular": 0.0}


def test_a_record_film_ignores_gets_share_zero():
    """Known answer: with its scale and shift at zero, FiLM passes the image features
    through whatever the record says, so the record's Shapley value is exactly 0."""
    model = trained(network("film"))
    with torch.no_grad():
        for p in model.fuse.parameters():
            p.zero_()
    x = {m: v[:1] for m, v in inputs().items()}
    out = explain_network(model, x, None, image_mean=0.5, n_steps=8)
    assert out.modality_share == {"image": 1.0, "tabular": 0.0}


def test_parameter_counts_stay_small_beside_the_image_cnn():
    cnn = sum(p.numel() for p in network("concat").branches.parameters())
    for kind in KINDS:
        model = network(kind)
        head = sum(p.numel() for p in [*model.fuse.parameters(), *model.head.parameters()])
        assert head < cnn / 2, (kind, head, cnn)


# ------------------------------------------------------------------ the name
def test_an_unknown_head_is_refused_with_the_known_ones_listed():
    known = r"\['attention', 'concat', 'film'\]"
    with pytest.raises(ValueError, match=rf"unknown fusion head 'gated'; known heads: {known}"):
        head_spec("gated")
    with pytest.raises(ValueError, match=known):
        create_head("gated", {"image": 4, "tabular": 2}, 8)
    with pytest.raises(ValueError, match=known):
        network("gated")
    with pytest.raises(ConfigError, match=r"head\.kind must be one of \('concat', 'film', 'attention'\)") as err:
        Config(head=HeadConfig(kind="gated"))
    assert err.value.field == "head.kind"


def test_the_head_flag_offers_the_registry(capsys):
    from fusion.train import main as train

    with pytest.raises(SystemExit):
        train(["--head", "gated"])
    err = capsys.readouterr().err
    assert "--head" in err and "concat" in err and "film" in err and "attention" in err


def test_a_folder_saved_before_heads_loads_as_concat():
    assert with_earlier_settings({"head": {"hidden": 8}})["head"] == {"kind": "concat", "hidden": 8}
    assert with_earlier_settings({"model": "fusion"})["head"] == {"kind": "concat"}
    assert with_earlier_settings({"head": {"kind": "film"}})["head"] == {"kind": "film"}
    assert with_earlier_settings({"head": "nonsense"})["head"] == "nonsense"  # left for the checks


def test_the_old_format_network_loads_with_the_concat_head():
    from pathlib import Path

    folder = Path(__file__).parent / "data" / "old_format" / "network"
    assert "kind" not in json.loads((folder / "config.json").read_text())["config"]["head"]
    clf = FusionClassifier.load(folder)
    assert clf.config_.head.kind == "concat" and isinstance(clf.network_.fuse, ConcatHead)


# ----------------------------------------------------- a trained model per head
@pytest.fixture(scope="module")
def head_runs(tiny_runs, tmp_path_factory):
    """A tiny fused run per head (concat: the shared fused run)."""
    from fusion.train import main as train

    root = tmp_path_factory.mktemp("head_runs")
    runs = {"concat": tiny_runs["fused"]}
    for kind in KINDS:
        if kind == "concat":
            continue
        out = root / kind
        flags = ["--head", kind, "--synthetic-n", "120", "--image-size", "32", "--epochs", "3"]
        assert train([*flags, "--out", str(out), "--quiet"]) == 0
        runs[kind] = out
    return runs


@pytest.fixture(scope="module")
def patients():
    table, images = synthetic.make_cohort(24, seed=11, image_size=32)
    return table[list(synthetic.FEATURES)].to_dict("records"), images


@pytest.mark.parametrize("kind", KINDS)
def test_a_saved_head_loads_and_predicts_the_same(head_runs, patients, kind, tmp_path):
    records, images = patients
    clf = FusionClassifier.load(head_runs[kind])
    assert clf.config_.head.kind == kind
    assert json.loads((head_runs[kind] / "config.json").read_text())["config"]["head"]["kind"] == kind
    clf.save(tmp_path / "again")
    again = FusionClassifier.load(tmp_path / "again")
    for x, imgs in ((records, list(images)), (records, None), (None, list(images))):
        np.testing.assert_array_equal(clf.predict_proba(x, imgs), again.predict_proba(x, imgs))


@pytest.mark.parametrize("kind", KINDS)
def test_a_trained_heads_explanation_shares_sum_to_one(head_runs, patients, kind):
    records, images = patients
    clf = FusionClassifier.load(head_runs[kind])
    e = clf.explain(records[0], images[0])
    assert set(e.modality_share) == {"image", "tabular"}
    assert sum(e.modality_share.values()) == pytest.approx(1.0)
    assert e.probabilities == pytest.approx(clf.predict(records[0], images[0]).probabilities, abs=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_every_head_exports_to_onnx_and_matches_predict_proba(head_runs, patients, kind, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="ONNX export is tested with the export extra")
    pytest.importorskip("onnx", reason="ONNX export is tested with the export extra")
    from fusion.export import export_onnx

    records, images = patients
    clf = FusionClassifier.load(head_runs[kind])
    path = export_onnx(clf, tmp_path / f"{kind}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch, _ = clf._inputs().many(records, list(images))
    arrays = clf.backend_.arrays(batch)
    pixels = arrays.images.float().div(255.0).numpy()
    tabular = arrays.tabular.numpy()
    n = len(records)
    cases = {
        "both": (clf.predict_proba(records, list(images)), pixels, tabular, [1.0, 1.0]),
        "image only": (clf.predict_proba(None, list(images)), pixels, np.zeros_like(tabular), [1.0, 0.0]),
        "record only": (clf.predict_proba(records, None), np.zeros_like(pixels), tabular, [0.0, 1.0]),
    }
    # The library runs bf16 where the CPU has bf16 units; the export is float32.
    tolerance = 1e-4 if clf.backend_.runtime().precision == "fp32" else 2e-2
    for name, (expected, image_in, tabular_in, flags) in cases.items():
        presence = np.tile(np.array([flags], dtype=np.float32), (n, 1))
        got = session.run(["probabilities"], {"image": image_in, "tabular": tabular_in, "presence": presence})[0]
        assert np.abs(got - expected).max() <= tolerance, (kind, name, float(np.abs(got - expected).max()))


def _edited_copy(folder, tmp_path, rehash, kind):
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    meta = json.loads((copy / "config.json").read_text())
    meta["config"]["head"]["kind"] = kind
    (copy / "config.json").write_text(json.dumps(meta))
    rehash(copy)
    return copy


def test_a_saved_unknown_head_is_refused_naming_the_setting(head_runs, tmp_path, rehash):
    from fusion.errors import ModelFolderError

    folder = _edited_copy(head_runs["film"], tmp_path, rehash, "gated")
    with pytest.raises(ModelFolderError, match=r"config\.head\.kind must be one of") as err:
        FusionClassifier.load(folder)
    assert "'attention'" in str(err.value) and "config.json" in str(err.value)


def test_weights_of_another_head_are_refused(head_runs, tmp_path, rehash):
    from fusion.errors import ModelFolderError

    folder = _edited_copy(head_runs["film"], tmp_path, rehash, "concat")
    with pytest.raises(ModelFolderError, match=r"does not fit the model config\.json describes"):
        FusionClassifier.load(folder)
