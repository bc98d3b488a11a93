"""Shared fixtures: small synthetic cohorts in memory and written to disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusion.data import synthetic

# The real data lie beside the project (../shared/data); FUSION_SHARED_DATA points elsewhere.
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Idle OpenMP threads yield the core at once instead of spinning: with two workers
    # on two cores (and the CLI processes some tests start) spinning halves throughput.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SHARED_DATA = Path(os.environ.get("FUSION_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def _one_thread_per_worker():
    """Under pytest-xdist (``-n 2``) each worker gets one of the cores: two workers
    with two torch threads each would fight over two cores and run slower than one."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cohort():
    """A 90-image synthetic cohort at 32 px (table, images)."""
    return synthetic.make_cohort(90, seed=3, image_size=32)


@pytest.fixture()
def folder_dataset(tmp_path, cohort):
    """The cohort written as metadata.csv + images/ with the synthetic schema, as a
    hospital export would look."""
    table, images = cohort
    folder = tmp_path / "cohort"
    (folder / "images").mkdir(parents=True)
    for name, pixels in zip(table["image"], images, strict=True):
        Image.fromarray(pixels).save(folder / "images" / name)
    table.to_csv(folder / "metadata.csv", index=False)
    return folder


def write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Tiny trained runs on the synthetic cohort (32 px, 3 epochs): fused, image-only,
    tabular-only and XGBoost, keyed by those names."""
    from fusion.train import main as train

    root = tmp_path_factory.mktemp("tiny_runs")
    flags = {
        "fused": ["--modalities", "image,tabular"],
        "image": ["--modalities", "image"],
        "tabular": ["--modalities", "tabular"],
        "xgboost": ["--modalities", "tabular", "--model", "xgboost"],
    }
    runs = {}
    for name, extra in flags.items():
        out = root / name
        assert (
            train([*extra, "--synthetic-n", "120", "--image-size", "32", "--epochs", "3", "--out", str(out), "--quiet"])
            == 0
        )
        runs[name] = out
    return runs


@pytest.fixture(scope="session")
def small_tuning():
    """A model's ``tuning`` setting for tests, which check what tuning does, not how
    well: two XGBoost candidates (XGBoost's own minimum child weight and column
    sampling), two rounds, two regularisation strengths, three inner folds (the
    library's grids are larger)."""
    from fusion.config import TuningConfig

    return TuningConfig(
        inner_folds=3,
        linear_c=(0.1, 1.0),
        xgb_max_depth=(2, 3),
        xgb_learning_rate=(0.1,),
        xgb_min_child_weight=(1.0,),
        xgb_subsample=(0.8,),
        xgb_colsample_bytree=(1.0,),
        xgb_rounds=(20, 40),
    )


@pytest.fixture(autouse=True, scope="session")
def _private_image_cache(tmp_path_factory):
    """Tests never write to the user's cache folder."""
    previous = os.environ.get("FUSION_CACHE_DIR")
    os.environ["FUSION_CACHE_DIR"] = str(tmp_path_factory.mktemp("image_cache"))
    yield
    if previous is None:
        os.environ.pop("FUSION_CACHE_DIR", None)
    else:
        os.environ["FUSION_CACHE_DIR"] = previous


@pytest.fixture()
def swap_after_hashing(monkeypatch):
    """``swap(path, replacement)``: once the SHA-256 of ``path``'s present content has
    been taken (by anyone, through ``hashlib.sha256``), the file on disk is replaced by
    ``replacement``, as an attacker racing the loader would. Returns a list that holds
    True once the swap happened."""
    import hashlib

    real = hashlib.sha256
    done: list[bool] = []

    def swap(path: Path, replacement: bytes) -> list[bool]:
        original = path.read_bytes()

        class Spy:
            def __init__(self, data=b"", **kwargs):
                self._digest = real(data, **kwargs)
                self._seen = [bytes(data)]

            def update(self, data):
                self._digest.update(data)
                self._seen.append(bytes(data))

            def digest(self):
                return self._digest.digest()

            def hexdigest(self):
                out = self._digest.hexdigest()
                if not done and b"".join(self._seen) == original:
                    path.write_bytes(replacement)
                    done.append(True)
                return out

        monkeypatch.setattr(hashlib, "sha256", Spy)
        return done

    return swap


@pytest.fixture()
def rehash():
    """``rehash(folder, drop=(), add=())`` rewrites a model folder's manifest with the
    library's own helper, as a careful hand-editor would: the hashes match the edited
    files (``drop``: names left out of it, ``add``: names put in)."""
    import json

    from fusion.persistence import write_manifest
    from fusion.version import __version__

    def rewrite(folder: Path, drop: tuple[str, ...] = (), add: tuple[str, ...] = ()) -> None:
        listed = json.loads((folder / "manifest.json").read_text())["sha256"]
        write_manifest(folder, sorted((set(listed) - set(drop)) | set(add)), __version__)

    return rewrite
