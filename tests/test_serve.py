"""The HTTP service, through FastAPI's TestClient: answers equal the library's, bad
input gets a 4xx naming the field or file with the library's own message, nothing
reaches a 500 but a bug (which leaks no path or trace), uploads never touch the disk."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fusion import FusionClassifier, synthetic

pytest.importorskip("fastapi", reason="the service is tested with the serve extra: pip install '.[serve]'")
pytest.importorskip("python_multipart", reason="the service is tested with the serve extra: pip install '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx: pip install '.[serve]'")

from fastapi.testclient import TestClient

from fusion.serve import create_app


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def given(record: dict) -> dict:
    """The record's known values (JSON has no NaN)."""
    return {k: v for k, v in record.items() if not (isinstance(v, float) and np.isnan(v))}


def form(record=None, image=None, name="film.png") -> dict:
    """Keyword arguments of a multipart POST (``files`` forces multipart, even with
    only the record)."""
    files = {}
    if image is not None:
        files["image"] = (name, image, "image/png")
    if record is not None:
        files["record"] = (None, record if isinstance(record, (str, bytes)) else json.dumps(record))
    return {"files": files or {"record": (None, "")}}


@pytest.fixture(scope="module")
def model(tiny_runs):
    return tiny_runs["fused"]


@pytest.fixture(scope="module")
def clf(model):
    return FusionClassifier.load(model)


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model)) as c:
        yield c


@pytest.fixture(scope="module")
def patient():
    record, image = synthetic.example(seed=4, image_size=96)
    return given(record), png_bytes(image)


def test_health_and_schema_describe_the_model(client, clf):
    health = client.get("/health").json()
    assert health["classes"] == list(clf.classes_) and health["modalities"] == list(clf.modalities_)
    assert health["status"] == "ok" and health["version"] and health["backend"] == "network"
    schema = client.get("/schema").json()
    by_name = {f["name"]: f for f in schema["features"]}
    assert list(by_name) == list(clf.schema_.feature_names)
    assert by_name["spo2"]["unit"] == "%" and by_name["spo2"]["range"] == [50, 100]
    assert by_name["sex"]["categories"] == ["F", "M"] and by_name["sex"]["type"] == "categorical"
    assert schema["image"]["used"] and schema["image"]["max_bytes"] > 0


@pytest.mark.parametrize("parts", ["both", "image", "record"])
def test_predict_equals_the_library(client, clf, patient, parts):
    record, image = patient
    record = record if parts != "image" else None
    image = image if parts != "record" else None
    response = client.post("/predict", **form(record, image))
    assert response.status_code == 200, response.text
    expected = clf.predict(record, image)
    answer = response.json()
    assert answer["label"] == expected.label
    assert answer["probabilities"] == pytest.approx(expected.probabilities, abs=1e-12)
    assert answer["modalities"] == list(expected.modalities)


def test_explain_gives_shares_drivers_and_a_heatmap(client, clf, patient):
    record, image = patient
    answer = client.post("/explain", **form(record, image)).json()
    expected = clf.explain(record, image)
    assert answer["probabilities"] == pytest.approx(clf.predict(record, image).probabilities, abs=1e-12)
    assert answer["target"] == expected.target
    assert sum(answer["modality_share"].values()) == pytest.approx(1.0)
    assert [d["feature"] for d in answer["drivers"]] == [name for name, _ in expected.top_features(8)]
    assert {d["feature"]: d["unit"] for d in answer["drivers"]}.get("spo2", "%") == "%"
    header, data = answer["heatmap"].split(",", 1)
    assert header == "data:image/png;base64"
    picture = Image.open(io.BytesIO(base64.b64decode(data)))
    assert picture.mode == "RGB" and min(picture.size) >= 256


def _library_error(clf, record=None, image=None) -> str:
    with pytest.raises(ValueError) as info:
        clf.predict(record, image)
    return str(info.value)


