"""The run pipeline as a library (fusion.training.run): it returns what it made, logs
instead of printing, and says what went wrong in types that carry the folder, never
in a command's flags (the CLI's own wording is tested in test_reliability.py)."""

from __future__ import annotations

import copy
import json
import logging

import pytest

from fusion.config import Config
from fusion.training import run as pipeline
from fusion.training.run import (
    DanglingFolderLink,
    FolderInUse,
    FolderState,
    NoRunToResume,
    RunFolderError,
    RunInterrupted,
    RunResult,
    prepare_folder,
    run,
)


def _tiny() -> Config:
    cfg = Config(modalities="tabular")
    cfg.data.synthetic_n, cfg.train.epochs = 90, 1
    return cfg.validate()


def test_run_returns_what_it_made_and_prints_nothing(tmp_path, capsys, caplog):
    logger = logging.getLogger("fusion")
    logger.addHandler(caplog.handler)  # in case a CLI run earlier left it not propagating
    try:
        with caplog.at_level(logging.INFO, logger="fusion"):
            result = run(_tiny(), tmp_path / "run")
    finally:
        logger.removeHandler(caplog.handler)
    assert isinstance(result, RunResult) and result.folder == tmp_path / "run"
    assert result.metrics == json.loads((result.folder / "metrics.json").read_text())
    assert result.classifier.classes_ == tuple(result.metrics["classes"])
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("data: synthetic (90 rows; train ") for line in lines)
    assert "model: fusion, modalities tabular" in lines and any(line.startswith("epoch   1/1") for line in lines)


def _no_flag(message: str) -> bool:
    return "--" not in message


def test_a_folder_in_use_is_refused_saying_whether_it_can_be_resumed(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(FolderInUse) as err:
        prepare_folder(folder)
    assert err.value.folder == folder and not err.value.resumable and _no_flag(str(err.value))
    (folder / "progress.json").write_text(json.dumps({"epoch": 2, "complete": False}))
    with pytest.raises(FolderInUse, match="or resume the interrupted run in it") as err:
        prepare_folder(folder)
    assert err.value.resumable and isinstance(err.value, ValueError)


def test_a_resume_without_an_interrupted_run_is_refused(tmp_path):
    with pytest.raises(NoRunToResume, match="holds no interrupted run") as err:
        prepare_folder(tmp_path, resume=True)
    assert not err.value.complete and _no_flag(str(err.value))
    (tmp_path / "progress.json").write_text(json.dumps({"epoch": 2, "complete": True}))
    with pytest.raises(NoRunToResume, match="already complete") as err:
        prepare_folder(tmp_path, resume=True)
    assert err.value.complete
    with pytest.raises(ValueError, match="resume needs out"):
        prepare_folder(None, resume=True)


def test_a_dangling_link_is_refused_naming_its_target(tmp_path):
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(DanglingFolderLink) as err:
        prepare_folder(link)
    assert err.value.target == str(tmp_path / "nowhere") and _no_flag(str(err.value))


@pytest.mark.parametrize(
    "err",
    [
        FolderInUse("m", None, resumable=True),
        NoRunToResume("m", None, complete=True),
        DanglingFolderLink("m", None, target="t"),
    ],
)
def test_a_folder_error_is_rebuilt_whole_from_its_arguments(err, tmp_path):
    """Rank 0 sends a refused folder's error to the other processes (distributed.on_main):
    it must come back with its type, folder and details."""
    err.folder = tmp_path
    again = copy.copy(err)  # rebuilt as a message between processes is: type(err)(*args), then its state
    assert type(again) is type(err) and isinstance(again, RunFolderError)
    assert str(again) == "m" and again.__dict__ == err.__dict__


def test_an_interrupted_run_says_what_its_folder_holds(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "load_dataset", interrupted)
    with pytest.raises(RunInterrupted) as err:
        run(_tiny(), tmp_path / "run")
    assert err.value.state == FolderState(tmp_path / "run", empty=True)
    assert str(err.value) == "interrupted before any epoch was saved; start the run again"


@pytest.mark.parametrize(
    "state, sentence",
    [
        (FolderState("r", complete=True, empty=False), "the run in r is complete"),
        (FolderState("r", empty=False), "nothing in r can be resumed: free space and start the run in a new folder"),
        (FolderState("r", next_epoch=3, empty=False), "free space and resume the run in r to continue from epoch 3"),
        (FolderState("r", next_epoch=3, trained=True, empty=False), "resume the run in r to finish it"),
    ],
)
def test_a_stopped_run_says_how_to_go_on_without_a_flag(state, sentence):
    said = state.sentence("no space left on device writing r", free_space=True)
    assert sentence in said and _no_flag(said)
