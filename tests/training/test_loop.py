"""THE fit loop on a toy problem: learning, determinism, resume, early stopping, divergence."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn
from training_toys import N_CLUSTERS, N_ITEMS, N_USERS, assert_same_params, bpr_task, make_network, params

from recforge.training.callbacks import LoggingCallback
from recforge.training.checkpoint import checkpoint_path, load_checkpoint
from recforge.training.config import TrainConfig
from recforge.training.loop import History, TrainingDiverged, build_optimizers, fit, lr_at


def cfg(**kw) -> TrainConfig:
    base = {"epochs": 4, "batch_size": 32, "lr": 0.05, "device": "cpu", "seed": 3}
    return TrainConfig(**(base | kw))


def auc(net: nn.Module) -> float:
    """Share of (positive, negative) pairs of every user ranked correctly."""
    with torch.no_grad():
        scores = net(torch.arange(N_USERS)[:, None], torch.arange(N_ITEMS)[None, :])  # (U, I)
    liked = (torch.arange(N_USERS)[:, None] % N_CLUSTERS) == (torch.arange(N_ITEMS)[None, :] % N_CLUSTERS)
    pos = scores.masked_fill(~liked, float("nan"))
    diff = scores[:, None, :] - pos[:, :, None]  # (U, pos, neg): neg - pos
    mask = liked[:, :, None] & ~liked[:, None, :]
    return float((diff[mask] < 0).float().mean())


class StopAt:
    """Raises `error` (or returns True) at the end of epoch `epoch`."""

    def __init__(self, epoch: int, error: type[BaseException] | None = None) -> None:
        self.epoch, self.error = epoch, error

    def on_epoch_end(self, epoch: int, logs: dict) -> bool | None:
        if epoch == self.epoch:
            if self.error is not None:
                raise self.error()
            return True
        return None


def test_fit_learns_the_toy_problem(csr):
    net = make_network()
    batches, loss_fn = bpr_task(csr)
    before = auc(net)
    history = fit(net, batches, loss_fn, cfg(epochs=12))
    assert isinstance(history, History) and history.epochs == 12
    assert history.loss[-1] < 0.5 * history.loss[0]
    assert auc(net) > 0.95 > before
    assert history.samples == [csr.nnz] * 12
    assert all(s > 0 for s in history.samples_per_s) and all(s > 0 for s in history.seconds)
    assert history.best_epoch == 11 and history.stop_reason is None


def test_same_seed_same_parameters(csr):
    batches, loss_fn = bpr_task(csr)
    a, b, c = make_network(dropout=0.2), make_network(dropout=0.2), make_network(dropout=0.2)
    ha = fit(a, batches, loss_fn, cfg())
    hb = fit(b, batches, loss_fn, cfg())
    assert_same_params(a, b)
    assert ha.loss == hb.loss
    fit(c, batches, loss_fn, cfg(seed=4))
    assert not torch.equal(a.user.weight, c.user.weight)


@pytest.mark.parametrize(
    "model_kw, config_kw",
    [
        ({"dropout": 0.3}, {"optimizer": "adam", "lr_schedule": "cosine", "weight_decay": 1e-3}),
        ({"sparse": True}, {"optimizer": "sparse_adam", "grad_clip": 0.5}),
        ({"sparse": True}, {"optimizer": "sgd", "momentum": 0.9, "lr_schedule": "step", "step_size": 2}),
    ],
    ids=["adam-dropout-cosine", "sparse_adam-clip", "sgd-momentum-step"],
)
def test_interrupted_and_resumed_equals_uninterrupted(csr, tmp_path, model_kw, config_kw):
    batches, loss_fn = bpr_task(csr, numpy_noise=True)
    config = cfg(epochs=5, **config_kw)
    whole = make_network(**model_kw)
    h_whole = fit(whole, batches, loss_fn, config, checkpoint_dir=tmp_path / "whole")

    first = make_network(**model_kw)
    with pytest.raises(KeyboardInterrupt):
        fit(
            first, batches, loss_fn, config,
            checkpoint_dir=tmp_path / "cut", callbacks=[StopAt(2, KeyboardInterrupt)],
        )
    assert load_checkpoint(checkpoint_path(tmp_path / "cut"))["epoch"] == 2  # epochs 0 and 1
    # a new process: other global RNG states and a differently initialised network
    torch.manual_seed(999)
    np.random.seed(999)
    resumed = make_network(seed=1, **model_kw)
    h_resumed = fit(resumed, batches, loss_fn, config, checkpoint_dir=tmp_path / "cut")
    assert_same_params(whole, resumed)
    assert h_resumed.loss == h_whole.loss and h_resumed.lr == h_whole.lr


def test_resume_false_starts_over_and_finished_run_is_not_retrained(csr, tmp_path):
    batches, loss_fn = bpr_task(csr)
    a = make_network()
    fit(a, batches, loss_fn, cfg(epochs=2), checkpoint_dir=tmp_path)
    done = make_network(seed=5)
    h = fit(done, batches, loss_fn, cfg(epochs=2), checkpoint_dir=tmp_path)
    assert h.epochs == 2
    assert_same_params(a, done)  # loaded from the checkpoint, no extra epoch

    fresh = make_network()
    h = fit(fresh, batches, loss_fn, cfg(epochs=2), checkpoint_dir=tmp_path, resume=False)
    assert h.epochs == 2
    assert_same_params(a, fresh)  # same seed from scratch

    longer = make_network()
    h = fit(longer, batches, loss_fn, cfg(epochs=3), checkpoint_dir=tmp_path)
    assert h.epochs == 3 and load_checkpoint(checkpoint_path(tmp_path))["epoch"] == 3


def scripted_validation(values):
    calls = iter(values)

    def validate(net: nn.Module) -> dict[str, float]:
        assert not net.training and not torch.is_grad_enabled()
        return {"ndcg@10": next(calls), "recall@10": 0.0}

    return validate


class Snapshots:
    def __init__(self, net: nn.Module) -> None:
        self.net, self.states = net, []

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.states.append(params(self.net))


def test_early_stopping_restores_the_best_epoch(csr):
    batches, loss_fn = bpr_task(csr)
    net = make_network()
    snaps = Snapshots(net)
    config = cfg(epochs=10, early_stopping_metric="ndcg@10", patience=2)
    validate = scripted_validation([0.1, 0.5, 0.3, 0.2, 0.9])
    h = fit(net, batches, loss_fn, config, validate=validate, callbacks=[snaps])
    assert h.epochs == 4 and h.stop_reason == "early_stopping"
    assert h.best_epoch == 1 and h.best_metric == 0.5
    assert [m["ndcg@10"] for m in h.metrics] == [0.1, 0.5, 0.3, 0.2]
    for k, v in net.state_dict().items():
        assert torch.equal(v, snaps.states[1][k])
    assert not torch.equal(snaps.states[1]["user.weight"], snaps.states[3]["user.weight"])


def test_early_stopping_min_mode_and_state_survive_resume(csr, tmp_path):
    batches, loss_fn = bpr_task(csr)
    losses = [3.0, 1.0, 2.0, 0.5, 0.7, 0.6, 0.8]  # best at epoch 3, then 3 epochs without gain
    config = cfg(epochs=9, early_stopping_metric="val_loss", early_stopping_mode="min", patience=3)

    def validate_from(values):
        it = iter(values)
        return lambda net: {"val_loss": next(it)}

    whole = make_network()
    h_whole = fit(whole, batches, loss_fn, config, validate=validate_from(losses))
    assert (h_whole.epochs, h_whole.best_epoch, h_whole.stop_reason) == (7, 3, "early_stopping")

    cut = make_network()
    with pytest.raises(KeyboardInterrupt):
        fit(cut, batches, loss_fn, config, validate=validate_from(losses), checkpoint_dir=tmp_path,
            callbacks=[StopAt(4, KeyboardInterrupt)])
    resumed = make_network(seed=2)
    h = fit(resumed, batches, loss_fn, config, validate=validate_from(losses[4:]), checkpoint_dir=tmp_path)
    timings = {"samples_per_s": h.samples_per_s, "seconds": h.seconds}
    assert h == History.from_dict(h_whole.to_dict() | timings)
    assert_same_params(whole, resumed)


def test_early_stopping_needs_validation_and_its_metric(csr):
    batches, loss_fn = bpr_task(csr)
    with pytest.raises(ValueError, match="needs a validate"):
        fit(make_network(), batches, loss_fn, cfg(early_stopping_metric="ndcg@10"))
    with pytest.raises(ValueError, match="without early_stopping_metric 'ndcg@10'"):
        fit(make_network(), batches, loss_fn, cfg(early_stopping_metric="ndcg@10"),
            validate=lambda net: {"recall@10": 1.0})


def test_nan_loss_raises_and_keeps_the_last_checkpoint(csr, tmp_path):
    batches, base_loss = bpr_task(csr)
    net = make_network()
    path = checkpoint_path(tmp_path)
    seen = {"calls": 0, "bytes": None}
    batches_per_epoch = math.ceil(csr.nnz / 16)  # bpr_task batches by 16

    def loss_fn(net, batch):
        seen["calls"] += 1
        epoch, b = divmod(seen["calls"] - 1, batches_per_epoch)
        if epoch == 2 and b == 0:
            seen["bytes"] = path.read_bytes()
        loss = base_loss(net, batch)
        return loss * float("nan") if (epoch, b) == (2, 1) else loss

    with pytest.raises(TrainingDiverged, match=r"epoch 3 \(0-based 2\), batch 2 \(0-based 1\)") as err:
        fit(net, batches, loss_fn, cfg(epochs=5), checkpoint_dir=tmp_path)
    assert err.value.epoch == 2 and err.value.batch == 1 and math.isnan(err.value.loss)
    assert "Lower the learning rate" in str(err.value) and str(path) in str(err.value)
    assert path.read_bytes() == seen["bytes"]
    assert load_checkpoint(path)["epoch"] == 2
    assert not list(tmp_path.glob(".*.tmp"))
    assert all(torch.isfinite(p).all() for p in net.parameters())


class RunningMean(nn.Module):
    """A count-based model: its 'training' is a closed-form update inside the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(()), requires_grad=False)
        self.count = nn.Parameter(torch.zeros(()), requires_grad=False)
        self.untouched = nn.Parameter(torch.ones(3))  # trainable, but no loss ever asks for it


