"""The tutorial of docs/your-own-cohort.md runs as written, so it cannot drift from the code.

Its shell commands (each ```` ```bash ```` block preceded by the line
``<!-- tutorial -->``) run in order through the ``fusion`` command's own entry
function, in a fresh folder, with the page's data folder (``../shared/data/ham10000``)
replaced by a small generated folder of the same layout: lesion ids with repeats, a
``dx`` label, the ``dx_type`` leak, ``unknown`` and age-0 placeholders, colour JPEGs.
Only ``fusion train`` gets extra flags (``--image-size 32 --epochs 2 --quiet``), so that
the test takes seconds; everything else is the page's text.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "your-own-cohort.md"
MARK = "<!-- tutorial -->"
DATA = "../shared/data/ham10000"
FAST = ["--image-size", "32", "--epochs", "2", "--quiet"]


def tutorial_commands() -> list[str]:
    """The page's tutorial commands in order, one per line (continuations joined)."""
    blocks = re.findall(rf"^{re.escape(MARK)}\n```bash\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.S | re.M)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def ham_like(folder: Path, n: int = 90) -> Path:
    """A small stand-in for ../shared/data/ham10000: its columns, traps and layout."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    classes = ["nv"] * (n // 2) + ["mel"] * (n // 4) + ["bkl"] * (n - n // 2 - n // 4)
    colours = {"nv": (150, 90, 60), "mel": (60, 40, 40), "bkl": (170, 140, 110)}
    rows = []
    for i, dx in enumerate(classes):
        name = f"ISIC_{i:07d}.jpg"
        pixels = np.clip(rng.normal(colours[dx], 25, (30, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "images" / name)
        rows.append(
            {
                "lesion_id": f"HAM_{i // 2:07d}" if i % 3 else f"HAM_{i:07d}x",  # some lesions twice
                "image_id": name.removesuffix(".jpg"),
                "filename": name,
                "dx": dx,
                "dx_type": "follow_up" if dx == "nv" and i % 2 else "histo",  # follow_up: naevi only
                "age": "0.0" if i % 17 == 5 else f"{5 * rng.integers(4, 17)}.0",  # 0: not known
                "sex": "unknown" if i % 13 == 4 else ("male", "female")[i % 2],
                "localization": "unknown" if i % 11 == 3 else ("back", "trunk", "face", "lower extremity")[i % 4],
            }
        )
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    return folder


def test_the_tutorial_is_the_path_from_a_folder_to_a_model():
    steps = [shlex.split(c)[:2] for c in tutorial_commands()]
    assert steps[:3] == [["fusion", "schema"], ["fusion", "train"], ["fusion", "evaluate"]]
    assert all(DATA in c for c in tutorial_commands()[:2])


def test_the_tutorial_runs_on_a_small_folder(tmp_path, monkeypatch, capsys):
    from fusion.__main__ import main

    data = ham_like(tmp_path / "data" / "ham10000")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for command in tutorial_commands():
        argv = shlex.split(command.replace(DATA, str(data)))
        assert argv[0] == "fusion", command
        if argv[1] == "train":
            argv += FAST
        assert main(argv[1:]) == 0, f"{command}: {capsys.readouterr().err[-2000:]}"
    draft = (work / "ham.toml").read_text(encoding="utf-8")
    assert re.search(r"^dx_type = \{ reason = \"leak", draft, re.M), "the leak is excluded, with its reason"
    run = next(p.parent for p in work.rglob("metrics.json"))
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["skipped"] == [], "rows whose only fault is 'unknown' are kept"
    assert metrics["missing_tokens"]["sex"] == {"unknown": 7}
    assert [p for p in work.iterdir() if p.suffix == ".json"], "fusion evaluate wrote its metrics"


def test_every_tutorial_subcommand_exists():
    from fusion.__main__ import SUBCOMMANDS

    assert {shlex.split(c)[1] for c in tutorial_commands()} <= set(SUBCOMMANDS)
