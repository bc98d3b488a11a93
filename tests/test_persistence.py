"""Model-folder writing: one JSON encoding for everything the library writes."""

import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusion.persistence import atomic_write, atomic_write_text, to_json, write_json


def test_numpy_and_pandas_values_are_written_as_plain_json(tmp_path):
    index = pd.Index([3, 7])
    data = {
        "row": index[0],
        "f": np.float32(0.5),
        "flag": np.bool_(True),
        "counts": np.array([1, 2]),
        "path": Path("a/b"),
        "classes": {"b", "a"},
    }
    write_json(tmp_path / "x.json", data)
    back = json.loads((tmp_path / "x.json").read_text())
    assert back == {"row": 3, "f": 0.5, "flag": True, "counts": [1, 2], "path": "a/b", "classes": ["a", "b"]}
    assert type(back["row"]) is int


def test_nan_is_refused_in_files_users_read_and_kept_where_only_fusion_reads():
    with pytest.raises(ValueError):
        to_json({"loss": math.inf})
    assert json.loads(to_json({"loss": math.inf}, allow_nan=True))["loss"] == math.inf


def test_unknown_objects_are_refused_by_name():
    with pytest.raises(TypeError, match="cannot write a object as JSON"):
        to_json({"x": object()})


# ------------------------------------------------------------------ issue 21
@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask_027):
    """Not the 0600 of a temporary file: a model shared with the group must be readable."""
    atomic_write_text(tmp_path / "a.txt", "x")
    write_json(tmp_path / "b.json", {"a": 1})
    atomic_write(tmp_path / "c.bin", lambda tmp: tmp.write_bytes(b"\x00"))
    for name in ("a.txt", "b.json", "c.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _loop(path: Path) -> Path:
    os.symlink(path.name, path)
    return path


def _two_link_loop(path: Path) -> Path:
    os.symlink("b", path.parent / "a")
    os.symlink("a", path.parent / "b")
    return path.parent / "a"


def _file(path: Path) -> Path:
    path.write_text("{}")
    return path


def _dangling(path: Path) -> Path:
    os.symlink("nowhere", path)
    return path


@pytest.mark.parametrize(
    "make, error, match",
    [
        (_loop, ValueError, r"is a symlink loop, not a folder"),
        (_two_link_loop, ValueError, r"is a symlink loop, not a folder"),
        (_file, ValueError, r"is a file, not a folder"),
        (_fifo, ValueError, r"is a FIFO \(named pipe\), not a folder"),
        (_dangling, FileNotFoundError, r"is a symlink to 'nowhere', which does not exist"),
        (lambda p: p, FileNotFoundError, r"does not exist"),
        (lambda p: _file(p) / "x", FileNotFoundError, r"does not exist \(.*model' is a file\)"),
    ],
)
def test_an_odd_model_path_is_named_for_what_it_is(tmp_path, make, error, match):
    from fusion import FusionClassifier

    path = make(tmp_path / "model")
    with pytest.raises(error, match=match):
        FusionClassifier.load(path)


def _folder_with_manifest(tmp_path: Path, manifest) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (folder / "manifest.json").write_text(text)
    return folder


GOOD_HASH = "0" * 64


@pytest.mark.parametrize(
    "manifest, match",
    [
        ({"format_version": "2", "fusion_version": "0.1.0", "sha256": {"config.json": GOOD_HASH}}, "format_version"),
        ({"format_version": True, "fusion_version": "0.1.0", "sha256": {"config.json": GOOD_HASH}}, "format_version"),
        ({"format_version": 0, "fusion_version": "0.1.0", "sha256": {"config.json": GOOD_HASH}}, "format_version"),
        ({"format_version": 1, "fusion_version": "0.1.0", "sha256": []}, "sha256 must be an object"),
        ({"format_version": 1, "fusion_version": "0.1.0", "sha256": {}}, "sha256 lists no file"),
        ({"format_version": 1, "fusion_version": "0.1.0", "sha256": {"config.json": 5}}, r"sha256\.config\.json"),
        ({"format_version": 1, "fusion_version": "0.1.0", "sha256": {"config.json": "ab"}}, r"sha256\.config\.json"),
        ({"format_version": 1, "fusion_version": "0.1.0", "sha256": {"..": GOOD_HASH}}, "not a file of the folder"),
        ({"format_version": 1, "fusion_version": "0.1.0", "sha256": {"a/b": GOOD_HASH}}, "not a file of the folder"),
        ({"format_version": 1, "fusion_version": "0.1.0", "sha256": {"manifest.json": GOOD_HASH}}, "itself"),
        ({"format_version": 1, "fusion_version": 3, "sha256": {"config.json": GOOD_HASH}}, "fusion_version"),
        ({"fusion_version": "0.1.0", "sha256": {"config.json": GOOD_HASH}}, "format_version"),
        ({"format_version": 1, "fusion_version": "0.1.0"}, "sha256"),
        ({"format_version": 1, "fusion_version": "0.1.0", "sha256": {"config.json": GOOD_HASH}, "x": 1}, "unknown"),
        ([], "must be a JSON object"),
        ("{not json", "not valid JSON"),
        ('{"format_version": 1, "format_version": 1}', "key 'format_version' appears more than once"),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_key(tmp_path, manifest, match):
    """Hand-edited manifests: a wrong type is a ValueError naming manifest.json and the
    key, never an AttributeError or a comparison TypeError; an empty table verifies
    nothing and is refused."""
    from fusion.persistence import verify_folder

    with pytest.raises(ValueError, match=rf"manifest\.json.*{match}"):
        verify_folder(_folder_with_manifest(tmp_path, manifest))


def test_a_newer_format_asks_for_an_upgrade(tmp_path):
    from fusion.persistence import verify_folder

    manifest = {"format_version": 99, "fusion_version": "9.0", "sha256": {"config.json": GOOD_HASH}}
    with pytest.raises(ValueError, match="upgrade fusion"):
        verify_folder(_folder_with_manifest(tmp_path, manifest))


def test_a_listed_file_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    from fusion.persistence import verify_folder, write_manifest

    folder = _folder_with_manifest(tmp_path, "{}")
    write_manifest(folder, ["config.json"], "0.1.0")
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")  # opening it for reading would wait for a writer
    with pytest.raises(ValueError, match=r"config\.json is a FIFO \(named pipe\), not a file"):
        verify_folder(folder)


def test_verified_bytes_are_the_hashed_bytes(tmp_path, swap_after_hashing):
    """What a loader parses is what was hashed, even when the file is replaced the
    instant after its hash was taken."""
    from fusion.persistence import verify_folder, write_manifest

    folder = _folder_with_manifest(tmp_path, "{}")
    (folder / "config.json").write_text('{"classes": ["a", "b"]}')
    write_manifest(folder, ["config.json"], "0.1.0")
    swapped = swap_after_hashing(folder / "config.json", b'{"classes": ["evil"]}')
    files = verify_folder(folder)
    assert swapped and (folder / "config.json").read_bytes() == b'{"classes": ["evil"]}'
    assert files.json("config.json") == {"classes": ["a", "b"]}


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two renames"])
def test_write_folder_replaces_a_model_folder_whole(tmp_path, monkeypatch, exchange):
    from fusion import persistence
    from fusion.persistence import verify_folder, write_folder

    if not exchange:  # a system without renameat2(RENAME_EXCHANGE)
        monkeypatch.setattr(persistence, "_exchange", lambda a, b: False)
    folder = tmp_path / "m"
    write_folder(folder, {"config.json": b"{}", "old.bin": b"old"}, "0.1.0")
    (folder / "notes.txt").write_text("about the old model")
    with pytest.raises(ValueError, match="is not empty"):
        write_folder(folder, {"config.json": b'{"new": 1}'}, "0.1.0")
    write_folder(folder, {"config.json": b'{"new": 1}'}, "0.1.0", overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "manifest.json"]
    assert verify_folder(folder).json("config.json") == {"new": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_write_files_keeps_the_callers_files_and_writes_the_manifest_last(tmp_path, monkeypatch):
    """A training run's folder: its progress stays; an interrupted write leaves no
    manifest, so no half-written model can be loaded."""
    from fusion import persistence
    from fusion.persistence import verify_folder, write_files

    run = tmp_path / "run"
    run.mkdir()
    (run / "progress.json").write_text('{"epoch": 3}')
    write_files(run, {"config.json": b"{}", "model.bin": b"1"}, "0.1.0")
    assert verify_folder(run).listed == {"config.json", "model.bin"}
    write, calls = persistence.atomic_write, []

    def interrupted(path, writer):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        write(path, writer)

    monkeypatch.setattr(persistence, "atomic_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_files(run, {"config.json": b'{"a": 1}', "model.bin": b"2"}, "0.1.0")
    assert not (run / "manifest.json").exists() and (run / "progress.json").read_text() == '{"epoch": 3}'
    assert not list(run.glob(".*.tmp"))