def test_closed_form_loss_skips_backward(csr):
    net = RunningMean()
    values = torch.arange(10, dtype=torch.float32)

    def batches(epoch, generator):
        for idx in torch.randperm(10, generator=generator).split(4):
            yield {"value": values[idx]}

    def loss_fn(net, batch):
        with torch.no_grad():
            n = batch["value"].numel()
            net.mean.add_((batch["value"].sum() - n * net.mean) / (net.count + n))
            net.count.add_(n)
            return (batch["value"] - net.mean).pow(2).mean()

    h = fit(net, batches, loss_fn, cfg(epochs=2, optimizer="adamw", weight_decay=0.5))
    assert h.epochs == 2 and all(math.isfinite(v) for v in h.loss)
    assert net.mean.item() == pytest.approx(4.5)
    assert torch.equal(net.untouched, torch.ones(3))


def test_parameter_free_network_and_zero_epochs(csr):
    class Constant(nn.Module):
        pass

    def batches(epoch, generator):
        return iter([{"x": torch.zeros(3)}])

    h = fit(Constant(), batches, lambda net, batch: torch.tensor(1.0), cfg(epochs=2))
    assert h.loss == [1.0, 1.0]
    assert fit(make_network(), *bpr_task(csr), cfg(epochs=0)).epochs == 0


