"""The training loop's hooks: the protocol (every hook sees every epoch, in order, and
any can stop the training) and the standard hooks, on a tiny linear model that trains
in milliseconds."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fusion.config import HeadConfig, TrainConfig
from fusion.training.hooks import (
    Checkpointing,
    DivergenceCheck,
    EarlyStopping,
    Hook,
    Progress,
    TrainState,
    standard_hooks,
)
from fusion.training.loop import Arrays, fit_network

N, EPOCHS = 40, 4  # 40 rows in batches of 16: 3 batches an epoch


class _Linear(nn.Module):
    """The smallest model the loop can train: the record through one linear layer."""

    n_classes = 2

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward_with_aux(self, inputs):
        return self.linear(inputs["tabular"]), {}

    def forward(self, inputs, presence=None):
        return self.linear(inputs["tabular"])


def _arrays(n: int, seed: int) -> Arrays:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return Arrays(labels=(x[:, 0] > 0).long(), tabular=x)


def _fit(hooks, *, val: bool = True, epochs: int = EPOCHS) -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    model = _Linear()
    cfg = TrainConfig(batch_size=16)
    result = fit_network(
        model,
        _arrays(N, 1),
        _arrays(20, 2) if val else None,
        cfg,
        HeadConfig(),
        epochs=epochs,
        augment=False,
        device=torch.device("cpu"),
        precision="fp32",
        hooks=hooks,
    )
    return model, result


class _Recorder(Hook):
    """Writes every call into ``log`` as (name, event, epoch)."""

    def __init__(self, name: str, log: list, stop_at: int | None = None):
        self.name, self.log, self.stop_at = name, log, stop_at

    def on_fit_start(self, state):
        self.log.append((self.name, "fit_start", state.epoch))

    def on_epoch_start(self, state):
        self.log.append((self.name, "epoch_start", state.epoch))

    def on_batch_end(self, state, loss):
        assert math.isfinite(loss) and 0 <= state.batch < state.n_batches
        self.log.append((self.name, "batch_end", state.epoch))

    def on_train_epoch_end(self, state):
        self.log.append((self.name, "train_epoch_end", state.epoch))

    def on_epoch_end(self, state):
        assert state.record["epoch"] == state.epoch and "val_macro_f1" in state.record
        self.log.append((self.name, "epoch_end", state.epoch))
        return state.epoch == self.stop_at

    def on_fit_end(self, state):
        self.log.append((self.name, "fit_end", state.epoch))


def test_a_hook_sees_every_epoch_and_batch_in_order():
    log = []
    _, result = _fit([_Recorder("a", log)])
    events = [event for _, event, _ in log]
    one_epoch = ["epoch_start", "batch_end", "batch_end", "batch_end", "train_epoch_end", "epoch_end"]
    assert events == ["fit_start", *one_epoch * EPOCHS, "fit_end"]
    assert [epoch for _, event, epoch in log if event == "epoch_end"] == [1, 2, 3, 4]
    assert result["epochs_run"] == EPOCHS and [h["epoch"] for h in result["history"]] == [1, 2, 3, 4]


def test_hooks_run_in_the_order_given_and_any_can_stop_the_training():
    log = []
    _, result = _fit([_Recorder("first", log, stop_at=2), _Recorder("second", log)])
    # Each event reaches the first hook, then the second; the one that stops does not
    # keep the others from seeing the epoch it stops after.
    assert [name for name, _, _ in log] == ["first", "second"] * (len(log) // 2)
    assert ("second", "epoch_end", 2) in log and ("first", "epoch_start", 3) not in log
    assert log[-2:] == [("first", "fit_end", 2), ("second", "fit_end", 2)]
    assert result["epochs_run"] == 2


def test_hooks_change_nothing_they_are_not_asked_to():
    """The bare loop and the loop with recording hooks train the same weights."""
    bare, _ = _fit([])
    watched, _ = _fit([_Recorder("a", []), _Recorder("b", [])])
    for key, value in bare.state_dict().items():
        assert torch.equal(value, watched.state_dict()[key]), key


def test_a_hook_that_is_not_a_hook_is_refused_by_its_index():
    with pytest.raises(TypeError, match=r"hooks\[1\] must be a fusion.training.hooks.Hook; got str"):
        _fit([Hook(), "progress"])


def test_standard_hooks_in_their_order():
    kinds = [type(h) for h in standard_hooks(TrainConfig())]
    assert kinds == [DivergenceCheck, Progress, EarlyStopping]
    kinds = [type(h) for h in standard_hooks(TrainConfig(), checkpoint_dir="run", resume=True)]
    assert kinds == [DivergenceCheck, Checkpointing, Progress, EarlyStopping]  # no NaN checkpoint, then the lines
    with pytest.raises(ValueError, match="resume needs checkpoint_dir"):
        standard_hooks(TrainConfig(), resume=True)


def _state(**kw) -> SimpleNamespace:
    defaults = {"has_val": True, "stale": 2, "epoch": 3, "epochs": 4, "best": {"epoch": 1}}
    return SimpleNamespace(**{**defaults, **kw})


@pytest.mark.parametrize(
    "state, stops",
    [
        (_state(), True),
        (_state(stale=1), False),
        (_state(epoch=2), False),  # the first half of the epochs: never
        (_state(has_val=False), False),  # nothing to judge by
    ],
)
def test_early_stopping_waits_for_patience_and_the_second_half(state, stops):
    assert EarlyStopping(patience=2).on_epoch_end(state) is stops
    assert EarlyStopping(patience=2).on_fit_start(state) is stops  # a resumed run that had stopped


def test_early_stopping_ends_a_fit():
    class Stale(Hook):
        def on_epoch_end(self, state):
            state.stale = state.epoch  # no epoch improves

    _, result = _fit([Stale(), EarlyStopping(patience=1)], epochs=6)
    assert result["epochs_run"] == 4  # 4 > 6 // 2: the first epoch of the second half


def test_divergence_check_names_the_batch_and_the_setting():
    state = TrainState(
        model=_Linear(),
        optimizer=None,
        scheduler=None,
        generator=None,
        device=torch.device("cpu"),
        epochs=3,
        has_val=False,
        forward=None,
        epoch=2,
        batch=4,
        n_batches=9,
    )
    check = DivergenceCheck(lr=0.5)
    check.on_batch_end(state, 1.25)
    with pytest.raises(ValueError, match=r"the loss became infinite at epoch 2 \(batch 5 of 9\).*train\.lr, now 0\.5"):
        check.on_batch_end(state, math.inf)
    with torch.no_grad():
        state.model.linear.weight[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"a weight became NaN at epoch 2; lower the learning rate"):
        check.on_train_epoch_end(state)


def test_a_training_without_validation_keeps_its_last_epoch():
    _, result = _fit(None, val=False)
    assert result["best_epoch"] == EPOCHS and "val_loss" not in result["history"][-1]
