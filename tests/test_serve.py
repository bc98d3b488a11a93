"""The HTTP service, through FastAPI's TestClient: answers equal the library's, bad
input gets a 4xx naming the field or file with the library's own message, nothing
reaches a 500 but a bug (which leaks no path or trace), uploads never touch the disk."""

from __future__ import annotations

import base64
import contextlib
import gc
import io
import json
import logging
import socket
import struct
import threading
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from fusion import FusionClassifier, synthetic

pytest.importorskip("fastapi", reason="the service is tested with the serve extra: pip install '.[serve]'")
pytest.importorskip("python_multipart", reason="the service is tested with the serve extra: pip install '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx, a test tool: pip install '.[test]'")

from fastapi.testclient import TestClient

from fusion.serve import create_app


def serve(app, **kwargs) -> TestClient:
    """A test client that names this machine as its Host (the service answers only to
    its trusted hosts; the client's own default, "testserver", is not one)."""
    return TestClient(app, base_url="http://127.0.0.1:8000", **kwargs)


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
    with serve(create_app(model)) as c:
        yield c


@pytest.fixture(scope="module")
def patient():
    record, image = synthetic.example(seed=4, image_size=96)
    return given(record), png_bytes(image)


def test_health_and_schema_describe_the_model(client, clf):
    health = client.get("/health").json()
    assert health["classes"] == list(clf.classes_) and health["modalities"] == list(clf.modalities_)
    assert health["status"] == "ok" and health["version"] and health["backend"] == "joint"
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
    assert answer["prediction_set"] == list(expected.prediction_set) and answer["coverage"] == expected.coverage


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
    with serve(small) as c:
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
    with serve(app, raise_server_exceptions=False) as c, caplog.at_level("ERROR", logger="fusion.serve"):
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
    with serve(create_app(tiny_runs["image"])) as c:
        schema = c.get("/schema").json()
        assert schema["features"] == [] and schema["image"]["used"]
        answer = c.post("/predict", **form(record, image)).json()
        assert answer["modalities"] == ["image"] and answer["ignored"] == ["tabular"]
        assert c.post("/predict", **form(image=image)).json()["ignored"] == []
    with serve(create_app(tiny_runs["tabular"])) as c:
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
    with pytest.raises(SystemExit) as exit_:
        main(["--model", str(tmp_path), "--threads", "0"])  # refused by argparse, naming the flag
    assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path), "--port", "9" * 5000])
    err = capsys.readouterr().err
    assert "--port" in err and "--threads" in err and len(err) < 2000


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


# ------------------------------------------------------- forms the parser cannot take


@pytest.mark.parametrize(
    ("content_type", "words"),
    [
        ("multipart/form-data; boundary=" + "b" * 300, "300 characters"),
        ("multipart/form-data; boundary=" + "b" * 71, "71 characters"),
        ('multipart/form-data; boundary="a{b}"', "'a{b}'"),
        ("multipart/form-data; boundary=\u00e9t\u00e9", "boundary"),
        ('multipart/form-data; boundary="ends with a space "', "boundary"),
        ("multipart/form-data; boundary=", "no boundary"),
        ("multipart/form-data", "no boundary"),
        ('multipart/form-data; boundary=""', "no boundary"),
    ],
)
def test_a_boundary_the_parser_cannot_take_is_a_400_naming_it(client, content_type, words):
    boundary = content_type.partition("boundary=")[2].strip('"') or "x"
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="record"\r\n\r\n{{}}\r\n--{boundary}--\r\n'
    headers = {"content-type": content_type.encode("latin-1")}
    response = client.post("/predict", content=body.encode("latin-1"), headers=headers)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "boundary" in detail and words in detail
    assert "1 to 70" in detail or "no boundary" in detail  # what is accepted


