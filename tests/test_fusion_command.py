"""The ``fusion`` command: the subcommand list, dispatch to each tool's own ``main``."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fusion.__main__ import SUBCOMMANDS, main
from fusion.version import __version__

ROOT = Path(__file__).parents[1]
EXPECTED = ["train", "predict", "evaluate", "eda", "schema", "serve", "export", "compare"]


def test_help_lists_every_subcommand_with_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert listed == EXPECTED == list(SUBCOMMANDS)


def test_no_subcommand_prints_the_list_and_exits_2(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().err


def test_unknown_subcommand_exits_2_naming_the_accepted_ones(capsys):
    assert main(["trian", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "'trian'" in err
    assert "train, predict, evaluate, eda, schema, serve, export, compare" in err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fusion {__version__}"


@pytest.mark.parametrize(
    ("sub", "usage"),
    [
        ("train", "--modalities"),
        ("evaluate", "--model MODEL"),
        ("predict", "--model"),
        ("eda", "--data DATA"),
        ("serve", "--port"),
        ("export", "--onnx"),
        ("compare", "RUN [RUN ...]"),
    ],
)
def test_subcommand_help_is_the_tool_own_help(sub, usage, capsys):
    with pytest.raises(SystemExit) as done:
        main([sub, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: fusion {sub} ")  # the command typed, not `python -m fusion.{sub}`
    assert usage in out


def test_subcommand_errors_are_the_tool_own(capsys):
    with pytest.raises(SystemExit) as done:
        main(["evaluate"])  # --model is required
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "fusion evaluate: error:" in err
    assert "--model" in err


@pytest.mark.parametrize("module", ["fusion.train", "fusion.evaluate"])
def test_python_dash_m_entry_points_keep_their_own_name(module, capsys):
    main_of = __import__(module, fromlist=["main"]).main
    with pytest.raises(SystemExit):
        main_of(["--help"])
    assert capsys.readouterr().out.startswith(f"usage: python -m {module} ")


def test_train_writes_a_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--modalities", "tabular", "--model", "xgboost", "--synthetic-n", "90", "--out", str(out), "--quiet"]
    assert main(["train", *args]) == 0
    assert "run saved to" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["macro_f1"] >= 0


def test_schema_dispatch_works_or_says_it_is_missing(capsys):
    """``fusion schema`` reaches ``fusion.schema``'s own command when this version has one,
    and otherwise says so in one line (exit 2) instead of a traceback."""
    try:
        code = main(["schema", "--help"])
    except SystemExit as done:
        code = done.code
    captured = capsys.readouterr()
    if code == 2:
        assert "`fusion schema` is not available" in captured.err
    else:
        assert code == 0
        assert "usage:" in captured.out


def test_a_tool_without_main_runs_as_python_dash_m_would(tmp_path, monkeypatch, capsys):
    """A subcommand module that is only a script (no ``main``) runs as ``python -m`` runs
    it: ``sys.argv`` set for it, restored after, its exit status returned."""
    package = tmp_path / "fake_tool"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        "import sys\n\nif __name__ == '__main__':\n    print(sys.argv[1:])\n    sys.exit(3)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(SUBCOMMANDS, "fake", SUBCOMMANDS["schema"]._replace(module="fake_tool.__main__"))
    argv = list(sys.argv)
    assert main(["fake", "--x", "1"]) == 3
    assert capsys.readouterr().out.strip() == "['--x', '1']"
    assert sys.argv == argv


def test_python_dash_m_fusion_help():
    done = subprocess.run(
        [sys.executable, "-m", "fusion", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "subcommands:" in done.stdout
    assert "evaluate" in done.stdout


def _config_of(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["config"]


def test_train_config_file_and_flags_that_override_it(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('modalities = ["tabular"]\nmodel = "xgboost"\n[data]\nsynthetic_n = 90\n[train]\nseed = 3\n')
    first = tmp_path / "first"
    assert main(["train", "--config", str(toml), "--out", str(first), "--quiet"]) == 0
    saved = _config_of(first)
    assert (saved["model"], saved["modalities"], saved["data"]["synthetic_n"], saved["train"]["seed"]) == (
        "xgboost",
        ["tabular"],
        90,
        3,
    )
    # A run repeated from its config.json, with one flag typed over it; --seed given its
    # default still overrides the file's 3.
    again = tmp_path / "again"
    args = ["--config", str(first / "config.json"), "--synthetic-n", "120", "--seed", "0", "--out", str(again)]
    assert main(["train", *args, "--quiet"]) == 0
    repeated = _config_of(again)
    assert repeated["data"]["synthetic_n"] == 120
    assert repeated["train"]["seed"] == 0
    assert {k: v for k, v in repeated.items() if k not in ("data", "train")} == {
        k: v for k, v in saved.items() if k not in ("data", "train")
    }


def test_train_config_folder_repeats_the_run(tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    args = ["--modalities", "tabular", "--model", "xgboost", "--synthetic-n", "90", "--quiet"]
    assert main(["train", *args, "--out", str(first)]) == 0
    assert main(["train", "--config", str(first), "--out", str(again), "--quiet"]) == 0
    assert _config_of(again) == _config_of(first)
    metrics = [json.loads((run / "metrics.json").read_text())["test"]["macro_f1"] for run in (first, again)]
    assert metrics[0] == metrics[1]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[train]\nepochz = 3\n", "config.train has unknown key(s) ['epochz']"),
        ('[train]\nlr = "fast"\n', "config.train.lr must be a number"),
        ("x = = 1\n", "is not a TOML file"),
    ],
)
def test_train_config_file_refused_naming_file_and_key(tmp_path, capsys, text, says):
    toml = tmp_path / "run.toml"
    toml.write_text(text)
    assert main(["train", "--config", str(toml), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert "run.toml" in err
    assert not (tmp_path / "run").exists()


def test_train_config_file_missing(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.toml"), "--out", str(tmp_path / "run")]) == 2
    assert "no such file" in capsys.readouterr().err
