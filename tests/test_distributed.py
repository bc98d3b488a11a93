"""Distributed training (torch.distributed, gloo, two processes on 127.0.0.1, the
environment torchrun sets): weights equal on every rank, metrics equal to a one-process
evaluation of the saved weights, the same validation loss as one process with the same
global batch, files from rank 0 only, and kill -9 of one rank then resume."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fusion import FusionClassifier
from fusion.config import Config
from fusion.data.loaders import load_dataset
from fusion.train import build_parser, config_from_args
from fusion.train import main as train_main
from fusion.training.checkpoint import load_checkpoint
from fusion.training.run import score

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="this torch build has no gloo backend",
)

ROOT = Path(__file__).resolve().parents[1]
# Tolerance on the validation loss of a 2-process run against a 1-process run with the
# same global batch (see test_two_processes_match_one_process for why it is not zero).
VAL_LOSS_TOLERANCE = 0.02


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: each job in a process joins its own process group on
    its own port (a group re-formed on the port just left can meet the old store)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# fp32 everywhere: the tolerances below were measured in fp32, and on a CPU with bf16
# units `--precision auto` would train in bf16, whose rounding alone exceeds them.
ARGS = [
    "--synthetic-n",
    "120",
    "--image-size",
    "32",
    "--epochs",
    "4",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--quiet",
]
TABULAR = [*ARGS, "--modalities", "tabular"]


def _config(argv: list[str], *, no_dropout: bool = False) -> Config:
    cfg = config_from_args(build_parser().parse_args(argv))
    if no_dropout:
        # Nothing random in the forward and no batch statistics: the 2-process
        # gradient must then equal the 1-process one up to float summation order.
        cfg.tabular.dropout = cfg.head.dropout = cfg.head.modality_dropout = 0.0
    return cfg


def _split(cfg: Config) -> dict:
    """The parts ``fusion.training.run.run`` trains and scores on."""
    ds = load_dataset(None, image_size=32, seed=cfg.train.seed, synthetic_n=120, modalities=cfg.modalities)
    return ds.split(seed=cfg.train.seed, val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction)


def _fit_tabular(out: Path) -> FusionClassifier:
    """A tabular network without dropout, fitted through the library (no run folder)."""
    cfg = _config(TABULAR, no_dropout=True)
    parts = _split(cfg)
    return FusionClassifier(cfg).fit(parts["train"], parts["val"])


def _worker(rank: int, world: int, ports: list[int], root: str, jobs: list, die_at_epoch: int | None) -> None:
    """One process of a torchrun job: the environment torchrun sets, then each job: a
    list of flags for the CLI's own ``main``, run in a working folder of its own (so a
    file written by a rank other than 0 would show), or "tabular" for
    :func:`_fit_tabular`. Every rank's trained weights are kept beside it for
    comparison. With ``die_at_epoch``, rank 1 kills itself with SIGKILL at the end of
    the next epoch, inside a collective step."""
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import fusion.train
    from fusion.training import distributed
    from fusion.training.hooks import checkpoint as checkpointing

    cwd = Path(root) / f"rank{rank}"
    cwd.mkdir(exist_ok=True)
    os.chdir(cwd)
    run_cli = fusion.train.run

    def keep(clf, name):
        state = {k: v.detach().contiguous() for k, v in clf.network_.state_dict().items()}
        save_file(state, str(Path(root) / f"{name}-rank{rank}.safetensors"))

    def run_and_keep_weights(cfg, out, **kwargs):
        result = run_cli(cfg, out, **kwargs)
        keep(result.classifier, out)
        return result

    fusion.train.run = run_and_keep_weights
    if die_at_epoch is not None and rank == 1:
        gather_rng, calls = checkpointing._rank_rng, []

        def die_after(device):
            calls.append(1)
            if len(calls) > die_at_epoch:
                os.kill(os.getpid(), signal.SIGKILL)
            return gather_rng(device)

        checkpointing._rank_rng = die_after
    for job, port in zip(jobs, ports, strict=True):
        os.environ["MASTER_PORT"] = str(port)
        if job == "tabular":
            distributed.init_from_env("cpu")
            clf = _fit_tabular(Path(root))
            keep(clf, "tabular")
            (Path(root) / f"tabular-history-rank{rank}.json").write_text(json.dumps(clf.history_["history"]))
            distributed.shutdown()
        else:
            code = fusion.train.main(job)
            if code:
                raise SystemExit(code)


# Modules the fork server imports once, so that each rank it forks starts in
# milliseconds: spawning a fresh interpreter per rank costs ~3 s of torch import and
# ~2 s of torch._dynamo (imported by the first optimizer) per process, which made these
# tests 3x dearer. The server is a clean process (no OpenMP threads started), so
# forking from it is safe where forking the test process itself is not.
PRELOAD = ["torch", "torch._dynamo", "fusion.train", "fusion.training.loop", "fusion.backends.joint"]


def _job(root: Path, jobs: list, die_at_epoch: int | None = None) -> bool:
    """Run a 2-process job; whether every process ended well."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    ctx = torch.multiprocessing.start_processes(
        _worker,
        args=(2, _free_ports(len(jobs)), str(root), jobs, die_at_epoch),
        nprocs=2,
        join=False,
        start_method="forkserver",
    )
    deadline = time.monotonic() + 120
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                for process in ctx.processes:
                    process.kill()
                raise AssertionError("a 2-process job did not end within 120 s")
    except (torch.multiprocessing.ProcessExitedException, torch.multiprocessing.ProcessRaisedException):  # failed
        return False
    return True


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """2-process gloo runs made once for the tests below: the fused model, killed (rank
    1, SIGKILL) in epoch 2, refused a one-process resume, then resumed with two
    processes; and a tabular model without dropout."""
    root = tmp_path_factory.mktemp("ddp")
    killed = not _job(root, [[*ARGS, "--out", "fused"]], die_at_epoch=1)
    progress = json.loads((root / "rank0" / "fused" / "progress.json").read_text())
    code = train_main([*ARGS, "--out", str(root / "rank0" / "fused"), "--resume"])
    try:  # the world size is checked before anything else, so any fingerprint will do
        load_checkpoint(root / "rank0" / "fused", {}, world_size=1)
    except ValueError as err:
        refusal = str(err)
    resumed = _job(root, [[*ARGS, "--out", "fused", "--resume"], "tabular"])
    return {
        "root": root,
        "killed_job_failed": killed,
        "progress_when_killed": progress,
        "one_process_resume_code": code,
        "one_process_refusal": refusal,
        "resumed": resumed,
    }


