"""What the commands print: warnings as one line each, ``-q`` and ``-v``, and what a run
folder records of the command that made it."""

from __future__ import annotations

import json
import logging
import warnings

import pandas as pd
import pytest

from fusion.__main__ import main as fusion
from fusion.cli import NORMAL, QUIET, VERBOSE, command_line, log_to_terminal
from fusion.train import main as train

XGB = ["--modalities", "tabular", "--model", "xgboost", "--synthetic-n", "90"]


def test_a_warning_is_one_line_without_the_source_line(capsys):
    with log_to_terminal(NORMAL):
        warnings.warn("12 row(s) skipped;\n   see metrics.json", stacklevel=1)
    err = capsys.readouterr().err
    assert err == "warning: 12 row(s) skipped; see metrics.json\n"


def test_verbose_warnings_say_where_they_come_from(capsys):
    with log_to_terminal(VERBOSE):
        warnings.warn("something odd", stacklevel=1)
    err = capsys.readouterr().err
    assert err.startswith("warning: something odd (UserWarning at ") and __file__ in err
    assert err.count("\n") == 1


def test_the_warning_display_and_the_logger_are_restored(capsys):
    before = warnings.showwarning
    logger = logging.getLogger("fusion")
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    with log_to_terminal(QUIET):
        logging.getLogger("fusion.training").info("progress")
        logging.getLogger("fusion.training").warning("a logged warning")
    assert warnings.showwarning is before
    assert (logger.handlers, logger.level, logger.propagate) == (handlers, level, propagate)
    out, err = capsys.readouterr()
    assert "progress" not in out + err
    assert err == "warning: a logged warning\n"


def test_log_to_terminal_refuses_a_bool():
    with pytest.raises(TypeError, match="QUIET, NORMAL or VERBOSE"), log_to_terminal(True):
        pass


def test_quiet_train_prints_only_the_closing_line(tmp_path, capsys):
    assert train([*XGB, "--out", str(tmp_path / "run"), "-q"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("done in ")


def test_default_train_prints_progress_and_tables(tmp_path, capsys):
    assert train([*XGB, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "model: xgboost" in out and "-- test (" in out and out.rstrip().splitlines()[-1].startswith("done in ")
    assert "settings: {" not in out


def test_quiet_and_verbose_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        train([*XGB, "-q", "-v"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_verbose_error_shows_the_traceback(tmp_path, capsys):
    assert train([*XGB, "--data", str(tmp_path / "absent"), "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith("error: ")
    assert train([*XGB, "--data", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1


def test_skipped_rows_are_one_warning_line(folder_dataset, tmp_path, capsys):
    table = pd.read_csv(folder_dataset / "metadata.csv")
    table.loc[0, "image"] = "missing.png"
    table.to_csv(folder_dataset / "metadata.csv", index=False)
    args = ["--data", str(folder_dataset), "--schema", "synthetic", "--modalities", "image,tabular"]
    assert train([*args, "--image-size", "32", "--epochs", "1", "--out", str(tmp_path / "run"), "-q"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "skipped" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: 1 row(s) of cohort skipped")
    assert "run(cfg" not in err and "UserWarning" not in err


def test_the_run_records_its_command_and_versions(tmp_path):
    out = tmp_path / "run"
    assert fusion(["train", *XGB, "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"] == command_line("fusion train", [*XGB, "--out", str(out), "--quiet"])
    assert metrics["command"].startswith("fusion train --modalities tabular")
    versions = metrics["environment"]["versions"]
    assert {"python", "fusion", "torch", "numpy", "scikit-learn", "xgboost"} <= set(versions)
    assert all(isinstance(v, str) and v for v in versions.values())
    machine = metrics["environment"]["machine"]
    assert isinstance(machine["bf16"], bool) and machine["cpu_capability"] and machine["cores"] >= 1
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Reproduce" in card and metrics["command"] in card and f"torch {versions['torch']}" in card


def test_command_line_quotes_what_a_shell_would_split():
    assert command_line("python -m fusion.train", ["--data", "my films/x"]) == (
        "python -m fusion.train --data 'my films/x'"
    )


@pytest.mark.parametrize("tool", ["evaluate", "predict", "eda", "export", "compare"])
def test_every_tool_takes_quiet_and_verbose(tool, capsys):
    with pytest.raises(SystemExit) as exit_:
        fusion([tool, "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert "-v, --verbose" in help_text and "-q, --quiet" in help_text


def test_schema_draft_takes_quiet_and_verbose(capsys):
    with pytest.raises(SystemExit):
        fusion(["schema", "draft", "--help"])
    assert "-q, --quiet" in capsys.readouterr().out


def test_verbose_train_adds_debug_lines(tmp_path, capsys):
    assert train([*XGB, "--out", str(tmp_path / "run"), "-v"]) == 0
    out = capsys.readouterr().out
    assert "settings: {" in out and "environment: {" in out and "groups (patients) per split" in out