def test_callback_stop_logging_and_progress(csr, caplog, capsys):
    batches, loss_fn = bpr_task(csr)
    logs = []

    class Recorder:
        def on_epoch_end(self, epoch, log):
            logs.append(log)

    with caplog.at_level(logging.INFO, logger="recforge.training"):
        h = fit(make_network(), batches, loss_fn, cfg(epochs=5, progress=True),
                callbacks=[LoggingCallback(), StopAt(1), Recorder()])
    assert h.epochs == 2 and h.stop_reason == "callback"
    assert len(logs) == 2 and logs[1]["epoch"] == 1 and logs[1]["epochs"] == 5
    assert logs[0]["samples"] == csr.nnz and logs[0]["samples_per_s"] > 0
    assert "epoch 2/5" in caplog.text and "samples/s" in caplog.text
    assert "samples/s" in capsys.readouterr().err


def test_lr_schedules():
    assert lr_at(3, cfg(lr=0.1)) == 0.1
    c = cfg(lr=0.1, epochs=4, lr_schedule="cosine")
    expected = [0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]  # 0.1, …, 0.05, …
    assert [lr_at(e, c) for e in range(4)] == pytest.approx(expected)
    assert lr_at(2, c) == pytest.approx(0.05)
    s = cfg(lr=0.1, lr_schedule="step", step_size=2, gamma=0.5)
    assert [lr_at(e, s) for e in range(5)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    w = cfg(lr=0.1, epochs=6, lr_schedule="linear_warmup_cosine", warmup_epochs=2)
    assert [lr_at(e, w) for e in range(3)] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1])
    assert lr_at(5, w) < lr_at(3, w) < 0.1