def test_killed_rank_fails_the_job_and_it_resumes_with_the_same_world_size(ddp):
    assert ddp["killed_job_failed"]
    assert ddp["progress_when_killed"]["epoch"] == 1 and not ddp["progress_when_killed"]["complete"]
    assert ddp["one_process_resume_code"] == 2  # another world size is refused, saying why
    assert "made by 2 process(es)" in ddp["one_process_refusal"]
    assert "resume with the same number of processes" in ddp["one_process_refusal"]
    assert ddp["resumed"]
    metrics = json.loads((ddp["root"] / "rank0" / "fused" / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 1
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]


def test_weights_are_identical_on_every_rank(ddp):
    for name in ("fused", "tabular"):
        a = load_file(str(ddp["root"] / f"{name}-rank0.safetensors"))
        b = load_file(str(ddp["root"] / f"{name}-rank1.safetensors"))
        assert a.keys() == b.keys()
        for key in a:  # parameters and BatchNorm statistics alike
            assert torch.equal(a[key], b[key]), key


def test_only_rank_0_writes_files(ddp):
    assert not any((ddp["root"] / "rank1").iterdir())
    run0 = ddp["root"] / "rank0" / "fused"
    assert {"metrics.json", "model.safetensors", "manifest.json", "MODEL_CARD.md", "progress.json"} <= {
        p.name for p in run0.iterdir()
    }
    metrics = json.loads((run0 / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["distributed_backend"] == "gloo"
    assert json.loads((run0 / "progress.json").read_text())["complete"]


def _close(a, b, path="") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9, nan_ok=True), path
    else:
        assert a == b, path


def test_metrics_equal_a_one_process_evaluation_of_the_same_weights(ddp):
    folder = ddp["root"] / "rank0" / "fused"
    metrics = json.loads((folder / "metrics.json").read_text())
    clf = FusionClassifier.load(folder)
    cfg = _config(ARGS)
    parts = _split(cfg)
    for name in ("val", "test"):
        one, _, _ = score(clf, parts[name], cfg.train.seed)
        # what the run adds to score()'s figures: subgroups, each modality's answers, decision curves
        added = {"subgroups", "single_modality_auroc", "fusion_change", "decision_curves"}
        saved = {k: v for k, v in metrics[name].items() if k not in added}
        _close(json.loads(json.dumps(saved)), json.loads(json.dumps(one, default=float)), name)


def test_two_processes_match_one_process(ddp, tmp_path):
    """Same global batch, same permutation, same augmentation draws and a loss
    normalised by the whole global batch: the averaged DDP gradient is the one-process
    gradient. Without dropout or BatchNorm (the tabular network) only float summation
    order differs, so the validation losses agree to 1e-5. The fused network differs
    by design, within VAL_LOSS_TOLERANCE: on CPU (gloo) BatchNorm normalises each
    process's half batch with its own statistics, and dropout masks are drawn per
    process. Measured: at most 1e-8 apart (tabular) and 0.007 apart on a loss of about
    1.1 (fused, 4 epochs); the tolerance is about 3 times that. (The fused 2-process
    run was also killed and resumed, which changes nothing: each process resumes its
    own random stream.)"""
    cfg = _config(ARGS)
    parts = _split(cfg)
    fused = FusionClassifier(cfg).fit(parts["train"], parts["val"]).history_["history"]
    tabular = _fit_tabular(tmp_path).history_["history"]
    two_fused = json.loads((ddp["root"] / "rank0" / "fused" / "metrics.json").read_text())["history"]
    two_tabular = json.loads((ddp["root"] / "tabular-history-rank0.json").read_text())
    for name, one, two, tol in (
        ("tabular", tabular, two_tabular, 1e-5),
        ("fused", fused, two_fused, VAL_LOSS_TOLERANCE),
    ):
        for a, b in zip(one, two, strict=True):
            assert abs(a["val_loss"] - b["val_loss"]) < tol, (name, a["val_loss"], b["val_loss"])
            assert a["train_images"] == b["train_images"]


@pytest.mark.parametrize("flags", [["--model", "xgboost"], ["--fusion", "stacked"], ["--fusion", "auto"]])
def test_single_process_strategies_are_refused_under_several_processes(monkeypatch, flags):
    from fusion.training import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 2)  # as under torchrun --nproc_per_node=2
    cfg = _config([*TABULAR, *flags])
    with pytest.raises(ValueError, match=r"trains in one process only.*2 processes.*without torchrun"):
        FusionClassifier(cfg).fit(_split(cfg)["train"])


def test_sync_batchnorm_turns_back_into_batchnorm_with_the_same_weights():
    """On CUDA training runs with SyncBatchNorm; the trained model must come back as
    the plain model (same modules, same tensors) to save, copy and predict as usual."""
    from fusion.training.distributed import unwrap_sync_batchnorm

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    model[1].running_mean.add_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weight = model[1].weight
    torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(model[1], torch.nn.SyncBatchNorm)
    unwrap_sync_batchnorm(model)
    assert type(model[1]) is torch.nn.BatchNorm2d and model[1].weight is weight
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    model.eval()(torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_world_size_is_named(monkeypatch, value):
    from fusion.training.distributed import init_from_env

    monkeypatch.setenv("WORLD_SIZE", value)
    with pytest.raises(ValueError, match=f"WORLD_SIZE must be a positive integer.*{value!r}"):
        init_from_env("cpu")


def test_one_process_never_joins_a_process_group(monkeypatch):
    from fusion.training.distributed import init_from_env, world_size

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env("cpu") is False and not torch.distributed.is_initialized() and world_size() == 1


# ------------------------------------------------------------ the environment, checked
_GOOD = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
_ALL = [*_GOOD, "LOCAL_WORLD_SIZE", "FUSION_RENDEZVOUS_TIMEOUT"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"RANK": "abc"}, r"RANK must be a whole number.*'abc'"),
        ({"RANK": "5"}, r"RANK 5 .*WORLD_SIZE 2"),
        ({"RANK": "-1"}, r"RANK must be a whole number"),
        ({"RANK": None}, r"RANK is not set"),
        ({"WORLD_SIZE": "9" * 5000}, r"WORLD_SIZE must be .*\(5002 characters\)"),
        ({"WORLD_SIZE": "\uff12"}, r"WORLD_SIZE must be"),  # a full-width 2: int() takes it
        ({"LOCAL_RANK": "x"}, r"LOCAL_RANK must be"),
        ({"LOCAL_RANK": "2"}, r"LOCAL_RANK 2 .*WORLD_SIZE 2"),
        ({"LOCAL_WORLD_SIZE": "1", "LOCAL_RANK": "1"}, r"LOCAL_RANK 1 .*LOCAL_WORLD_SIZE 1"),
        ({"LOCAL_WORLD_SIZE": "3"}, r"LOCAL_WORLD_SIZE 3 .*WORLD_SIZE 2"),
        ({"LOCAL_WORLD_SIZE": "0"}, r"LOCAL_WORLD_SIZE must be"),
        ({"MASTER_ADDR": None}, r"MASTER_ADDR is not set"),
        ({"MASTER_ADDR": "bad host!"}, r"MASTER_ADDR must be a host name or IP address.*'bad host!'"),
        ({"MASTER_ADDR": "h" * 300}, r"MASTER_ADDR must be"),
        ({"MASTER_PORT": "0"}, r"MASTER_PORT must be a port number from 1 to 65535.*'0'"),
        ({"MASTER_PORT": "70000"}, r"MASTER_PORT must be a port number"),
        ({"MASTER_PORT": None}, r"MASTER_PORT is not set"),
        ({"FUSION_RENDEZVOUS_TIMEOUT": "soon"}, r"FUSION_RENDEZVOUS_TIMEOUT must be a number of seconds"),
        ({"FUSION_RENDEZVOUS_TIMEOUT": "0"}, r"FUSION_RENDEZVOUS_TIMEOUT must be"),
        ({"FUSION_RENDEZVOUS_TIMEOUT": "inf"}, r"FUSION_RENDEZVOUS_TIMEOUT must be"),
        ({"WORLD_SIZE": None, "RANK": "1"}, r"RANK 1 .*WORLD_SIZE 1"),  # two 'single' processes writing one folder
    ],
    ids=lambda v: str(v)[:40],
)
def test_every_distributed_variable_is_checked_before_anything_waits(monkeypatch, changes, message):
    from fusion.training.distributed import init_from_env

    for name in _ALL:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**_GOOD, **changes}.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    started = time.monotonic()
    with pytest.raises(ValueError, match=message) as err:
        init_from_env("cpu")
    assert time.monotonic() - started < 2 and len(str(err.value)) < 400
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("rank", [0, 1], ids=["rank-0-alone", "rank-1-without-rank-0"])
def test_a_missing_process_fails_with_a_sentence_after_the_rendezvous_timeout(monkeypatch, caplog, rank):
    """WORLD_SIZE=2 with one process started: a sentence within seconds, not 30 minutes of silence."""
    from fusion.training.distributed import init_from_env

    for name in _ALL:
        monkeypatch.delenv(name, raising=False)
    port = _free_ports(1)[0]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv("FUSION_RENDEZVOUS_TIMEOUT", "1")
    started = time.monotonic()
    with caplog.at_level("INFO", logger="fusion"), pytest.raises(ValueError) as err:
        init_from_env("cpu")
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "FUSION_RENDEZVOUS_TIMEOUT" in message and "1 s" in message
    assert not torch.distributed.is_initialized()
    assert f"127.0.0.1:{port}" in caplog.text and "waiting" in caplog.text


def test_train_names_the_missing_process_and_exits_2(monkeypatch, tmp_path, capsys):
    for name in _ALL:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_ports(1)[0]))
    monkeypatch.setenv("FUSION_RENDEZVOUS_TIMEOUT", "1")
    assert train_main([*TABULAR, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "only 1 of 2 processes" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_every_fusion_head_trains_under_two_processes(tmp_path):
    """The film and attention heads through DistributedDataParallel: every parameter
    gets a gradient on every step (DDP would stop otherwise), and the ranks end with
    the same weights."""
    heads = ["film", "attention"]
    jobs = [[*ARGS, "--epochs", "1", "--head", h, "--out", h] for h in heads]
    assert _job(tmp_path, jobs)
    for h in heads:
        a = load_file(str(tmp_path / f"{h}-rank0.safetensors"))
        b = load_file(str(tmp_path / f"{h}-rank1.safetensors"))
        assert any(k.startswith("fuse.") for k in a)
        assert all(torch.equal(a[k], b[k]) for k in a), h
        assert json.loads((tmp_path / "rank0" / h / "config.json").read_text())["config"]["head"]["kind"] == h