def test_the_boundary_parameter_is_found_in_any_case(client):
    body = b'--Ab9\r\nContent-Disposition: form-data; name="record"\r\n\r\n{"age": 50}\r\n--Ab9--\r\n'
    response = client.post("/predict", content=body, headers={"content-type": "Multipart/Form-Data; BOUNDARY=Ab9"})
    assert response.status_code == 200, response.text


def _part(headers: list[str], data: str = "{}", boundary: str = "zz") -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"--{boundary}\r\n{head}\r\n{data}\r\n--{boundary}--\r\n".encode("latin-1")


@pytest.mark.parametrize(
    "body",
    [
        _part(['Content-Disposition: form-data; name="record"', "X-Long: " + "v" * 5000]),
        _part(['Content-Disposition: form-data; name="record"', *[f"X-{i}: v" for i in range(20)]]),
        _part(["Content-Disposition: form-data; name=" + '"' * 50]),
        _part(["no colon in this header"]),
        _part(["Content-Disposition: attachment"]),
        _part([": value without a name"]),
        b"--zz\r\n\r\n\r\n--zz--\r\n",
        b"--zz--\r\n",
        b"preamble only, no boundary at all",
    ],
)
def test_odd_part_headers_are_a_4xx_never_a_500(client, body):
    response = client.post("/predict", content=body, headers={"content-type": "multipart/form-data; boundary=zz"})
    assert response.status_code in (400, 422), response.text
    assert response.json()["detail"]


def test_random_content_types_never_reach_a_500(client):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    latin = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80)
    types = st.builds(lambda a, b: f"multipart/form-data;{a}boundary={b}", latin, latin) | latin

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(content_type=types)
    def check(content_type):
        body = b'--x\r\nContent-Disposition: form-data; name="record"\r\n\r\n{}\r\n--x--\r\n'
        response = client.post("/predict", content=body, headers={"content-type": content_type.encode("latin-1")})
        assert response.status_code in (400, 415, 422), response.text
        assert response.json()["detail"]

    check()


# ------------------------------------------------------------------- trusted hosts


@pytest.fixture(scope="module")
def default_app(model):
    return create_app(model)


@pytest.mark.parametrize("host", ["localhost", "LocalHost:1234", "127.0.0.1", "127.0.0.1:8000", "[::1]", "[::1]:80"])
def test_this_machine_is_trusted_under_any_port(default_app, host):
    with TestClient(default_app) as c:
        assert c.get("/health", headers={"host": host}).status_code == 200


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.1.nip.io", "[::2]:8000", "testserver"],
)
def test_a_host_not_trusted_is_refused_naming_it(default_app, host):
    """A page on another site that rebinds its name to 127.0.0.1 sends its own name as
    Host: refused, with the host named and the way to trust it."""
    with TestClient(default_app) as c:
        for response in [
            c.get("/health", headers={"host": host}),
            c.post("/predict", headers={"host": host}, **form(record={"age": 50})),
        ]:
            assert response.status_code == 400, response.text
            detail = response.json()["detail"]
            assert repr(host) in detail and "--trusted-hosts" in detail
            assert response.headers["x-frame-options"] == "DENY"  # the security headers still come


def test_trusted_hosts_extend_this_machine_and_star_opts_out(model):
    with TestClient(create_app(model, trusted_hosts=["fusion.example.org", "10.0.0.7", "[fd00::7]"])) as c:
        for host in ["fusion.example.org", "FUSION.example.org:443", "10.0.0.7:8000", "[fd00::7]:8000", "localhost"]:
            assert c.get("/health", headers={"host": host}).status_code == 200, host
        assert c.get("/health", headers={"host": "other.example.org"}).status_code == 400
    with TestClient(create_app(model, trusted_hosts=["*"])) as c:
        assert c.get("/health", headers={"host": "anything.example"}).status_code == 200


@pytest.mark.parametrize("host", ["a b", "", "example.org:80", "http://example.org", "*.example.org", "[::1", "a/b"])
def test_bad_trusted_hosts_are_refused_naming_the_argument(model, host):
    with pytest.raises(ValueError, match="trusted_hosts") as info:
        create_app(model, trusted_hosts=["fine.example", host])
    assert repr(host) in str(info.value)
    with pytest.raises(TypeError, match="trusted_hosts must be a list of host names; got str"):
        create_app(model, trusted_hosts="fine.example")


