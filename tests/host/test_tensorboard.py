"""--tensorboard: the scalars written are the ones TensorBoard reads back."""

import pytest


def read_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_the_writer_logs_finite_numbers_and_skips_the_rest(tmp_path, monkeypatch):
    from edgeshrink.host.tensorboard import open_writer

    w = open_writer(str(tmp_path / "tb"))
    w.scalars("train", {"loss": 0.5, "top1": 90, "note": "text", "nan": float("nan"), "flag": True}, 3)
    w.scalars("train", {"loss": 0.25}, 4)
    w.close()
    got = read_scalars(tmp_path / "tb")
    assert got == {"train/loss": [(3, 0.5), (4, 0.25)], "train/top1": [(3, 90.0)]}
    (tmp_path / "off").mkdir()
    monkeypatch.chdir(tmp_path / "off")  # SummaryWriter's default folder is ./runs
    off = open_writer(None)
    off.scalars("x", {"a": 1}, 0)
    off.close()
    assert list((tmp_path / "off").iterdir()) == []  # no folder given: nothing is written


def test_host_train_logs_every_epoch(tmp_path, host_cli):
    r = host_cli("train", "--model", "resnet20", "--epochs", "2", "--train-subset", "200", "--out", tmp_path / "m",
                 "--tensorboard", tmp_path / "tb")
    assert r.returncode == 0, r.stderr[-2000:]
    got = read_scalars(tmp_path / "tb")
    assert [s for s, _ in got["train/val_top1"]] == [1, 2]
    assert all(0 <= v <= 100 for _, v in got["train/val_top1"]) and "train/train_loss" in got


def test_a_missing_tensorboard_package_is_one_line(monkeypatch):
    import builtins

    from edgeshrink.host.errors import UserError
    from edgeshrink.host.tensorboard import open_writer

    real = builtins.__import__

    def no_tb(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tb)
    with pytest.raises(UserError, match="pip install tensorboard"):
        open_writer("somewhere")
