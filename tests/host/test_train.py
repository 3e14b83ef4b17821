
import pytest
import torch

from edgeshrink import models
from edgeshrink.host.train import TrainConfig, evaluate, fine_tune_steps, lr_factor, make_optimizer, train


@pytest.mark.parametrize("schedule,epoch,expected", [
    ("cosine", 0, 1.0), ("cosine", 5, 0.5), ("cosine", 10, 0.0),
    ("poly", 5, 0.5 ** 0.9), ("step", 3, 0.1), ("step", 2.9, 1.0), ("multistep", 7, 0.01), ("constant", 9, 1.0),
])
def test_learning_rate_schedules(schedule, epoch, expected):
    cfg = TrainConfig(epochs=10, schedule=schedule, step_size=3, milestones=(4, 6), gamma=0.1)
    assert lr_factor(cfg, epoch) == pytest.approx(expected)


def test_no_weight_decay_on_bn_and_biases():
    opt = make_optimizer(models.create_model("resnet20"), TrainConfig(weight_decay=1e-3))
    decayed, free = opt.param_groups
    assert decayed["weight_decay"] == 1e-3 and free["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim <= 1 for p in free["params"])
    adam = make_optimizer(models.create_model("resnet20"), TrainConfig(optimizer="adam", lr=1e-3))
    assert isinstance(adam, torch.optim.Adam)


@pytest.mark.slow
def test_training_learns_digits(digits):
    torch.manual_seed(0)
    m = models.create_model("resnet20", 10)
    before = evaluate(m, digits, "val")["top1"]
    hist = train(m, digits, TrainConfig(epochs=4, lr=0.05, batch_size=64, schedule="cosine"))
    after = evaluate(m, digits, "val")  # about 95% here after 4 epochs
    assert len(hist) == 4 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert after["top1"] > max(before, 50.0)  # chance is 10%
    assert after["top5"] >= after["top1"]


def test_short_term_fine_tuning_changes_weights_and_leaves_eval_mode(digits):
    m = models.create_model("resnet20", 10).eval()
    w0 = m.conv1.weight.detach().clone()
    fine_tune_steps(m, digits, steps=3, lr=0.01)
    assert not torch.equal(w0, m.conv1.weight) and not m.training