# ------------------------------------------------------- a real server, raw sockets


@contextlib.contextmanager
def live(app, **options):
    """``app`` on a real uvicorn server configured as ``python -m fusion.serve`` does,
    in a thread, on a free port of 127.0.0.1; yields the server and its port."""
    import uvicorn

    from fusion.serve.server import server_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, port=port, log_level=None, log_config=None, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield server, port
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


def _head(port: int, length: int, path: str = "/predict") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _until_closed(sock: socket.socket, within: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection (True), or until
    ``within`` seconds have passed (False)."""
    data, deadline = b"", time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _wait(condition, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the server did not get there in time"
        time.sleep(0.01)


def _idle(server) -> bool:
    return not server.server_state.connections and not server.server_state.tasks


def test_a_stalled_body_gets_408_and_what_was_read_is_dropped(model, caplog):
    """Three uploads that stop after 2 MB of their 8: each is answered 408 when its
    deadline passes, its connection closed and its 2 MB released."""
    app = create_app(model, body_timeout=0.5)
    piece = b"\0" * (2 * 2**20)
    with live(app) as (server, port), caplog.at_level(logging.INFO, logger="fusion"):
        tracemalloc.start()
        try:
            socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
            for sock in socks:
                sock.sendall(_head(port, 4 * len(piece)) + piece)
            answers = [_until_closed(sock, 5) for sock in socks]
            for sock in socks:
                sock.close()
            _wait(lambda: _idle(server))
            gc.collect()
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    for data, closed in answers:
        assert data.startswith(b"HTTP/1.1 408 ") and closed, data[:200]
        assert b"connection: close" in data.lower()
        assert b"did not arrive within 0.5 s" in data
    assert held < 2**20, f"{held / 2**20:.1f} MB still held after the 408s"
    assert app.state.service.in_flight == 0
    lines = [r for r in caplog.records if r.name.startswith(("fusion", "uvicorn")) and r.levelno >= logging.INFO]
    assert [r.levelname for r in lines] == ["INFO"] * 3 and not any(r.exc_info for r in lines)
    assert all("408" in r.getMessage() for r in lines)


def test_partial_headers_get_408_and_their_connection_closed(model):
    """Headers that stop, headers sent a byte at a time (which do not push the deadline
    back), a connection that says nothing and one that stops after a first request:
    all closed once the header deadline has passed."""
    with live(create_app(model), header_timeout=0.4) as (server, port):
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        dripping = socket.create_connection(("127.0.0.1", port))
        silent = socket.create_connection(("127.0.0.1", port))
        reused = socket.create_connection(("127.0.0.1", port))
        reused.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        first = b""
        while b'"status"' not in first:
            first += reused.recv(65536)
        reused.sendall(b"GET /health HTTP/1.1\r\nHo")
        start = time.monotonic()

        def drip():
            for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"v" * 100:
                try:
                    dripping.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.05)

        dripper = threading.Thread(target=drip)
        dripper.start()
        answers = {
            name: _until_closed(s, 3)
            for name, s in [("stalled", stalled), ("dripping", dripping), ("silent", silent), ("reused", reused)]
        }
        elapsed = time.monotonic() - start
        dripper.join()
        for s in (stalled, dripping, silent, reused):
            s.close()
        _wait(lambda: _idle(server))
    assert b"200 OK" in first
    assert all(closed for _, closed in answers.values()), answers
    assert elapsed < 2.0
    for name in ("stalled", "dripping", "reused"):
        assert answers[name][0].startswith(b"HTTP/1.1 408 "), (name, answers[name])
    assert answers["silent"][0] == b""  # nothing was asked: closed without an answer


def test_requests_over_the_concurrency_limit_get_503_with_retry_after(model, patient):
    import httpx

    app = create_app(model, max_concurrent=1, body_timeout=10)
    service = app.state.service
    with live(app) as (_server, port):
        url = f"http://127.0.0.1:{port}"
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(_head(port, 10_000) + b"x" * 100)
        _wait(lambda: service.in_flight == 1)
        busy = httpx.post(f"{url}/predict", **form(record={"age": 50}), timeout=5)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert "1 request" in busy.json()["detail"]
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # not a request that is read
        slow.close()
        _wait(lambda: service.in_flight == 0)
        record, image = patient
        assert httpx.post(f"{url}/predict", **form(record, image), timeout=10).status_code == 200


def test_a_client_that_leaves_mid_upload_is_one_info_line(model, caplog):
    app = create_app(model)
    with live(app) as (server, port), caplog.at_level(logging.INFO):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(_head(port, 2**20) + b"\0" * 1000)
        _wait(lambda: app.state.service.in_flight == 1)
        sock.close()
        _wait(lambda: _idle(server) and app.state.service.in_flight == 0)
    lines = [r for r in caplog.records if r.name.startswith(("fusion", "uvicorn")) and r.levelno >= logging.INFO]
    assert [r.levelname for r in lines] == ["INFO"], [r.getMessage() for r in lines]
    assert "disconnected while sending the body" in lines[0].getMessage() and not lines[0].exc_info


def test_an_answer_given_before_the_body_is_read_closes_the_connection(model):
    """413 from Content-Length, 400 for a foreign Host, a GET that announces a body:
    answered at once, and the connection closed, so the rest of the body is never read."""
    app = create_app(model, max_body_bytes=1000)
    with live(app) as (_server, port):
        for head in [
            _head(port, 5000),
            _head(port, 500).replace(f"127.0.0.1:{port}".encode(), b"evil.example"),
            b"GET /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n",
        ]:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(head + b"x" * 100)
            data, closed = _until_closed(sock, 3)
            sock.close()
            assert closed and b"connection: close" in data.lower(), data[:300]
            assert data.split(b"\r\n")[0] in (
                b"HTTP/1.1 413 Request Entity Too Large",
                b"HTTP/1.1 400 Bad Request",
                b"HTTP/1.1 200 OK",
            )


def test_a_request_without_host_is_refused(model):
    with live(create_app(model)) as (_server, port):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        data, closed = _until_closed(sock, 3)
        sock.close()
    assert data.startswith(b"HTTP/1.1 400 ") and b"Host" in data and closed


@pytest.mark.parametrize(
    ("flag", "value", "accepted"),
    [
        ("--max-upload-mb", "inf", "1024"),
        ("--max-upload-mb", "nan", "1024"),
        ("--max-upload-mb", "1e400", "1024"),
        ("--max-upload-mb", "-5", "1024"),
        ("--max-upload-mb", "0", "1024"),
        ("--max-upload-mb", "1e30", "1024"),
        ("--max-upload-mb", "0.0000001", "1 byte"),
        ("--max-upload-mb", "lots", "1024"),
        ("--body-timeout", "inf", "3600"),
        ("--body-timeout", "0", "3600"),
        ("--header-timeout", "nan", "3600"),
        ("--header-timeout", "-1", "3600"),
        ("--max-concurrent", "0", "from 1 to 500"),
        ("--max-concurrent", "9" * 5000, "from 1 to 500"),
        ("--trusted-hosts", "evil.example:80", "without a port"),
    ],
)
def test_command_line_refuses_out_of_range_limits_naming_the_flag(tmp_path, capsys, flag, value, accepted):
    from fusion.serve.__main__ import main

    assert main(["--model", str(tmp_path), flag, value]) == 2
    err = capsys.readouterr().err
    assert flag in err and accepted in err and "Traceback" not in err
    assert "max_body_bytes" not in err and "trusted_hosts" not in err and "body_timeout" not in err
    assert "(flag:" not in err  # no other flag named beside it
