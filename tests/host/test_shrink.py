"""edgeshrink.shrink(): the user's functions drive NetAdapt, prune_only / ignore keep layers whole, a dict output is
picked by the output selector, and the refusals. Tables with a known answer (tests/tables.py)."""

import pytest
import torch
import torch.nn as nn

import edgeshrink as es
from edgeshrink.host.errors import BudgetError, TableError, UserError
from tests.conftest import assert_shipped
from tests.tables import synthetic_table
from tests.usermodel import write_user_model


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return write_user_model(tmp_path_factory.mktemp("userproj"))


@pytest.fixture(scope="module")
def table(ref):
    return synthetic_table(ref, granularity=8)


def width(model, name):
    return model.get_submodule(name).out_channels


def test_netadapt_follows_the_users_test_and_calls_train_one_epoch_per_proposal(ref, table):
    model = es.create_model(ref)
    calls = {"epochs": 0, "lrs": set()}

    def train_one_epoch(m, lr):
        calls["epochs"] += 1
        calls["lrs"].add(lr)

    def test(m):  # the user's score: anything that narrows the stem loses everything
        return 100.0 if width(m, "features.0.0") == 32 else 0.0

    r = es.shrink(model, torch.zeros(1, 3, 32, 32), table, budget=0.6, train_one_epoch=train_one_epoch, test=test,
                  measure=False, short_term_lr=0.02)
    assert r.pruned_ms_predicted <= 0.6 * r.baseline_ms_predicted + 1e-9 and r.budget_ms == pytest.approx(
        0.6 * r.baseline_ms_predicted)
    assert width(r.model, "features.0.0") == 32 and r.score == 100.0  # the stem's group was never chosen
    proposals = sum(len(h["candidates"]) for h in r.history)
    assert calls["epochs"] == proposals and calls["lrs"] == {0.02}
    assert width(model, "features.2.conv.0.0") == 64  # the caller's model is not changed


def test_prune_only_and_ignore_keep_layers_whole(ref, table):
    model = es.create_model(ref)
    full = es.channel_spec(model)
    r = es.shrink(model, (1, 3, 32, 32), table, budget=0.7, method="uniform", ignore=["features.7", "features.0"],
                  measure=False)
    got = es.channel_spec(r.model)
    assert got["features.7.conv.0.0"] == full["features.7.conv.0.0"] and got["features.0.0"] == full["features.0.0"]
    assert any(got[k] < full[k] for k in full) and r.pruned_ms_predicted <= r.budget_ms + 1e-9
    r2 = es.shrink(model, (1, 3, 32, 32), table, budget=0.97, method="magnitude", prune_only="features.2",
                   measure=False)
    changed = {k for k in full if es.channel_spec(r2.model)[k] != full[k]}
    assert changed and all(k.startswith("features.2.") for k in changed)
    assert r2.pruned_ms_predicted <= r2.budget_ms + 1e-9


class DictNet(nn.Module):
    """A model whose forward returns a dict (a detector's outputs)."""

    def __init__(self, inner):
        super().__init__()
        self.net = inner

    def forward(self, x):
        y = self.net(x)
        return {"logits": y, "aux": y.sum(1)}


