"""Reliability and security: resume after a kill, model folders that cannot carry code,
bad input that never corrupts a run or crashes prediction."""

import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fusion import FusionClassifier, synthetic
from fusion.data.images import load_image
from fusion.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
SLOW_RUN = [
    "--modalities",
    "image,tabular",
    "--synthetic-n",
    "240",
    "--image-size",
    "32",
    "--epochs",
    "16",
    "--patience",
    "100",
]


def _wait_for_epoch(folder: Path, epoch: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = folder / "progress.json"
        if progress.is_file():
            try:
                done = json.loads(progress.read_text())["epoch"]
            except (ValueError, KeyError):
                done = 0  # being replaced right now
            if done >= epoch:
                return done
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.02)
    raise AssertionError("training made no progress")


def test_kill_9_mid_run_then_resume(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fusion.train", *SLOW_RUN, "--out", str(out), "--quiet"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_epoch(out, 3, proc)
        time.sleep(0.05)  # somewhere inside the next epoch
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = json.loads((out / "progress.json").read_text())["epoch"]
    assert 3 <= done < 16 and not (out / "metrics.json").exists()
    assert not list(out.glob("*.tmp"))  # nothing half written survives a kill
    # A new run into the same folder is refused; --resume continues.
    assert train_main([*SLOW_RUN, "--out", str(out), "--quiet"]) == 2
    assert train_main([*SLOW_RUN, "--out", str(out), "--quiet", "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # progress.json is written just after the checkpoint: a kill between the two leaves
    # it one epoch behind, and the resume rightly starts from the checkpoint.
    assert metrics["resumed_from_epoch"] in (done, done + 1)
    assert metrics["epochs_run"] == 16 and [h["epoch"] for h in metrics["history"]] == list(range(1, 17))
    assert metrics["test"]["macro_f1"] > 0.5
    FusionClassifier.load(out)
    assert json.loads((out / "progress.json").read_text())["complete"] is True


def _interrupt_after(epoch: int, args: list[str], monkeypatch) -> None:
    """Run ``train`` in this process and interrupt it right after ``epoch``'s checkpoint:
    the state a kill leaves (the real ``kill -9`` of another process is tested above),
    without paying for a second interpreter."""
    import fusion.training.hooks.checkpoint as checkpointing

    save = checkpointing.save_checkpoint

    def save_then_stop(folder, **state):
        save(folder, **state)
        if state["epoch"] >= epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpointing, "save_checkpoint", save_then_stop)
    assert train_main(args) == 130  # Ctrl-C: one line, and the exit code of SIGINT
    monkeypatch.undo()


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path, monkeypatch):
    args = ["--modalities", "image,tabular", "--synthetic-n", "150", "--image-size", "32", "--epochs", "4", "--quiet"]
    assert train_main([*args, "--out", str(tmp_path / "whole")]) == 0
    part = tmp_path / "part"
    _interrupt_after(2, [*args, "--out", str(part)], monkeypatch)
    assert train_main([*args, "--out", str(part), "--resume"]) == 0
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((part / "metrics.json").read_text())
    assert [round(h["val_loss"], 6) for h in a["history"]] == [round(h["val_loss"], 6) for h in b["history"]]
    assert a["test"]["macro_f1"] == b["test"]["macro_f1"]


def test_resume_with_another_configuration_is_refused(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["--modalities", "tabular", "--synthetic-n", "90", "--epochs", "3", "--quiet", "--out", str(out)]
    from fusion.training.checkpoint import PROGRESS

    assert train_main(args) == 0
    # Pretend the run was interrupted: mark progress incomplete, keep a checkpoint.
    (out / PROGRESS).write_text(json.dumps({"epoch": 1, "complete": False}))
    assert train_main([*args, "--resume"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    capsys.readouterr()
    out2 = tmp_path / "run2"
    _interrupt_after(1, [*SLOW_RUN, "--out", str(out2), "--quiet"], monkeypatch)
    changed = [a if a != "16" else "30" for a in SLOW_RUN]
    assert train_main([*changed, "--out", str(out2), "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "different configuration or data" in err and "config.train.epochs: checkpoint 16, now 30" in err
    other_data = [*SLOW_RUN, "--seed", "1"]
    assert train_main([*other_data, "--out", str(out2), "--quiet", "--resume"]) == 2
    assert "different configuration or data" in capsys.readouterr().err


def test_resume_without_an_interrupted_run_is_refused(tmp_path, capsys):
    assert (
        train_main(
            ["--modalities", "tabular", "--synthetic-n", "90", "--out", str(tmp_path / "new"), "--resume", "--quiet"]
        )
        == 2
    )
    assert "no interrupted run" in capsys.readouterr().err


# ------------------------------------------------------------------ safe model files
class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.parametrize("update_manifest", [False, True])
def test_planted_pickle_is_refused_and_never_run(tiny_runs, tmp_path, update_manifest):
    import shutil

    from fusion.persistence import write_manifest

    folder = tmp_path / "model"
    shutil.copytree(tiny_runs["fused"], folder)
    marker = tmp_path / "marker.txt"
    (folder / "model.safetensors").write_bytes(pickle.dumps({"state": _Payload(marker)}))
    if update_manifest:  # a careful attacker also rewrites the hashes
        listed = json.loads((folder / "manifest.json").read_text())["sha256"]
        write_manifest(folder, list(listed), "0.1.0")
    with pytest.raises(ValueError) as err:
        FusionClassifier.load(folder)
    message = str(err.value)
    assert (
        ("does not match its SHA-256" in message)
        if not update_manifest
        else ("not a valid safetensors file" in message)
    )
    assert not marker.exists()


def test_changed_file_is_reported_with_its_name(tiny_runs, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_runs["fused"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["classes"] = ["a", "b", "c"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json does not match its SHA-256"):
        FusionClassifier.load(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match=r"config\.json is listed in the manifest but missing"):
        FusionClassifier.load(folder)


def test_version_mismatch_is_reported(tiny_runs, tmp_path):
    import shutil

    from fusion.persistence import write_manifest

    folder = tmp_path / "model"
    shutil.copytree(tiny_runs["fused"], folder)
    listed = json.loads((folder / "manifest.json").read_text())["sha256"]
    write_manifest(folder, list(listed), "0.0.1")
    with pytest.warns(UserWarning, match="saved by fusion 0.0.1") as caught:
        FusionClassifier.load(folder)
    assert caught[0].filename == __file__  # the warning points at the caller, not at fusion


def test_no_pickle_anywhere_in_a_model_folder(tiny_runs):
    for run in tiny_runs.values():
        for path in run.rglob("*"):
            if path.is_file():
                head = path.read_bytes()[:2]
                assert head != b"\x80\x04" and head != b"\x80\x05", f"{path} looks like a pickle"


# ------------------------------------------------------------------- training data
def test_too_little_valid_data_fails_clearly(folder_dataset, capsys):
    table = (folder_dataset / "metadata.csv").read_text().splitlines()
    (folder_dataset / "metadata.csv").write_text("\n".join(table[:6]) + "\n")  # 5 rows
    assert (
        train_main(
            ["--data", str(folder_dataset), "--schema", "synthetic", "--out", str(folder_dataset / "run"), "--quiet"]
        )
        == 2
    )
    assert "too little valid data to train: 5 valid row(s)" in capsys.readouterr().err


# ---------------------------------------------------------------- fuzzing predict
FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["F", "M", "PA", "AP", "36.6", "nan", "", " 98 "]),
    st.lists(st.integers(), max_size=3),
    st.binary(max_size=8),
)
RECORDS = st.dictionaries(
    st.one_of(st.sampled_from(list(synthetic.FEATURES)), st.text(max_size=8)),
    FIELD_VALUES,
    max_size=10,
)


def _png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = st.one_of(
    st.none(),
    st.binary(max_size=256),
    st.integers(0, 5).map(_png_bytes),
    st.tuples(st.integers(0, 5), st.integers(1, 300)).map(lambda t: _png_bytes(t[0])[: t[1]]),  # truncated
    st.binary(max_size=64).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    st.binary(max_size=64).map(lambda b: b"\xff\xd8\xff" + b),
    st.binary(max_size=64).map(lambda b: b"\x00" * 128 + b"DICM" + b),
)


@pytest.fixture(scope="module")
def fused_model(tiny_runs):
    return FusionClassifier.load(tiny_runs["fused"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=st.one_of(st.none(), RECORDS), image=IMAGES)
def test_fuzz_predict_gives_a_prediction_or_a_value_error(fused_model, record, image):
    try:
        p = fused_model.predict(record, image)
    except ValueError as err:
        assert str(err)
        return
    values = np.array(list(p.probabilities.values()))
    assert np.isfinite(values).all() and abs(values.sum() - 1) < 1e-6 and p.label in fused_model.classes_


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=st.one_of(st.none(), RECORDS), image=IMAGES)
def test_fuzz_explain_gives_an_explanation_or_a_value_error(fused_model, record, image):
    try:
        e = fused_model.explain(record, image, n_steps=8)
    except ValueError as err:
        assert str(err)
        return
    assert abs(sum(e.modality_share.values()) - 1) < 1e-6
    if e.image_attribution is not None:
        assert np.isfinite(e.image_attribution).all()
    if e.tabular_attribution is not None:
        assert all(np.isfinite(v) for v in e.tabular_attribution.values())


# -------------------------------------------------------------------- odd images
def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    # A 10,000 x 10,000 PNG is ~100 MP but a few hundred kB on disk.
    path = _save(Image.new("L", (10_000, 10_000)), tmp_path / "bomb.png", optimize=True)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="exceeds the limit of 64 megapixels"):
        load_image(path, 64)
    assert time.perf_counter() - start < 2.0


def test_odd_but_valid_images(tmp_path):
    gray = np.random.default_rng(0).integers(0, 255, (60, 50), dtype=np.uint8)
    cmyk = _save(Image.fromarray(gray).convert("CMYK"), tmp_path / "cmyk.jpg")
    assert load_image(cmyk, 32).shape == (32, 32)
    frames = [Image.fromarray(gray), Image.fromarray(255 - gray)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    first = load_image(gif, 32).astype(int)
    assert np.abs(first - load_image(Image.fromarray(gray), 32).astype(int)).mean() < 3  # the first frame
    sixteen = _save(Image.fromarray(gray.astype(np.uint16) * 257), tmp_path / "deep.png")
    assert load_image(sixteen, 32).max() > 200


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: _save(Image.new("L", (1, 1)), p / "dot.png"), "too small"),
        (lambda p: _write(p / "empty.png", b""), "not a readable image"),
        (lambda p: _write(p / "cut.jpg", _jpeg()[:200]), "cut.jpg: not a readable image"),
        (lambda p: _write(p / "cut2.jpg", _jpeg()[:-400]), "cut2.jpg: not a readable image"),
    ],
)
def test_odd_invalid_images(tmp_path, make, match):
    with pytest.raises(ValueError, match=match):
        load_image(make(tmp_path), 32)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


# ------------------------------------------------------------------ issue 10
TABULAR_RUN = ["--modalities", "tabular", "--synthetic-n", "120", "--epochs", "2", "--quiet"]


@pytest.mark.parametrize("where", ["before_progress", "before_unlink"])
def test_interrupt_at_the_end_of_a_run_leaves_a_resumable_or_complete_run(tmp_path, monkeypatch, capsys, where):
    import fusion.training.checkpoint as checkpoint

    out = tmp_path / "run"
    write_json, unlink = checkpoint.write_json, Path.unlink

    def interrupt_progress(path, data):
        if Path(path).name == checkpoint.PROGRESS and data.get("complete"):
            raise KeyboardInterrupt
        write_json(path, data)

    def interrupt_unlink(self, *args, **kwargs):
        if self.name == checkpoint.CHECKPOINT:
            raise KeyboardInterrupt
        unlink(self, *args, **kwargs)

    if where == "before_progress":
        monkeypatch.setattr(checkpoint, "write_json", interrupt_progress)
    else:
        monkeypatch.setattr(Path, "unlink", interrupt_unlink)
    assert train_main([*TABULAR_RUN, "--out", str(out)]) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("interrupted")
    if where == "before_progress":
        assert "rerun the same command with --resume to finish the run" in err
    else:
        assert f"the run in {out} is complete" in err
    if where == "before_progress":
        assert train_main([*TABULAR_RUN, "--out", str(out), "--resume"]) == 0
    else:
        assert train_main([*TABULAR_RUN, "--out", str(out), "--resume"]) == 2
        assert "already complete" in capsys.readouterr().err
    assert json.loads((out / "progress.json").read_text())["complete"] is True
    assert (out / "metrics.json").is_file()
    FusionClassifier.load(out)


def test_run_on_a_folder_with_bad_rows_writes_its_metrics(folder_dataset, tmp_path, capsys):
    """A truncated image, a missing file, a bad age and a duplicated image: the run
    trains on the rest and metrics.json lists every skipped row (as JSON integers)."""
    lines = (folder_dataset / "metadata.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:]]
    images = folder_dataset / "images"
    truncated = images / rows[0][header.index("image")]
    truncated.write_bytes(truncated.read_bytes()[:40])
    (images / rows[1][header.index("image")]).unlink()
    rows[2][header.index("age")] = "abc"
    rows[4][header.index("image")] = rows[3][header.index("image")]
    (folder_dataset / "metadata.csv").write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    out = tmp_path / "run"
    code = train_main(
        [
            "--data",
            str(folder_dataset),
            "--schema",
            "synthetic",
            "--modalities",
            "image,tabular",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--cache-dir",
            "none",
            "--quiet",
        ]
    )
    assert "warning: 4 row(s)" in capsys.readouterr().err  # as the command shows it: one line
    assert code == 0
    skipped = json.loads((out / "metrics.json").read_text())["skipped"]
    reasons = {s["row"]: s["reason"] for s in skipped}
    assert sorted(reasons) == [0, 1, 2, 4] and all(type(s["row"]) is int for s in skipped)
    assert "not a readable image" in reasons[0] and "no such file" in reasons[1]
    assert "'age'" in reasons[2] and "duplicate image" in reasons[4]


def test_too_little_data_names_the_common_cause_not_one_file(folder_dataset, capsys):
    for png in (folder_dataset / "images").iterdir():
        png.unlink()
    assert (
        train_main(
            [
                "--data",
                str(folder_dataset),
                "--schema",
                "synthetic",
                "--out",
                str(folder_dataset.parent / "run"),
                "--cache-dir",
                "none",
                "--quiet",
            ]
        )
        == 2
    )
    assert "most often: 90 x image: no such file" in capsys.readouterr().err


# ------------------------------------------------------------------ issue 21
def _planted_temporaries(folder: Path) -> list[Path]:
    """What interrupted writes leave: atomic_write's temporary file and safetensors' own."""
    planted = [folder / ".model.safetensors.k3j4h5g6.tmp", folder / ".tmpAb12Cd"]
    for path in planted:
        path.write_bytes(b"half a file")
    return planted


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if "tmp" in p.name)


def test_ctrl_c_during_the_final_save_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"

    import fusion.training.run as train

    def save_interrupted(folder, files, version):
        _planted_temporaries(Path(folder))
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "write_files", save_interrupted)
    assert train_main([*TABULAR_RUN, "--out", str(out)]) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err == (
        "interrupted; rerun the same command with --resume to finish the run "
        "(its training is done: the model and metrics.json are written then)\n"
    )
    assert _temporaries(out) == []
    assert train_main([*TABULAR_RUN, "--out", str(out), "--resume"]) == 0
    FusionClassifier.load(out)


@pytest.mark.parametrize(
    "stop, message",
    [
        ("loading", "interrupted before any epoch was saved; rerun the same command to start again"),
        ("epoch 1", "interrupted; rerun the same command with --resume to continue from epoch 2"),
    ],
)
def test_ctrl_c_during_a_run_is_one_line_that_says_how_to_continue(tmp_path, monkeypatch, capsys, stop, message):
    import fusion.training.run as train

    out = tmp_path / "run"
    args = [*TABULAR_RUN, "--epochs", "3", "--out", str(out)]
    if stop == "loading":

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(train, "load_dataset", interrupted)
        assert train_main(args) == 130
        monkeypatch.undo()
    else:
        _interrupt_after(1, args, monkeypatch)
    assert capsys.readouterr().err == message + "\n"
    assert train_main([*args, "--resume"] if stop != "loading" else args) == 0


def test_temporary_files_left_by_a_kill_are_removed_by_resume_and_nothing_else(tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = [*TABULAR_RUN, "--epochs", "3", "--out", str(out)]
    _interrupt_after(1, args, monkeypatch)
    _planted_temporaries(out)
    (out / "plots").mkdir()
    (out / "plots" / ".roc_val.png.abcd_123.tmp").write_bytes(b"half a figure")
    (out / "notes.tmp").write_text("not ours")
    assert train_main([*args, "--resume"]) == 0
    assert _temporaries(out) == [] and (out / "notes.tmp").is_file()


@pytest.mark.parametrize("where", ["checkpoint", "model", "metrics"])
def test_a_full_disk_is_one_sentence_naming_the_folder_and_resume_finishes_the_run(
    tmp_path, monkeypatch, capsys, where
):
    import errno

    import fusion.training.checkpoint as checkpoint
    import fusion.training.run as train

    out = tmp_path / "run"
    args = [*TABULAR_RUN, "--out", str(out)]
    if where == "checkpoint":
        save_file = checkpoint.save_file

        def full(tensors, path, metadata=None):
            if json.loads(metadata["fusion"])["epoch"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            save_file(tensors, path, metadata=metadata)

        monkeypatch.setattr(checkpoint, "save_file", full)
    elif where == "model":

        def full(folder, files, version):
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(folder) / "model.safetensors"))

        monkeypatch.setattr(train, "write_files", full)
    else:
        write_json = train.write_json

        def full(path, data):
            if Path(path).name == "metrics.json":
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            write_json(path, data)

        monkeypatch.setattr(train, "write_json", full)
    assert train_main(args) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err
    then = "continue from epoch 2" if where == "checkpoint" else "finish the run"
    assert err.startswith(
        f"error: no space left on device writing {out}; free space and rerun the same command with --resume to {then}"
    )
    assert len(err.splitlines()) == 1 and _temporaries(out) == []
    assert train_main([*args, "--resume"]) == 0
    FusionClassifier.load(out)


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(run, folder)
    return folder


def _zeroed_weights(data: bytes) -> bytes:
    from safetensors.torch import load, save

    return save({k: v.zero_() for k, v in load(data).items()})


def _booster_cut_to_one_round(data: bytes) -> bytes:
    model = json.loads(data)
    model["learner"]["attributes"]["best_iteration"] = "0"
    return json.dumps(model).encode()


def _json_edit(edit):
    def change(data: bytes) -> bytes:
        content = json.loads(data)
        edit(content)
        return json.dumps(content).encode()

    return change


@pytest.mark.parametrize(
    "run, name, change",
    [
        ("fused", "config.json", _json_edit(lambda c: c.update(classes=["x", "y", "z"]))),
        ("fused", "calibration.json", _json_edit(lambda c: c.update(temperature=c["temperature"] * 5))),
        ("fused", "preprocessing.json", _json_edit(lambda c: c["tabular"]["stats"]["age"].update(mean=500.0))),
        ("fused", "model.safetensors", _zeroed_weights),
        ("xgboost", "xgboost.json", _booster_cut_to_one_round),
    ],
)
def test_a_file_swapped_after_it_was_hashed_is_never_parsed(tiny_runs, tmp_path, swap_after_hashing, run, name, change):
    """The bytes a loader parses are the bytes whose hash was checked: a file replaced
    between the check and the parse (a race an attacker can win) is never read."""
    folder = _copy(tiny_runs[run], tmp_path)
    reference = FusionClassifier.load(folder)
    record, image = synthetic.example(seed=2, image_size=32)
    expected = reference.predict_proba([record], [image] if "image" in reference.modalities_ else None)
    swapped = swap_after_hashing(folder / name, change((folder / name).read_bytes()))
    loaded = FusionClassifier.load(folder)
    assert swapped, "the file was never hashed"
    assert loaded.classes_ == reference.classes_
    got = loaded.predict_proba([record], [image] if "image" in loaded.modalities_ else None)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "run, name",
    [
        ("fused", "config.json"),
        ("fused", "preprocessing.json"),
        ("fused", "calibration.json"),
        ("fused", "schema.toml"),
        ("fused", "model.safetensors"),
        ("image", "calibration.json"),
        ("tabular", "schema.toml"),
        ("xgboost", "xgboost.json"),
        ("xgboost", "calibration.json"),
    ],
)
def test_a_manifest_that_omits_a_file_the_model_needs_is_refused(tiny_runs, tmp_path, rehash, run, name):
    """Whether the file is there (unlisted: never verified, so never read, and never
    silently skipped either: an unlisted calibration.json would change every
    probability) or gone, the load is refused naming it."""
    folder = _copy(tiny_runs[run], tmp_path)
    rehash(folder, drop=(name,))
    with pytest.raises(
        ValueError,
        match=rf"{re.escape(name)}.*manifest\.json does not list|manifest\.json does not list {re.escape(name)}",
    ):
        FusionClassifier.load(folder)
    (folder / name).unlink()
    with pytest.raises(ValueError, match=rf"manifest\.json does not list {re.escape(name)}"):
        FusionClassifier.load(folder)


def test_a_model_file_of_another_model_is_refused_listed_or_not(tiny_runs, tmp_path, rehash):
    """A stale xgboost.json in a network's folder: it says the folder is something it
    is not, whether the manifest vouches for it or not."""
    import shutil

    folder = _copy(tiny_runs["fused"], tmp_path)
    shutil.copy(tiny_runs["xgboost"] / "xgboost.json", folder)
    with pytest.raises(ValueError, match=r"holds xgboost\.json, which manifest\.json does not list"):
        FusionClassifier.load(folder)
    rehash(folder, add=("xgboost.json",))
    with pytest.raises(ValueError, match=r"manifest\.json lists xgboost\.json, which a joint model does not use"):
        FusionClassifier.load(folder)


def _set(*path_and_value):
    *path, key, value = path_and_value

    def edit(content):
        for part in path:
            content = content[part]
        if value is _DELETE:
            del content[key]
        else:
            content[key] = value

    return edit


_DELETE = object()

HAND_EDITS = [
    ("preprocessing.json", _set("image", "size", 0), r"preprocessing\.json: image\.size"),
    ("preprocessing.json", _set("image", "size", 100_000), r"preprocessing\.json: image\.size"),
    (
        "preprocessing.json",
        _set("image", "size", 48),
        r"preprocessing\.json: image\.size 48 .*config\.image\.image_size 32",
    ),
    ("preprocessing.json", _set("image", "std", -1), r"preprocessing\.json: image\.std"),
    ("preprocessing.json", _set("image", "colour", 1), r"preprocessing\.json: image has unknown key"),
    ("preprocessing.json", _set("tabular", "stats", "age", "std", 0), r"preprocessing\.json: tabular\.stats\.age\.std"),
    (
        "preprocessing.json",
        _set("tabular", "stats", "age", "mean", "old"),
        r"preprocessing\.json: tabular\.stats\.age\.mean",
    ),
    (
        "preprocessing.json",
        _set("tabular", "stats", "sex", {"mode": "F"}),
        r"preprocessing\.json: tabular\.stats.*'sex'",
    ),
    ("preprocessing.json", _set("tabular", "stats", "age", _DELETE), r"preprocessing\.json: tabular\.stats.*age"),
    ("preprocessing.json", _set("tabular", _DELETE), r"preprocessing\.json: tabular"),
    ("config.json", _set("config", "image", "image_size", 100_000), r"config\.json: config\.image\.image_size"),
    ("config.json", _set("config", "tabular", "hidden", [1_000_000_000]), r"config\.json: config\.tabular\.hidden"),
    ("config.json", _set("config", "tabular", "hidden", "64"), r"config\.json: config\.tabular\.hidden"),
    ("config.json", _set("config", "head", "hidden", 0), r"config\.json: config\.head\.hidden"),
    ("config.json", _set("config", "train", "lr", "fast"), r"config\.json: config\.train\.lr"),
    ("config.json", _set("config", "train", "epochs", 2.5), r"config\.json: config\.train\.epochs"),
    ("config.json", _set("config", "head", "dropout", 1.5), r"config\.json: config\.head\.dropout"),
    ("config.json", _set("config", "image", "augment", "yes"), r"config\.json: config\.image\.augment"),
    ("config.json", _set("config", "modalities", ["image", "tabular", "audio"]), r"config\.json: config\.modalities"),
    ("config.json", _set("classes", ["normal", "normal", "covid"]), r"config\.json: classes .*'normal' twice"),
    ("config.json", _set("classes", [1, 2, 3]), r"config\.json: classes"),
    ("config.json", _set("classes", _DELETE), r"config\.json: classes"),
    ("config.json", _set("modalities", ["image", "tabular", "audio"]), r"config\.json: modalities"),
    ("config.json", _set("modalities", ["image"]), r"config\.json: modalities"),
    ("config.json", _set("backend", "quantum"), r"config\.json: backend"),
    ("config.json", _set("backend", "xgboost"), r"config\.json: backend"),
    ("config.json", _set("extra", 1), r"config\.json has unknown key"),
    ("calibration.json", _set("temperature", -1.0), r"calibration\.json: temperature"),
    ("calibration.json", _set("temperature", 0), r"calibration\.json: temperature"),
    ("calibration.json", _set("temperature", "hot"), r"calibration\.json: temperature"),
    ("calibration.json", _set("method", "magic"), r"calibration\.json: method"),
    ("calibration.json", _set("thresholds", "covid", -0.5), r"calibration\.json: thresholds\.covid"),
    ("calibration.json", _set("thresholds", "covid", 1.5), r"calibration\.json: thresholds\.covid"),
    ("calibration.json", _set("thresholds", "martian", 0.5), r"calibration\.json: thresholds.*'martian'"),
    ("calibration.json", _set("target_sensitivity", 2), r"calibration\.json: target_sensitivity"),
    ("calibration.json", _set("scale", [-1.0, 1.0, 1.0]), r"calibration\.json: scale"),
    ("calibration.json", _set("colour", 1), r"calibration\.json has unknown key"),
]


@pytest.mark.parametrize("name, edit, match", HAND_EDITS, ids=[m for _, _, m in HAND_EDITS])
def test_a_hand_edited_model_folder_is_refused_naming_file_and_key(tiny_runs, tmp_path, rehash, name, edit, match):
    """Hashes updated, so only the values themselves can tell: each is checked on load
    (types, ranges, unique classes, known modalities, positive temperature) before
    anything is built from it, and a ValueError names the file and the key."""
    folder = _copy(tiny_runs["fused"], tmp_path)
    content = json.loads((folder / name).read_text())
    edit(content)
    (folder / name).write_text(json.dumps(content))
    rehash(folder)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        FusionClassifier.load(folder)
    assert time.perf_counter() - start < 5  # refused before allocating anything


def test_vector_calibration_needs_one_positive_scale_per_class(tiny_runs, tmp_path, rehash):
    folder = _copy(tiny_runs["fused"], tmp_path)
    calibration = json.loads((folder / "calibration.json").read_text())
    good = {**calibration, "method": "vector", "scale": [1.0, 2.0, 0.5], "shift": [0.0, 0.1, -0.1]}
    for bad, match in (
        ({"scale": [1.0, -2.0, 0.5]}, r"scale\[1\]"),
        ({"scale": [1.0, 2.0]}, r"scale must hold 3"),
        ({"shift": [0.0, "x", 0.0]}, r"shift\[1\]"),
    ):
        (folder / "calibration.json").write_text(json.dumps({**good, **bad}))
        rehash(folder)
        with pytest.raises(ValueError, match=rf"calibration\.json: {match}"):
            FusionClassifier.load(folder)
    (folder / "calibration.json").write_text(json.dumps(good))
    rehash(folder)
    assert FusionClassifier.load(folder).calibration_.method == "vector"


@pytest.mark.parametrize(
    "name, change, match",
    [
        (
            "config.json",
            lambda t: t.replace('"classes"', '"classes": [], "classes"', 1),
            "key 'classes' appears more than once",
        ),
        ("calibration.json", lambda t: t.replace('"temperature": ', '"temperature": NaN, "x": ', 1), "NaN"),
        ("config.json", lambda t: "\ufeff" + t, "not valid JSON"),
        ("config.json", lambda t: "[" * 100_000 + "]" * 100_000, "nested too deeply|must be a JSON object"),
    ],
)
def test_model_json_is_parsed_strictly(tiny_runs, tmp_path, rehash, name, change, match):
    folder = _copy(tiny_runs["fused"], tmp_path)
    (folder / name).write_text(change((folder / name).read_text()))
    rehash(folder)
    with pytest.raises(ValueError, match=rf"{re.escape(name)}.*({match})"):
        FusionClassifier.load(folder)


def test_a_manifest_without_schema_names_it_for_a_record_model(tiny_runs, tmp_path, rehash):
    """Once an AttributeError: a tabular model whose manifest leaves schema.toml out."""
    folder = _copy(tiny_runs["tabular"], tmp_path)
    rehash(folder, drop=("schema.toml",))
    (folder / "schema.toml").unlink()
    with pytest.raises(ValueError, match=r"manifest\.json does not list schema\.toml"):
        FusionClassifier.load(folder)


def test_booster_state_is_checked_against_the_classes_and_columns(tiny_runs, tmp_path, rehash):
    folder = _copy(tiny_runs["xgboost"], tmp_path)
    model = json.loads((folder / "xgboost.json").read_text())
    model["learner"]["attributes"]["n_classes"] = "5"
    (folder / "xgboost.json").write_text(json.dumps(model))
    rehash(folder)
    with pytest.raises(ValueError, match=r"xgboost\.json: .*n_classes.*5.*3 classes"):
        FusionClassifier.load(folder)
    (folder / "xgboost.json").write_bytes(b"\x00garbage")
    rehash(folder)
    with pytest.raises(ValueError, match=r"xgboost\.json: not a valid XGBoost model"):
        FusionClassifier.load(folder)


# ------------------------------------------------------------------ issue 21, item 9
def _dataset_pointing_outside(folder: Path, tmp_path: Path) -> list[str]:
    """Rows 0-3 of the folder's table point at files outside it: climbing, absolute, a
    PNG beside the dataset (a film that must not be trained on) and a symlink to it."""
    import pandas as pd

    outside = tmp_path / "outside.png"
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(outside)
    (folder / "images" / "link.png").symlink_to(outside)
    targets = ["../../../../../../../../etc/passwd", "/etc/hostname", "../../outside.png", "link.png"]
    table = pd.read_csv(folder / "metadata.csv", dtype=str, keep_default_na=False)
    table.loc[: len(targets) - 1, "image"] = targets
    table.to_csv(folder / "metadata.csv", index=False)
    return targets


@pytest.fixture
def opened_images(monkeypatch):
    """Every dataset file the loaders open, resolved (the loaders are the only place a
    dataset's films are opened; train, eda and evaluate all go through them)."""
    import fusion.data.loaders as loaders

    opened, real = [], loaders.load_image
    monkeypatch.setattr(
        loaders, "load_image", lambda path, size: opened.append(Path(path).resolve()) or real(path, size)
    )
    return opened


def _only_inside(opened: list[Path], folder: Path) -> bool:
    return bool(opened) and all(p.is_relative_to(folder.resolve()) for p in opened)


def test_train_never_reads_an_image_outside_the_dataset_folder(
    folder_dataset, tmp_path, opened_images, monkeypatch, capsys
):
    import fusion.training.run

    targets = _dataset_pointing_outside(folder_dataset, tmp_path)
    seen = {}

    def stop_after_loading(ds):  # what train would train on; the training itself is not the point
        seen["ds"] = ds
        raise ValueError("stopped after loading")

    monkeypatch.setattr(fusion.training.run, "check_enough_data", stop_after_loading)
    flags = ["--data", str(folder_dataset), "--schema", "synthetic", "--image-size", "24", "--quiet"]
    assert train_main([*flags, "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "run")]) == 2
    assert re.search(r"^warning: .*4 row.* outside the dataset folder", capsys.readouterr().err, flags=re.M)
    assert _only_inside(opened_images, folder_dataset)
    skipped = {s["file"]: s["reason"] for s in seen["ds"].skipped}
    assert set(skipped) == set(targets) and all("outside the dataset folder" in r for r in skipped.values())


def test_eda_never_reads_an_image_outside_the_dataset_folder(
    folder_dataset, tmp_path, opened_images, monkeypatch, capsys
):
    import fusion.eda.report
    from fusion.eda import main as eda_main

    targets = _dataset_pointing_outside(folder_dataset, tmp_path)
    seen = {}

    def stop_after_loading(parts, ds):  # the first section: what eda analyses; the figures are not the point
        seen["ds"] = ds
        raise ValueError("stopped after loading")

    monkeypatch.setattr(fusion.eda.report, "add_class_balance", stop_after_loading)
    assert eda_main(["--data", str(folder_dataset), "--schema", "synthetic", "--out", str(tmp_path / "eda")]) == 2
    assert re.search(r"^warning: .*4 row.* outside the dataset folder", capsys.readouterr().err, flags=re.M)
    assert _only_inside(opened_images, folder_dataset)
    skipped = {s["file"]: s["reason"] for s in seen["ds"].skipped}
    assert set(skipped) == set(targets) and all("outside the dataset folder" in r for r in skipped.values())


def test_evaluate_never_reads_an_image_outside_the_dataset_folder(
    tiny_runs, folder_dataset, tmp_path, opened_images, capsys
):
    from fusion.evaluate import main as evaluate_main

    _dataset_pointing_outside(folder_dataset, tmp_path)
    run = ["--model", str(tiny_runs["fused"]), "--data", str(folder_dataset), "--cache-dir", str(tmp_path / "c")]
    assert evaluate_main(run) == 0
    out, err = capsys.readouterr()
    assert re.search(r"^warning: .*4 row.* outside the dataset folder", err, flags=re.M)
    assert "4 row(s) not scored" in out and "outside the dataset folder" in out
    assert _only_inside(opened_images, folder_dataset)


# ------------------------------------------------------------------ --record, hostile
def _fifo(tmp_path):
    path = tmp_path / "record.fifo"
    os.mkfifo(path)
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: Path("/dev/zero"), "not a regular file"),
        (_fifo, "not a regular file"),
        (lambda tmp: tmp, "is a folder"),
    ],
    ids=["dev-zero", "fifo", "folder"],
)
def test_a_record_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path, make, message):
    from fusion.predict import read_record

    path = make(tmp_path)
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    link = tmp_path / "link.json"
    link.symlink_to(path)
    for name in (path, link):  # a symlink to one is the same thing
        started = time.monotonic()
        with pytest.raises(ValueError, match=message):
            read_record(str(name))
        assert time.monotonic() - started < 5  # neither read until memory runs out nor blocked on the FIFO


def test_a_huge_or_deep_record_is_refused_with_a_sentence(tiny_runs, tmp_path, capsys):
    from fusion.predict import main as predict_main

    deep = tmp_path / "deep.json"
    deep.write_text('{"age": ' + "[" * 100_000 + "]" * 100_000 + "}")
    huge = tmp_path / "huge.json"
    huge.write_bytes(b'{"age": 61, "note": "' + b"x" * (1 << 20) + b'"}')
    inline_deep = '{"age": ' + "[" * 30_000 + "]" * 30_000 + "}"
    for record, message in ((deep, "bytes"), (huge, "bytes"), (inline_deep, "nested")):
        code = predict_main(["--model", str(tiny_runs["tabular"]), "--record", str(record)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err and len(err) < 400


def test_a_record_with_a_repeated_key_is_refused_on_the_command_line(tiny_runs, capsys):
    from fusion.predict import main as predict_main

    code = predict_main(["--model", str(tiny_runs["tabular"]), "--record", '{"age": 61, "age": 30}'])
    assert code == 2 and "the key 'age' more than once" in capsys.readouterr().err
