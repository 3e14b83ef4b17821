"""The layout: one installed namespace (edgeshrink), no import cycles anywhere, the device side torch-free and a
user's own ``models`` package unable to change what edgeshrink imports."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, List, Set

from tests.conftest import ROOT, run_cli

# where each part of the namespace lives in the repository (pyproject's package-dir)
PARTS = {"edgeshrink": ROOT / "edgeshrink", "edgeshrink.host": ROOT / "host", "edgeshrink.device": ROOT / "device",
         "edgeshrink.models": ROOT / "models"}


def _modules() -> Dict[str, Path]:
    """Every module of the project by its installed name."""
    out = {}
    for pkg, folder in PARTS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


def _imports(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The project modules ``name`` imports anywhere in its file (top level or inside functions)."""
    is_pkg = path.name == "__init__.py"
    base = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = base.split(".")[: len(base.split(".")) - (node.level - 1)]
                mod = ".".join(up + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_anywhere_in_the_project():
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    assert len(graph) > 60
    assert _cycles(graph) == []
    # the latency package's layers import one way: a lower layer never imports a higher one
    layers = ["key", "space", "table", "predict", "fit", "networks"]
    for i, low in enumerate(layers):
        for high in layers[i + 1:]:
            assert f"edgeshrink.host.latency.{high}" not in graph[f"edgeshrink.host.latency.{low}"], (low, high)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_installed_package_list_names_every_folder():
    """pyproject's explicit package list must hold every package folder, or a wheel would miss it."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    folders = {m for m, p in _modules().items() if p.name == "__init__.py"}
    assert listed == folders
    assert {k: (ROOT / v).resolve() for k, v in cfg["package-dir"].items()} == {k: v.resolve() for k, v in PARTS.items()}


def test_nothing_is_imported_as_a_bare_host_device_or_models_package():
    """Inside the project every import is relative or under edgeshrink.* (a bare ``models`` would be the user's)."""
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level:
                assert (node.module or "").split(".")[0] not in ("host", "device", "models"), (name, node.module)
            if isinstance(node, ast.Import):
                for a in node.names:
                    assert a.name.split(".")[0] not in ("host", "device", "models"), (name, a.name)


def test_a_users_own_models_package_does_not_change_what_edgeshrink_imports(tmp_path):
    """A ``models`` (and ``host``, ``device``) package of the user's, first on sys.path, is not ours and ours is
    not it: edgeshrink's registry works and the user's package stays importable under its own name."""
    for name in ("models", "host", "device"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"WHOSE = 'user'\ndef create_model(*a, **k):\n"
                                                     f"    raise RuntimeError('the user {name} package was used')\n")
    code = ("import sys\n"
            f"sys.path.insert(0, {str(tmp_path)!r})\n"
            "import edgeshrink as es\n"
            "m = es.create_model('resnet20')\n"
            "from edgeshrink.host.latency.space import build_space\n"
            "build_space(m, (1, 3, 32, 32))\n"
            "import models, host, device\n"
            "print('OURS', type(m).__module__, es.models.__file__)\n"
            "print('USERS', models.WHOSE, host.WHOSE, device.WHOSE)\n")
    r = run_cli("-c", code, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "OURS edgeshrink.models.resnet" in r.stdout and "USERS user user user" in r.stdout


def test_importing_edgeshrink_loads_no_torch_until_a_host_name_is_used():
    r = run_cli("-c", "import sys, edgeshrink as es\nassert 'torch' not in sys.modules\n"
                      "print(sorted(es.__all__)[:3])\nes.load_table\nprint('TORCH', 'torch' in sys.modules)\n"
                      "try:\n    es.nonesuch\nexcept AttributeError as e:\n    print('ERR', e)")
    assert r.returncode == 0, r.stderr
    assert "TORCH False" in r.stdout and "has no attribute 'nonesuch'" in r.stdout


def test_the_version_is_one_for_the_package_and_both_sides():
    from importlib.metadata import version

    import edgeshrink
    from edgeshrink.device import __version__ as device_version
    from edgeshrink.host import __version__ as host_version

    assert version("edgeshrink") == edgeshrink.__version__ == device_version == host_version
