"""The README is short and its API example runs as written."""

import re

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_is_short_and_has_the_two_commands():
    assert len(README) <= 12000
    cmds = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    assert cmds[0].endswith("pip install -e '.[host]' && host demo")
    assert cmds[1].endswith("pip install -e '.[host,tflite,test]' && python -m pytest")
    assert all("pip install torch==2.13.0" in c for c in cmds[:2])


def run_example(code: str, folder, monkeypatch, capsys) -> str:
    """Run README ``code`` as written, in this process (a subprocess would add only torch's import), in ``folder``
    with the repository's tables beside it; returns what it printed."""
    (folder / "latency_tables").symlink_to(ROOT / "latency_tables")
    monkeypatch.chdir(folder)
    capsys.readouterr()
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    return capsys.readouterr().out


@pytest.mark.slow
def test_the_api_example_runs(tmp_path, monkeypatch, capsys):
    code = re.findall(r"```python\n(.*?)\n```", README, re.S)[0]
    assert len(code.strip().splitlines()) <= 12
    out = run_example(code, tmp_path, monkeypatch, capsys)
    assert re.search(r"unpruned \d+\.\d{3} ms predicted; pruned \d+\.\d{3} ms budget, \d+\.\d{3} ms measured", out)
    assert (tmp_path / "pruned.onnx").stat().st_size > 10_000


@pytest.mark.slow
def test_the_shrink_example_runs_with_the_users_own_functions(tmp_path, monkeypatch, capsys):
    code = re.findall(r"```python\n(.*?)\n```", README, re.S)[1]
    assert "def train_one_epoch(model, lr)" in code and "def test(model)" in code and "es.shrink(" in code
    out = run_example(code, tmp_path, monkeypatch, capsys)
    m = re.search(r"measured (\d+\.\d+) -> (\d+\.\d+) ms, test (\d\.\d+) -> (\d\.\d+)", out)
    assert m, out
    base, pruned = float(m.group(1)), float(m.group(2))
    assert pruned < 0.92 * base  # the budget is 0.8 of the predicted latency, and the device confirms a cut
