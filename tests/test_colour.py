"""Colour images (issue 23): a branch of three channels from the schema to the ONNX graph.

The data here are made so that only colour tells the classes apart: a disc whose hue
is red-ish or green-ish, of the same luma (ITU-R 601) in both classes, on a gray
background. A gray model sees the same picture for both classes and cannot learn them;
a colour model can, which proves the colour reaches the network.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fusion import Config, FusionClassifier, load_dataset
from fusion.data.dataset import Dataset
from fusion.errors import ConfigError, ModelFolderError

SIZE = 32
CLASSES = ("red", "green")
SCHEMA = """
name = "hue"

[label]
column = "colour"
classes = { red = ["red"], green = ["green"] }

[group]
column = "patient"

[image]
column = "file"
folder = "images"
channels = 3

[features.age]
type = "numeric"
unit = "years"
range = [0, 120]
"""


def hue_images(n: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB images (n, size, size, 3) and their labels: a disc whose colour is the
    same gray plus or minus a luma-free chroma (red up and green down, or the reverse),
    so that its luma, and the whole gray picture, does not depend on the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    chroma = np.array([1.0, -0.299 / 0.587, 0.0])  # 0.299 * 1 + 0.587 * (-0.509) = 0: no luma
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        picture = np.full((size, size, 3), rng.uniform(70, 180)) + rng.normal(0, 8, (size, size, 1))
        r = rng.uniform(0.2, 0.35) * size
        cy, cx = rng.uniform(r, size - r, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        colour = rng.uniform(90, 160) + (60 if labels[i] == 0 else -60) * chroma
        picture[disc] = colour + rng.normal(0, 8, (int(disc.sum()), 1))
        images[i] = np.clip(np.round(picture), 0, 255)
    return images, labels


@pytest.fixture(scope="module")
def hue_folder(tmp_path_factory):
    """The hue images as a folder dataset (PNGs, metadata.csv, a schema with
    ``[image] channels = 3``) with an age that says nothing."""
    folder = tmp_path_factory.mktemp("hue")
    (folder / "images").mkdir()
    images, labels = hue_images(120, seed=0)
    rows = ["patient,file,colour,age"]
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(pixels).save(folder / "images" / f"{i}.png")
        rows.append(f"p{i},{i}.png,{CLASSES[label]},{20 + i % 50}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    (folder / "schema.toml").write_text(SCHEMA)
    return folder


def _config(**image) -> Config:
    cfg = Config()
    cfg.image.image_size, cfg.train.epochs = SIZE, 3
    for key, value in image.items():
        setattr(cfg.image, key, value)
    return cfg


@pytest.fixture(scope="module")
def colour_model(hue_folder, tmp_path_factory):
    """A fused colour model trained on the hue folder (3 epochs), and its saved folder."""
    ds = load_dataset(hue_folder, image_size=SIZE, cache_dir=tmp_path_factory.mktemp("cache"))
    parts = ds.split(seed=0)
    clf = FusionClassifier(_config()).fit(parts["train"], parts["val"])
    folder = clf.save(tmp_path_factory.mktemp("model") / "colour")
    return clf, folder, parts["test"]


# ------------------------------------------------------------------ colour reaches the network
def test_a_colour_model_learns_what_only_hue_tells_and_a_gray_model_cannot():
    from fusion.data.images import load_image

    images, labels = hue_images(136, seed=1)
    test_images, test_labels = hue_images(80, seed=2)
    scores = {}
    for channels in (3, 1):
        train, test = images, test_images
        if channels == 1:  # the same pictures read as films are
            train = np.stack([load_image(x, SIZE) for x in images])
            test = np.stack([load_image(x, SIZE) for x in test_images])
        cfg = Config(modalities=("image",))
        cfg.image.image_size, cfg.train.epochs = SIZE, 4
        clf = FusionClassifier(cfg).fit(
            Dataset("hue", CLASSES, labels[:96], train[:96]), Dataset("hue", CLASSES, labels[96:], train[96:])
        )
        assert clf.image_channels_ == channels and clf.config_.image.channels == channels
        scores[channels] = float((clf.predict_proba(None, test).argmax(1) == test_labels).mean())
    assert scores[3] >= 0.9, scores
    assert scores[1] <= 0.7, scores  # chance is 0.5: the gray pictures hold no class


# ------------------------------------------------------------------ data and cache
def test_a_colour_schema_loads_colour_images_and_the_cache_keeps_gray_and_colour_apart(
    hue_folder, tmp_path, monkeypatch
):
    from fusion.data import loaders

    ds = load_dataset(hue_folder, image_size=SIZE, cache_dir=tmp_path)
    assert ds.images.shape == (120, SIZE, SIZE, 3) and ds.image_channels == 3 and ds.image_size == SIZE
    gray = load_dataset(hue_folder, image_size=SIZE, cache_dir=tmp_path, channels=1)
    assert gray.images.shape == (120, SIZE, SIZE) and gray.image_channels == 1
    assert len(list(tmp_path.glob("images-*.npy"))) == 2  # one entry each

    # From the cache: nothing is decoded again, and the rows are the same.
    def decoded_again(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(loaders, "load_image", decoded_again)
    again = load_dataset(hue_folder, image_size=SIZE, cache_dir=tmp_path, memory_map=True)
    assert again.images.shape == (120, SIZE, SIZE, 3) and again.images.ndim == 4
    np.testing.assert_array_equal(again.images[5], ds.images[5])
    np.testing.assert_array_equal(again.images.take([3, 1])[:], ds.images[[3, 1]])
    again.images.prefetch([0, 2])
    np.testing.assert_array_equal(np.asarray(again.subset(np.arange(10)).images), ds.images[:10])


def test_the_cache_key_of_gray_films_is_unchanged(tmp_path):
    from fusion.data.cache import _key

    files = [tmp_path / "a.png"]
    assert _key(files, 64) == _key(files, 64, 1) != _key(files, 64, 3)


def test_an_npz_of_colour_images_loads_in_colour_unless_asked_for_gray(tmp_path):
    images, labels = hue_images(30, seed=4)
    path = tmp_path / "dermamnist.npz"
    np.savez(
        path,
        train_images=images[:20],
        train_labels=labels[:20, None],
        test_images=images[20:],
        test_labels=labels[20:, None],
    )
    ds = load_dataset(path, image_size=SIZE)
    assert ds.images.shape == (30, SIZE, SIZE, 3)
    np.testing.assert_array_equal(ds.images, images)
    assert load_dataset(path, image_size=SIZE, channels=1).images.shape == (30, SIZE, SIZE)
    assert load_dataset(path, image_size=16).images.shape == (30, 16, 16, 3)


def test_the_synthetic_films_read_in_colour_are_gray_in_three_channels():
    ds = load_dataset(None, image_size=16, synthetic_n=20, channels=3)
    assert ds.images.shape == (20, 16, 16, 3)
    np.testing.assert_array_equal(ds.images[..., 0], load_dataset(None, image_size=16, synthetic_n=20).images)
    with pytest.raises(ConfigError, match=r"image\.channels must be 1") as err:
        load_dataset(None, image_size=16, synthetic_n=20, channels=2)
    assert err.value.field == "image.channels"


def test_a_schema_declares_its_channels_and_refuses_others():
    from fusion.errors import SchemaError
    from fusion.schema import parse_schema

    assert parse_schema(SCHEMA).image_channels == 3
    assert parse_schema(SCHEMA.replace("channels = 3", "")).image_channels is None
    npz = '[label]\ncolumn = "y"\nclasses = { a = ["0"], b = ["1"] }\n[image]\nchannels = 3\n'
    assert parse_schema(npz).image_channels == 3  # no image column needed to say it
    with pytest.raises(SchemaError, match="'channels' must be 1") as err:
        parse_schema(SCHEMA.replace("channels = 3", "channels = 2"))
    assert err.value.field == "[image] channels"
    with pytest.raises(SchemaError, match="'channels' must be"):
        parse_schema(SCHEMA.replace("channels = 3", 'channels = "rgb"'))


# ------------------------------------------------------------------ the model
def test_a_colour_model_saves_and_loads_with_its_channels_and_per_channel_normalisation(colour_model):
    clf, folder, test = colour_model
    config = json.loads((folder / "config.json").read_text())["config"]
    image = json.loads((folder / "preprocessing.json").read_text())["image"]
    assert config["image"]["channels"] == 3 and image["channels"] == 3
    assert len(image["mean"]) == len(image["std"]) == 3 and all(s > 0 for s in image["std"])
    loaded = FusionClassifier.load(folder)
    assert loaded.image_channels_ == 3
    records = test.records.to_dict("records")
    np.testing.assert_array_equal(loaded.predict_proba(records, test.images), clf.predict_proba(records, test.images))
    branch = loaded.network_.branches["image"]
    assert tuple(branch.mean.shape) == (3, 1, 1)
    np.testing.assert_allclose(branch.mean.flatten().tolist(), image["mean"], rtol=1e-6)


def test_a_colour_model_answers_a_file_and_a_gray_image(colour_model, hue_folder):
    clf, _, _ = colour_model
    path = hue_folder / "images" / "0.png"
    prediction = clf.predict({"age": 40}, path)
    assert prediction.label in CLASSES and prediction.modalities == ("image", "tabular")
    gray = np.asarray(Image.open(path).convert("L"))  # replicated into three equal channels
    assert clf.predict(None, gray).label in CLASSES


def test_preprocessing_json_channels_must_match_the_config(colour_model, tmp_path, rehash):
    import shutil

    _, folder, _ = colour_model
    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    state = json.loads((copy / "preprocessing.json").read_text())
    state["image"]["channels"] = 1
    (copy / "preprocessing.json").write_text(json.dumps(state))
    rehash(copy)
    with pytest.raises(ModelFolderError, match=r"image.channels 1 differs from config.json's config.image.channels 3"):
        FusionClassifier.load(copy)
    state["image"]["channels"], state["image"]["mean"] = 3, 0.5  # one number for three channels
    (copy / "preprocessing.json").write_text(json.dumps(state))
    rehash(copy)
    with pytest.raises(ModelFolderError, match=r"image\.mean must be a list of numbers"):
        FusionClassifier.load(copy)


def test_a_colour_explanation_sums_the_channels_into_one_map_over_the_colour_image(colour_model, hue_folder, tmp_path):
    from fusion.serve.heatmap import heatmap_png

    clf, _, _ = colour_model
    explanation = clf.explain({"age": 40}, hue_folder / "images" / "3.png", n_steps=8)
    assert explanation.image.shape == (SIZE, SIZE, 3)
    assert explanation.image_attribution.shape == (SIZE, SIZE)
    assert np.isfinite(explanation.image_attribution).all() and np.abs(explanation.image_attribution).sum() > 0
    assert explanation.save(tmp_path / "why.png").stat().st_size > 0
    png = Image.open(io.BytesIO(heatmap_png(explanation.image, None)))
    shown = np.asarray(png.convert("RGB"), dtype=np.float64)
    # The colour image enlarged, not its luma: each channel's mean is the image's own.
    np.testing.assert_allclose(shown.mean(axis=(0, 1)), explanation.image.mean(axis=(0, 1)), atol=1.5)
    assert np.abs(shown[..., 0] - shown[..., 1]).max() > 30
    assert Image.open(io.BytesIO(heatmap_png(explanation.image, explanation.image_attribution)))


def test_the_service_describes_a_colour_model_and_shows_its_heatmap_in_colour(colour_model, hue_folder):
    import base64

    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx, a test tool: pip install '.[test]'")
    from fastapi.testclient import TestClient

    from fusion.serve import create_app

    _, folder, _ = colour_model
    client = TestClient(create_app(folder, explain_steps=4), base_url="http://127.0.0.1:8000")
    assert client.get("/schema").json()["image"]["channels"] == 3
    assert client.get("/health").json()["image_channels"] == 3
    film = (hue_folder / "images" / "7.png").read_bytes()
    answer = client.post("/explain", files={"image": ("lesion.png", film, "image/png")}).json()
    picture = Image.open(io.BytesIO(base64.b64decode(answer["heatmap"].split(",", 1)[1]))).convert("RGB")
    pixels = np.asarray(picture).astype(int)
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() > 30  # colour, not a gray film


def test_onnx_export_of_a_colour_model_matches_predict_proba(colour_model, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="ONNX export is tested with the export extra")
    pytest.importorskip("onnx", reason="ONNX export is tested with the export extra")
    from fusion.export import export_onnx

    clf, folder, test = colour_model
    path = export_onnx(folder, tmp_path / "colour.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1] == 3
    # As docs/serving.md says: RGB pixels / 255, channels first; the record as preprocessing.json says.
    pixels = (test.images.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)
    tabular = clf.preprocessor_.transform(test.records)
    presence = np.ones((len(test), 2), np.float32)
    got = session.run(None, {"image": pixels, "tabular": tabular, "presence": presence})[0]
    expected = clf.predict_proba(test.records.to_dict("records"), test.images)
    tolerance = 1e-4 if clf.backend_.runtime().precision == "fp32" else 2e-2
    assert np.abs(got - expected).max() <= tolerance


# ------------------------------------------------------------------ starting weights
def test_the_gray_chest_xray_weights_are_refused_on_a_colour_model(hue_folder, tmp_path):
    cfg = _config(channels=3, pretrained="cxr")
    with pytest.raises(ConfigError, match="read gray films") as err:
        cfg.validate()
    assert err.value.field == "image.pretrained"
    # Unset channels follow the data: the refusal comes when the colour data arrive.
    ds = load_dataset(hue_folder, image_size=SIZE, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="read gray films") as err:
        FusionClassifier(_config(pretrained="cxr")).fit(ds)
    assert err.value.field == "image.pretrained"
    with pytest.raises(ConfigError, match="frozen pretrained backbone") as err:
        FusionClassifier(Config(fusion="stacked")).fit(ds)
    assert err.value.field == "fusion" and "image.weights" in err.value.fields
    # resolved before the data were known (as the train command does): the derived cxr
    # is refused when they arrive, without offering what the strategy cannot do
    with pytest.raises(ConfigError, match="fusion 'auto' cannot start from scratch") as err:
        FusionClassifier(Config(fusion="auto").resolved()).fit(ds)
    assert "or from scratch" not in str(err.value)


def test_the_train_command_names_the_flag_of_the_refused_weights(capsys):
    from fusion.train import main

    assert main(["--channels", "3", "--pretrained", "cxr", "--synthetic-n", "40", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--pretrained" in err and "gray films" in err


def test_image_channels_set_against_the_data_are_refused(hue_folder, tmp_path):
    ds = load_dataset(hue_folder, image_size=SIZE, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"image\.channels is 1 but the training images have 3") as err:
        FusionClassifier(_config(channels=1)).fit(ds)
    assert err.value.field == "image.channels"


def test_a_gray_weights_file_is_spread_over_the_colour_stem_so_gray_images_answer_alike(tmp_path):
    from fusion.nets.backbones import create_backbone

    torch.manual_seed(0)
    gray = create_backbone("custom").eval()
    path = tmp_path / "gray.pt"
    torch.save(gray.state_dict(), path)
    colour = create_backbone("custom", path, in_chans=3).eval()
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(colour(x.expand(-1, 3, -1, -1)), gray(x), rtol=1e-4, atol=1e-5)
    # And colour weights into a gray backbone: the stem summed, as ImageNet's always were.
    torch.save(colour.state_dict(), tmp_path / "colour.pt")
    back = create_backbone("custom", tmp_path / "colour.pt").eval()
    torch.testing.assert_close(back.features[0].weight, gray.features[0].weight)


def test_densenet_reads_colour_through_torchvision_s_own_stem():
    from fusion.nets.backbones import create_backbone

    net = create_backbone("densenet169", in_chans=3)
    assert net.features.conv0.in_channels == 3 and create_backbone("densenet169").features.conv0.in_channels == 1


def test_a_gray_run_is_refused_as_the_start_of_a_colour_model(tmp_path):
    from fusion.nets.backbones import create_backbone

    cfg = Config(modalities=("image",))
    cfg.image.image_size, cfg.train.epochs = SIZE, 1
    gray = FusionClassifier(cfg).fit(load_dataset(None, image_size=SIZE, synthetic_n=30)).save(tmp_path / "gray")
    with pytest.raises(ConfigError, match="reads 1 image channel") as err:
        create_backbone("custom", gray, in_chans=3)
    assert err.value.field == "image.init_from"
    assert create_backbone("custom", gray).in_chans == 1


def test_the_frozen_embedder_of_the_stacked_strategy_reads_colour(hue_folder, tmp_path, small_tuning):
    from fusion.nets.backbones import create_backbone

    torch.manual_seed(0)
    weights = tmp_path / "colour.pt"
    torch.save(create_backbone("custom", in_chans=3).state_dict(), weights)
    ds = load_dataset(hue_folder, image_size=SIZE, cache_dir=tmp_path)
    parts = ds.split(seed=0)
    cfg = _config(weights=str(weights))
    cfg.fusion, cfg.tuning = "stacked", small_tuning
    clf = FusionClassifier(cfg).fit(parts["train"], parts["val"])
    assert clf.backend_.image_state["channels"] == 3 and len(clf.backend_.image_state["mean"]) == 3
    folder = clf.save(tmp_path / "stacked")
    records = parts["test"].records.to_dict("records")
    np.testing.assert_allclose(
        FusionClassifier.load(folder).predict_proba(records, parts["test"].images),
        clf.predict_proba(records, parts["test"].images),
        rtol=1e-5,
        atol=1e-9,
    )
    explanation = clf.explain(records[0], parts["test"].images[0], n_steps=4)
    assert explanation.image_attribution.shape == (SIZE, SIZE)


# ------------------------------------------------------------------ augmentation
def test_gray_augmentation_draws_what_it_always_drew_and_flips_add_one_draw():
    from fusion.training.loop import augment_images

    def draws(x, **kw) -> int:
        g = torch.Generator().manual_seed(5)
        augment_images(x, g, **kw)
        reference = torch.Generator().manual_seed(5)
        for k in range(12):
            if torch.equal(reference.get_state(), g.get_state()):
                return k
            torch.rand(len(x), generator=reference)
        raise AssertionError("no match")

    gray, colour = torch.rand(4, 1, 16, 16), torch.rand(4, 3, 16, 16)
    assert draws(gray) == 6
    assert draws(gray, flip_rotate=True) == 7
    assert draws(colour) == 7  # the saturation
    assert draws(colour, flip_rotate=True) == 8


def test_flip_rotate_covers_the_eight_symmetries_and_saturation_keeps_gray_gray():
    from fusion.training.loop import _symmetries, augment_images

    matrices = _symmetries(torch.arange(8, dtype=torch.float32) + 0.5)
    assert len({tuple(m.flatten().tolist()) for m in matrices}) == 8
    assert all(torch.equal(m @ m.T, torch.eye(2)) for m in matrices)
    gray_in_colour = torch.rand(6, 1, 16, 16).expand(-1, 3, -1, -1).contiguous()
    out = augment_images(gray_in_colour, torch.Generator().manual_seed(0), flip_rotate=True)
    torch.testing.assert_close(out[:, 0], out[:, 1])
    torch.testing.assert_close(out[:, 1], out[:, 2])


# ------------------------------------------------------------------ images without an up or a side
def test_a_schema_says_its_images_may_be_mirrored_and_turned_and_refuses_a_non_boolean():
    from fusion.errors import SchemaError
    from fusion.schema import parse_schema

    assert parse_schema(SCHEMA).image_flip_rotate is False  # films: not unless declared
    assert parse_schema(SCHEMA.replace("channels = 3", "channels = 3\nflip_rotate = true")).image_flip_rotate
    npz = '[label]\ncolumn = "y"\nclasses = { a = ["0"], b = ["1"] }\n[image]\nflip_rotate = true\n'
    assert parse_schema(npz).image_flip_rotate  # no image column needed to say it
    with pytest.raises(SchemaError, match="'flip_rotate' must be true or false") as err:
        parse_schema(SCHEMA.replace("channels = 3", 'channels = 3\nflip_rotate = "yes"'))
    assert "flip_rotate" in str(err.value.field)


@pytest.mark.parametrize(
    ("declared", "flag", "expected"),
    [(True, None, True), (True, False, False), (False, None, False), (False, True, True)],
)
def test_flip_rotate_follows_the_schema_unless_set(hue_folder, tmp_path, declared, flag, expected):
    """Unset, ``image.flip_rotate`` is the schema's (what the model trained with is
    saved); set (``--flip-rotate`` / ``--no-flip-rotate``), it wins."""
    import shutil

    folder = tmp_path / "hue"
    shutil.copytree(hue_folder, folder)
    if declared:
        (folder / "schema.toml").write_text(SCHEMA.replace("channels = 3", "channels = 3\nflip_rotate = true"))
    ds = load_dataset(folder, image_size=SIZE, cache_dir=tmp_path / "cache")
    cfg = _config(flip_rotate=flag)
    cfg.train.epochs = 1
    clf = FusionClassifier(cfg).fit(ds.subset(np.arange(60)), ds.subset(np.arange(60, 90)))
    assert clf.config_.image.flip_rotate is expected
    assert cfg.image.flip_rotate is flag  # the request is left alone
    assert FusionClassifier.load(clf.save(tmp_path / "model")).config_.image.flip_rotate is expected


def test_the_train_command_reads_flip_rotate_and_its_negative():
    from fusion.cli import config_from_args
    from fusion.train import build_parser

    parser = build_parser()
    assert config_from_args(parser.parse_args([])).image.flip_rotate is None
    assert config_from_args(parser.parse_args(["--flip-rotate"])).image.flip_rotate is True
    assert config_from_args(parser.parse_args(["--no-flip-rotate"])).image.flip_rotate is False


def test_the_card_of_a_colour_model_of_lesions_speaks_of_images_and_lesions():
    from fusion.evaluation.card import card_words, limitations
    from fusion.schema import load_schema

    ham = load_schema("ham10000")
    metrics = {"backbone": "custom", "config": {"image": {"channels": 3}}, "n_test": 50, "test": {"per_class": {}}}
    assert card_words(metrics, ham) == {
        "items": "images",
        "image": "a colour image (dermatoscopy, fundus, pathology)",
        "unit": "lesion",
    }
    notes = " ".join(limitations(metrics, ham, None))
    assert "50 images" in notes and "dermatoscopy" in notes and "chest X-ray" not in notes
    gray = {**metrics, "config": {"image": {"channels": 1}}}
    assert card_words(gray, load_schema("nih_pneumonia"))["items"] == "films"


# ------------------------------------------------------------------ auto on colour images
def test_auto_on_colour_images_weighs_the_networks_and_the_record_without_frozen_weights(
    hue_folder, tmp_path, small_tuning
):
    """No shipped weights read colour, so auto leaves out its frozen-backbone candidates
    (and says which) instead of refusing the request."""
    from fusion.backends.auto import candidates

    assert [c.name for c in candidates(("image", "tabular"), frozen=False)] == [
        "joint",
        "image_joint",
        "tabular_xgboost",
    ]
    ds = load_dataset(hue_folder, image_size=SIZE, cache_dir=tmp_path)
    cfg = Config(fusion="auto", tuning=small_tuning)
    cfg.train.epochs, cfg.image.image_size, cfg.tuning.auto_folds = 1, SIZE, 2
    clf = FusionClassifier(cfg).fit(ds.subset(np.arange(90)), ds.subset(np.arange(90, 120)))
    auto = clf.history_["auto"]
    assert set(auto["candidates"]) == {"joint", "image_joint", "tabular_xgboost"}
    assert auto["left_out"] == ["stacked", "gbm", "image_stacked", "image_gbm"]
    from fusion.evaluation.card import _auto_lines

    assert any(line.startswith("Left out: stacked, gbm, image_stacked, image_gbm") for line in _auto_lines(auto))
    assert clf.config_.image.pretrained is None and clf.image_channels_ == 3
    assert clf.predict_dataset(ds.subset(np.arange(4))).shape == (4, 2)


def test_the_schema_s_word_on_the_images_is_read_before_the_images(hue_folder, tmp_path):
    from fusion.data.loaders import declared_image

    assert declared_image(hue_folder, None) == (3, False, None)  # the folder's own schema.toml
    assert declared_image(hue_folder, "ham10000") == (3, True, None)
    assert declared_image(hue_folder, "nih_pneumonia") == (None, False, None)
    assert declared_image(hue_folder, "kermany_cxr") == (None, False, 32)
    assert declared_image(None, None) == (None, None, None)  # the synthetic cohort