def test_history_records_the_schedule(csr):
    h = fit(make_network(), *bpr_task(csr), cfg(epochs=3, lr_schedule="step", step_size=1, gamma=0.5))
    assert h.lr == pytest.approx([0.05, 0.025, 0.0125])


def test_optimizers_for_sparse_embeddings():
    sparse = make_network(sparse=True)
    with pytest.raises(ValueError, match="sparse_adam"):
        build_optimizers(sparse, cfg(optimizer="adam"))
    opts = build_optimizers(sparse, cfg(optimizer="sparse_adam"))
    assert [type(o).__name__ for o in opts] == ["SparseAdam", "Adam"]
    (sgd,) = build_optimizers(sparse, cfg(optimizer="sgd", weight_decay=0.1))
    assert [g["weight_decay"] for g in sgd.param_groups] == [0.1, 0.0]
    (adagrad,) = build_optimizers(make_network(), cfg(optimizer="adagrad"))
    assert isinstance(adagrad, torch.optim.Adagrad)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")  # raised inside Adagrad
def test_sparse_embeddings_train_with_sgd_weight_decay_and_adagrad(csr):
    for kw in (
        {"optimizer": "sgd", "weight_decay": 1e-3, "lr": 0.5},
        {"optimizer": "adagrad", "lr": 0.3, "grad_clip": 1.0},
    ):
        net = make_network(sparse=True)
        h = fit(net, *bpr_task(csr), cfg(epochs=6, **kw))
        assert h.loss[-1] < h.loss[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_mixed_precision_trains_and_resumes(csr, tmp_path):
    batches, loss_fn = bpr_task(csr)
    config = cfg(epochs=4, device="cuda", amp=True)
    whole = make_network()
    h = fit(whole, batches, loss_fn, config)
    assert next(whole.parameters()).is_cuda and h.loss[-1] < h.loss[0]
    cut = make_network()
    with pytest.raises(KeyboardInterrupt):
        fit(cut, batches, loss_fn, config, checkpoint_dir=tmp_path, callbacks=[StopAt(1, KeyboardInterrupt)])
    resumed = make_network()
    fit(resumed, batches, loss_fn, config, checkpoint_dir=tmp_path)
    # GPU embedding backward uses atomics, so equality is up to float rounding here
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_dense_parameters_take_fused_kernels_unless_turned_off():
    (adam,) = build_optimizers(make_network(), cfg(optimizer="adam"))
    assert adam.param_groups[0]["fused"] is True
    (plain,) = build_optimizers(make_network(), cfg(optimizer="adam", fused=False))
    assert not plain.param_groups[0]["fused"]
    for name in ("adamw", "sgd", "adagrad"):
        (opt,) = build_optimizers(make_network(), cfg(optimizer=name))
        assert opt.param_groups[0]["fused"] is True, name
    # fused kernels take dense gradients only: sparse tables keep the per-tensor path
    sparse_adam, dense_adam = build_optimizers(make_network(sparse=True), cfg(optimizer="sparse_adam"))
    assert dense_adam.param_groups[0]["fused"] is True
    (sgd,) = build_optimizers(make_network(sparse=True), cfg(optimizer="sgd"))
    assert not any(g.get("fused") for g in sgd.param_groups)


def test_fused_and_per_tensor_steps_agree(csr):
    batches, loss_fn = bpr_task(csr)
    fused, plain = make_network(), make_network()
    h_fused = fit(fused, batches, loss_fn, cfg(weight_decay=1e-3))
    h_plain = fit(plain, batches, loss_fn, cfg(weight_decay=1e-3, fused=False))
    for a, b in zip(fused.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert h_fused.loss == pytest.approx(h_plain.loss, rel=1e-4)


def test_num_threads_hold_for_the_fit_and_are_restored(csr):
    seen = []

    class Threads:
        def on_epoch_end(self, epoch, logs):
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()  # 1, from the autouse fixture
    fit(make_network(), *bpr_task(csr), cfg(epochs=2, num_threads=2), callbacks=[Threads()])
    assert seen == [2, 2] and torch.get_num_threads() == before
    with pytest.raises(KeyboardInterrupt):
        fit(make_network(), *bpr_task(csr), cfg(num_threads=2), callbacks=[StopAt(0, KeyboardInterrupt)])
    assert torch.get_num_threads() == before
    fit(make_network(), *bpr_task(csr), cfg(epochs=1), callbacks=[Threads()])
    assert seen[-1] == before