def _huge_png_header() -> bytes:
    """A PNG whose header claims 20,000 x 20,000 px (400 megapixels) and whose pixels
    are absent: refused from the header, before any decoding."""
    small = png_bytes(np.zeros((16, 16), dtype=np.uint8))
    ihdr = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return small[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + small[33:]


def test_bad_record_values_name_the_field_with_the_library_message(client, clf):
    for record, field in [({"spo2": 140}, "spo2"), ({"age": "abc"}, "age"), ({"sex": "X"}, "sex")]:
        response = client.post("/predict", **form(record))
        assert response.status_code == 422
        assert response.json() == {"detail": _library_error(clf, record), "field": field, "file": None}


def test_unknown_record_field_names_the_record(client, clf):
    response = client.post("/predict", **form({"height": 180}))
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == "record" and body["detail"] == _library_error(clf, {"height": 180})
    assert "height" in body["detail"] and "spo2" in body["detail"]  # what is wrong, what is accepted


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "huge", "tiny"])
def test_bad_images_name_the_file_with_the_library_message(client, clf, patient, kind):
    _, good = patient
    data = {
        "corrupt": b"\x89PNG\r\n\x1a\n" + b"\x00" * 300,
        "truncated": good[: len(good) // 2],
        "huge": _huge_png_header(),
        "tiny": png_bytes(np.zeros((4, 4), dtype=np.uint8)),
    }[kind]
    response = client.post("/predict", **form(image=data, name=f"{kind}.png"))
    assert response.status_code == 422
    assert response.json() == {"detail": _library_error(clf, None, data), "field": "image", "file": f"{kind}.png"}


def test_no_modality_at_all_is_refused(client, clf):
    for kwargs in [form(), form(record={}), form(record={"age": None})]:
        response = client.post("/predict", **kwargs)
        assert response.status_code == 422
        assert response.json()["detail"] == _library_error(clf, None, None)


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        (form(record="{not json"), 422, "not valid JSON"),
        (form(record="[1, 2]"), 422, "JSON object"),
        (form(record=b"\xff\xfe"), 422, "UTF-8"),
        ({"files": {"record": (None, "{}"), "patient": (None, "x")}}, 400, "unknown form field 'patient'"),
        ({"data": {"record": '{"age": 50}'}}, 415, "multipart/form-data"),
        ({"content": b"--zz\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=zz"}}, 400, ""),
        ({"files": {"image": (None, "text instead of a file")}}, 422, "as a file"),
    ],
)
def test_malformed_forms_get_a_4xx_that_says_what_is_accepted(client, kwargs, status, words):
    response = client.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_body_over_the_limit_is_refused_before_it_is_read(model, patient):
    _, image = patient
    small = create_app(model, max_body_bytes=len(image) // 2)
    with TestClient(small) as c:
        response = c.post("/predict", **form(image=image))
        assert response.status_code == 413 and "limit" in response.json()["detail"]

        def chunks():  # no Content-Length: counted while read
            for start in range(0, len(image), 256):
                yield image[start : start + 256]

        response = c.post("/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
        assert response.status_code == 413


def test_uploads_are_never_written_to_disk(client, clf, monkeypatch):
    """A 1.4 MB film, over the 1 MB at which Starlette's own parser spools files to a
    temporary file: answered with every way of making a temporary file disabled."""
    import tempfile

    import starlette.formparsers

    def refuse(*args, **kwargs):
        raise AssertionError("an upload was about to be written to disk")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", refuse)
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200), dtype=np.uint8)
    image = png_bytes(noise)
    assert len(image) > 1024 * 1024
    response = client.post("/predict", **form(image=image))
    assert response.status_code == 200, response.text
    assert response.json()["probabilities"] == pytest.approx(clf.predict(None, image).probabilities, abs=1e-12)


def test_an_unexpected_error_is_a_500_without_path_or_trace(model, monkeypatch, caplog):
    app = create_app(model)
    service = app.state.service

    def broken(*args):
        raise RuntimeError(f"secret detail at {model}/model.safetensors")

    monkeypatch.setattr(service.clf, "predict", broken)
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level("ERROR", logger="fusion.serve"):
        response = c.post("/predict", **form(record={"age": 50}))
    assert response.status_code == 500
    text = response.text
    assert "secret" not in text and str(model) not in text and "Traceback" not in text
    assert "internal error" in response.json()["detail"]
    assert any("secret detail" in r.getMessage() or r.exc_info for r in caplog.records)


def test_page_and_its_script_are_served_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and "Research tool, not a diagnosis" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 404  # its page would load scripts from a CDN


def test_models_of_one_modality(tiny_runs, patient):
    record, image = patient
    with TestClient(create_app(tiny_runs["image"])) as c:
        schema = c.get("/schema").json()
        assert schema["features"] == [] and schema["image"]["used"]
        answer = c.post("/predict", **form(record, image)).json()
        assert answer["modalities"] == ["image"] and answer["ignored"] == ["tabular"]
        assert c.post("/predict", **form(image=image)).json()["ignored"] == []
    with TestClient(create_app(tiny_runs["tabular"])) as c:
        assert not c.get("/schema").json()["image"]["used"]
        response = c.post("/predict", **form(image=image))
        assert response.status_code == 422 and "needs a record" in response.json()["detail"]
        # An image the model does not use is still checked, and the answer says it was not used.
        answer = c.post("/explain", **form(record, image)).json()
        assert answer["modalities"] == ["tabular"] and answer["ignored"] == ["image"]
        response = c.post("/predict", **form(record, b"not a film"))
        assert response.status_code == 422 and response.json()["field"] == "image"


def test_command_line_refuses_bad_flags_and_folders(tmp_path, capsys):
    from fusion.serve.__main__ import main

    assert main(["--model", str(tmp_path / "nothing")]) == 2
    assert main(["--model", str(tmp_path), "--port", "70000"]) == 2
    assert main(["--model", str(tmp_path), "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "--port" in err and "--threads" in err


def test_random_records_and_bytes_never_reach_a_500(client):
    """Whatever JSON a client sends as the record, and whatever bytes as the film, the
    answer is 200 or a 4xx with a message."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    names = st.sampled_from(["age", "sex", "spo2", "crp", "view", "height", "", "__proto__"])
    values = st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
        max_leaves=6,
    )
    records = st.dictionaries(names, values, max_size=4).map(json.dumps) | st.text(max_size=40)
    films = st.none() | st.binary(max_size=200) | st.binary(max_size=40).map(lambda b: b"\x89PNG\r\n\x1a\n" + b)

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(record=records, film=films)
    def check(record, film):
        response = client.post("/predict", **form(record=record, image=film))
        assert response.status_code in (200, 400, 413, 415, 422), response.text
        if response.status_code != 200:
            assert response.json()["detail"]

    check()
    huge = '{"age": ' + "9" * 5000 + "}"
    assert client.post("/predict", **form(record=huge)).status_code == 422
