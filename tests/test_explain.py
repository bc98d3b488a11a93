"""Attributions on models whose correct answer is known."""

import copy
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fusion import FusionClassifier, synthetic
from fusion.explain import explain_network
from fusion.nets.joint import FusionModel
from fusion.nets.tabular import TabularMLP
from fusion.predict import main as predict_main


@pytest.fixture(scope="module")
def fused(tiny_runs):
    return FusionClassifier.load(tiny_runs["fused"])


@pytest.fixture(scope="module")
def patient():
    return synthetic.example(seed=21, image_size=32)


def test_explanation_covers_both_modalities(fused, patient, tmp_path):
    record, image = patient
    e = fused.explain(record, image)
    answer = fused.predict(record, image)
    assert e.target == answer.label
    # The explanation is of the prediction the user got, to the last digit.
    assert e.probabilities == pytest.approx(answer.probabilities, abs=1e-6)
    assert e.image_attribution.shape == (32, 32) and np.isfinite(e.image_attribution).all()
    assert set(e.tabular_attribution) == set(synthetic.FEATURES)
    assert all(np.isfinite(v) for v in e.tabular_attribution.values())
    assert set(e.modality_share) == {"image", "tabular"}
    assert sum(e.modality_share.values()) == pytest.approx(1.0)
    assert all(0 <= s <= 1 for s in e.modality_share.values())
    path = e.save(tmp_path / "why.png")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size[0] >= 800
    json.dumps(e.to_dict())


def test_integrated_gradients_completeness(fused, patient):
    """Attributions over both inputs add up to p(input) - p(baseline) for the target."""
    record, image = patient
    batch, *_ = fused._inputs().one(record, image)
    inputs = fused.backend_.tensors(batch, torch.device("cpu"))
    mean = float(fused.network_.branches["image"].mean)
    out = explain_network(fused.network_, inputs, None, image_mean=mean, n_steps=300)
    k = out.target
    with torch.no_grad():
        base = {"image": torch.full_like(inputs["image"], mean), "tabular": torch.zeros_like(inputs["tabular"])}
        p_base = torch.softmax(fused.network_(base), 1)[0, k].item()
    total = out.image_attribution.sum() + out.tabular_attribution.sum()
    assert total == pytest.approx(out.probabilities[k] - p_base, abs=0.02)


def test_a_model_that_ignores_the_image_gets_image_share_zero(fused, patient):
    record, image = patient
    blind = copy.deepcopy(fused)
    head = blind.network_.head[1]
    image_dim = blind.network_.branches["image"].output_dim
    tabular_dim = blind.network_.branches["tabular"].output_dim
    with torch.no_grad():
        head.weight[:, :image_dim] = 0.0  # image embedding
        head.weight[:, image_dim + tabular_dim] = 0.0  # image presence flag
    e = blind.explain(record, image)
    assert e.modality_share["image"] == pytest.approx(0.0, abs=1e-6)
    assert e.modality_share["tabular"] == pytest.approx(1.0, abs=1e-6)
    assert np.abs(e.image_attribution).max() == pytest.approx(0.0, abs=1e-7)


def test_a_feature_the_model_never_reads_gets_zero_attribution(fused, patient):
    record, image = patient
    deaf = copy.deepcopy(fused)
    first = deaf.network_.branches["tabular"].net[0]
    columns = [i for i, s in enumerate(deaf.preprocessor_.sources_) if s == "crp"]
    with torch.no_grad():
        first.weight[:, columns] = 0.0
    e = deaf.explain(record, image)
    assert e.tabular_attribution["crp"] == 0.0
    assert any(abs(v) > 0 for k, v in e.tabular_attribution.items() if k != "crp")


def test_tiny_handmade_model_attributes_to_the_one_feature_it_uses():
    """Tabular-only model: logit of class 1 = 4 * x2; IG must put everything on x2."""
    mlp = TabularMLP(3, hidden=(1,), dropout=0.0)
    model = FusionModel({"tabular": mlp}, n_classes=2, hidden=1, dropout=0.0)
    with torch.no_grad():
        mlp.net[0].weight[:] = torch.tensor([[0.0, 0.0, 1.0]])
        mlp.net[0].bias.zero_()
        model.head[1].weight.fill_(1.0)
        model.head[1].bias.zero_()
        model.head[4].weight[:] = torch.tensor([[0.0], [4.0]])
        model.head[4].bias.zero_()
    out = explain_network(model, {"tabular": torch.tensor([[5.0, -3.0, 0.5]])}, 1, image_mean=None)
    a = out.tabular_attribution
    assert a[0] == 0.0 and a[1] == 0.0 and a[2] > 0
    assert out.modality_share == {"tabular": 1.0}


def test_missing_modality_gets_share_zero(fused, patient):
    record, image = patient
    e = fused.explain(record, None)
    assert e.modality_share == {"image": 0.0, "tabular": 1.0} and e.image_attribution is None
    e = fused.explain(None, image)
    assert e.modality_share == {"image": 1.0, "tabular": 0.0} and e.tabular_attribution is None


def test_explain_another_target_and_bad_target(fused, patient):
    record, image = patient
    assert fused.explain(record, image, target="normal").target == "normal"
    with pytest.raises(ValueError, match="target must be one of"):
        fused.explain(record, image, target="flu")


def test_explain_is_fast_with_the_default_backbone(fused, patient):
    record, image = patient
    fused.explain(record, image)
    start = time.perf_counter()
    fused.explain(record, image)
    assert time.perf_counter() - start < 3.0


def test_predict_cli_text_json_and_figure(tiny_runs, patient, tmp_path, capsys):
    record, image = patient
    path = tmp_path / "film.png"
    image.save(path)
    record_file = tmp_path / "record.json"
    record_file.write_text(json.dumps(record))
    assert predict_main(["--model", str(tiny_runs["fused"]), "--image", str(path), "--record", str(record_file)]) == 0
    text = capsys.readouterr().out
    assert "from image + tabular" in text
    figure = tmp_path / "why.png"
    assert (
        predict_main(
            [
                "--model",
                str(tiny_runs["fused"]),
                "--image",
                str(path),
                "--record",
                json.dumps(record),
                "--explain",
                str(figure),
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {
        "label",
        "probabilities",
        "modalities",
        "above_threshold",
        "prediction_set",
        "coverage",
        "ignored",
        "explanation",
    }
    assert figure.is_file() and out["explanation"]["figure"] == str(figure)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--record", '{"age": "abc"}'], "'age' must be a number"),
        (["--record", "{not json"], "not valid JSON"),
        (["--record", "[1, 2]"], "JSON object"),
        (["--image", "/nonexistent.png"], "no such file"),
    ],
)
def test_predict_cli_errors(tiny_runs, args, message, capsys):
    assert predict_main(["--model", str(tiny_runs["fused"]), *args]) == 2
    assert message in capsys.readouterr().err