@pytest.mark.slow
def test_a_dict_output_is_picked_for_tracing_export_and_latency(ref, table, tmp_path):
    import numpy as np
    import onnxruntime as ort

    model = DictNet(es.create_model(ref)).eval()
    r = es.shrink(model, (1, 3, 32, 32), table, budget=0.7, method="uniform", select_output="logits",
                  output="onnx", out_dir=str(tmp_path), device="local", bench_seconds=0.2)
    assert isinstance(r.model, DictNet) and set(r.model(torch.zeros(1, 3, 32, 32))) == {"logits", "aux"}
    # the file the device measured is the file shipped beside its artifact.json
    assert r.measured_sha256 == r.sha256 and assert_shipped(tmp_path, r.sha256)["file"] == "model.onnx"
    assert r.pruned_ms_measured < r.baseline_ms_measured
    x = torch.randn(1, 3, 32, 32)
    sess = ort.InferenceSession(r.onnx, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.allclose(got, r.model(x)["logits"].detach().numpy(), atol=1e-4)


def test_refusals(ref, table):
    model = es.create_model(ref)
    x = (1, 3, 32, 32)
    with pytest.raises(UserError, match="method must be one of netadapt, uniform, magnitude"):
        es.shrink(model, x, table, method="taylor")
    with pytest.raises(UserError, match="netadapt needs train_one_epoch"):
        es.shrink(model, x, table)
    with pytest.raises(UserError, match=r"budget must be a fraction in \(0, 1\)"):
        es.shrink(model, x, table, budget=1.5, method="uniform")
    with pytest.raises(UserError, match="no layer or module 'classifier'"):
        es.shrink(model, x, table, method="uniform", ignore=["classifier"], measure=False)
    with pytest.raises(UserError, match="measured at input 1x3x32x32, the example input is 1x3x64x64"):
        es.shrink(model, (1, 3, 64, 64), table, method="uniform")
    with pytest.raises(BudgetError):
        es.shrink(model, x, table, budget=0.01, method="uniform", measure=False)
    with pytest.raises(TableError, match="has no entry for .* layer features.0.0"):
        es.shrink(model, x, synthetic_table("resnet20"), method="uniform", measure=False)


@pytest.mark.slow
def test_shrink_and_host_prune_take_the_same_netadapt_steps(tmp_path, formula_table, untrained_ckpt, digits):
    """One pruning seam: ``host prune``'s pipeline (the dataset's trainer) and ``shrink`` (the user's functions doing
    the same training and evaluation) run the one registry entry, so they commit the same groups to the same widths."""
    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint
    from edgeshrink.host.pipeline import PruneJob, run_prune
    from edgeshrink.host.prune.config import NetAdaptConfig
    from edgeshrink.host.train import evaluate, fine_tune_steps

    cfg = NetAdaptConfig(short_term_steps=2, init_reduction=0.05)
    job = PruneJob(table=str(formula_table), checkpoint=str(untrained_ckpt), out=str(tmp_path / "prune"), budget=0.9,
                   long_term_epochs=0, measure=False)
    report = run_prune(job, cfg, data=digits)

    def train_one_epoch(m, lr):  # what the dataset's trainer does for a proposal
        fine_tune_steps(m, digits, 2, lr=lr, batch_size=64, seed=0)

    model = model_from_checkpoint(load_checkpoint(str(untrained_ckpt)))
    r = es.shrink(model, (1, 3, 32, 32), str(formula_table), budget=0.9, method="netadapt", config=cfg,
                  train_one_epoch=train_one_epoch, test=lambda m: evaluate(m, digits, "val")["top1"], measure=False)
    chosen = [(h["chosen_group"], h["width_after"]) for h in report["iterations"]]
    assert chosen and chosen == [(h["chosen_group"], h["width_after"]) for h in r.history]
    assert es.channel_spec(r.model) == report["pruned"]["channels"]
    # every proposal of every iteration was fine-tuned and scored alike, not only the one taken
    assert [[(c["group"], c["width"], c["val_top1"]) for c in h["candidates"]] for h in r.history] == \
        [[(c["group"], c["width"], c["val_top1"]) for c in h["candidates"]] for h in report["iterations"]]
    assert len(report["iterations"][0]["candidates"]) > 5


def test_shrink_offers_the_registry_methods_that_run_on_the_users_functions():
    from edgeshrink.host.prune.methods import METHODS
    from edgeshrink.host.shrink import SHRINK_METHODS

    assert SHRINK_METHODS == ("netadapt", "uniform", "magnitude")
    assert all(METHODS[m].needs_data for m in METHODS if m not in SHRINK_METHODS)
