"""Import the earlier NetAdapt work's perf tables (github.com/NatGr/NetAdapt) and pruned architectures.

Perf table (``--format netadapt-pickle``): a pickled ``dict`` of 2-D float64 numpy arrays,
``table[key][cin-1, cout-1]`` = seconds per image of one standalone layer (conv + BN + ReLU; ``FC`` = average
pool + linear, column 0 only), for WRN-40-2 (16-channel stem, stages of 32/64/128 channels, 6 blocks each):

* ``Conv_0``: 3x3, 3 -> 16, 32x32 input;
* ``Stride_s`` (s = 1, 2, 3): the stage's first 3x3 conv (stride 1 at 32x32 for s=1; stride 2 with 32x32 and
  16x16 inputs for s = 2, 3); ``No_Stride_s``: the stage's other 3x3 convs; ``Skip_s``: its 1x1 shortcut;
* ``FC``: the classifier.

Each entry of the imported table is one of our layer configurations of ``wrn40_2`` on the per-channel grid,
looked up in the matching array. That work modelled a network as the plain sum of its layers (BN and ReLU
inside each conv cell, the residual adds not modelled), so the imported table has no overhead
(``overhead_ms = 0``) and the standalone pre-activation BN+ReLU sites of our WRN get 0 ms ("included in the conv
cells"). The file is read with a restricted unpickler that only rebuilds numpy arrays.
"""

from __future__ import annotations

import pickle
import re
from typing import Dict, Tuple

import numpy as np

from edgeshrink import models
from edgeshrink.device.provenance import sha256_file, utc_now
from edgeshrink.host import __version__, safe_pickle
from edgeshrink.host.errors import TableError
from edgeshrink.host.latency.space import build_space
from edgeshrink.host.latency.table import Entry, LatencyTable

# key -> (in channels, out channels) of the array
NETADAPT_SHAPES: Dict[str, Tuple[int, int]] = {
    "Conv_0": (3, 16), "FC": (128, 1),
    "Stride_1": (16, 32), "No_Stride_1": (32, 32), "Skip_1": (16, 32),
    "Stride_2": (32, 64), "No_Stride_2": (64, 64), "Skip_2": (32, 64),
    "Stride_3": (64, 128), "No_Stride_3": (128, 128), "Skip_3": (64, 128),
}


def _unpickle(path: str, what: str):
    try:
        with open(path, "rb") as f:
            return safe_pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise TableError(f"{path}: no such {what}") from None
    except safe_pickle.UnsafePickleError as e:
        raise TableError(f"{path}: refused: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise TableError(f"{path}: not a readable {what} pickle ({type(e).__name__}: {e})") from None


def read_netadapt_table(path: str) -> Dict[str, np.ndarray]:
    """The perf-table arrays, validated.

    Raises:
        TableError: not a dict of the 11 expected keys with the expected 2-D float shapes, or a non-finite or
            negative cell.
    """
    d = _unpickle(path, "NetAdapt perf table")
    if not isinstance(d, dict):
        raise TableError(f"{path}: expected a dict of numpy arrays, got {type(d).__name__}")
    missing, extra = set(NETADAPT_SHAPES) - set(d), set(d) - set(NETADAPT_SHAPES)
    if missing or extra:
        raise TableError(f"{path}: unexpected keys (missing: {', '.join(sorted(missing)) or '-'}; unknown: "
                         f"{', '.join(sorted(map(str, extra))) or '-'})")
    out = {}
    for k, shape in NETADAPT_SHAPES.items():
        a = d[k]
        if not isinstance(a, np.ndarray) or a.ndim != 2 or tuple(a.shape) != shape:
            raise TableError(f"{path}: {k} must be a {shape[0]}x{shape[1]} array, got "
                             f"{getattr(a, 'shape', type(a).__name__)}")
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise TableError(f"{path}: {k} has negative or non-finite latencies")
        out[k] = a.astype(np.float64)
    return out


def _array_for_site(site) -> str:
    """The NetAdapt array that measured this layer site of our wrn40_2 (by the site's module name)."""
    if site.op == "gap_linear":
        return "FC"
    if site.op == "bn":
        return ""  # inside the conv cells of that work
    if site.name == "conv1":
        return "Conv_0"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv1|conv2|shortcut)", site.name)
    if not m:
        raise TableError(f"no NetAdapt array for layer {site.name}")
    s, b, kind = m.group(1), int(m.group(2)), m.group(3)
    if kind == "shortcut":
        return f"Skip_{s}"
    return f"Stride_{s}" if (kind == "conv1" and b == 0) else f"No_Stride_{s}"


def import_netadapt_table(path: str, model_name: str = "wrn40_2", num_classes: int = 10):
    """Convert a NetAdapt perf-table pickle into a :class:`host.latency.table.LatencyTable` for ``model_name``
    (every configuration on the per-channel grid).

    Raises:
        TableError: a bad pickle, or a model other than wrn40_2.
    """
    if model_name != "wrn40_2":
        raise TableError(f"the NetAdapt perf tables describe WRN-40-2; --model {model_name} does not match")
    arrays = read_netadapt_table(path)
    space = build_space(models.create_model(model_name, num_classes), (1, 3, 32, 32))
    width = {g.name: g.width for g in space.groups}
    found: Dict[object, float] = {}
    for site in space.sites:  # every configuration each layer can take on the per-channel grid
        name = _array_for_site(site)
        ins = range(1, width[site.in_group] + 1) if site.in_group else [site.in_channels]
        outs = range(1, width[site.out_group] + 1) if site.out_group else [site.out_channels]
        same = site.in_group is not None and site.in_group == site.out_group
        for i in ins:
            for o in ([i] if same else outs):
                widths = {g: v for g, v in ((site.in_group, i), (site.out_group, o)) if g}
                key = site.key(widths)
                if key in found:
                    continue  # the same configuration at another site: the first site's cell
                if not name:
                    found[key] = 0.0
                    continue
                a = arrays[name]
                col = 0 if name == "FC" else key.out_channels - 1
                if key.in_channels > a.shape[0] or col >= a.shape[1]:
                    raise TableError(f"{name} has no cell {key.in_channels}->{key.out_channels}")
                found[key] = float(a[key.in_channels - 1, col]) * 1000.0
    entries = [Entry(k, {"median": ms, "mean": ms}, 11, "imported") for k, ms in found.items()]
    return LatencyTable(
        device={"spec": "imported", "board": "Raspberry Pi 3B", "cpu": "BCM2837 4x Cortex-A53 1.2 GHz",
                "os": "32-bit Raspbian", "runtime": "TensorFlow Lite 1.13.1 benchmark_model", "hostname": None,
                "governor": None},
        backend="benchmark_model", precision="fp32", threads=1, batch_size=1, input_shape=[1, 3, 32, 32],
        created_utc=utc_now(), tool_version=__version__,
        calibration={"method": "sum-of-layers", "overhead_ms": 0.0,
                     "prediction": "sum over layer sites of the entries (the NetAdapt work's model; residual adds "
                                   "not modelled)",
                     "fuse_residual_add": True,
                     "fused": "each conv cell is conv + BN + ReLU measured as one TFLite model; standalone "
                              "pre-activation BN+ReLU sites are 0 ms (inside the conv cells); FC = average pool + "
                              "linear"},
        entries=entries, models=[model_name],
        build={"granularity": 1, "measured": 0, "interpolated": 0, "imported": len(entries),
               "measurement": "per cell: benchmark_model --num_runs=11, mean of 3 tables, gaussian sigma 3 (the "
                              "original work)"},
        derived_from=[{"file": path, "sha256": sha256_file(path), "format": "netadapt-pickle"}],
        smoothing={"method": "gaussian", "sigma": 3, "by": "the original NetAdapt work, before export"},
    )


def read_netadapt_channels(path: str, model_name: str = "wrn40_2") -> Dict[str, int]:
    """A NetAdapt pruned architecture (pickled dict layer name -> channels kept) as our channel spec.

    Names: ``Conv_0`` -> ``conv1``, ``Skip_s`` -> ``layer{s}.0.shortcut``, ``Conv_s_b_1`` -> ``layer{s}.{b}.conv1``,
    ``Conv_s_b_2`` -> ``layer{s}.{b}.conv2``.

    Raises:
        TableError: not such a dict, or an unknown layer name.
    """
    d = _unpickle(path, "NetAdapt architecture")
    if not isinstance(d, dict) or not all(isinstance(v, (int, np.integer)) for v in d.values()):
        raise TableError(f"{path}: expected a dict of layer name -> channels kept")
    spec = {}
    for name, c in d.items():
        m = re.fullmatch(r"Conv_(\d)_(\d+)_([12])", str(name))
        if name == "Conv_0":
            spec["conv1"] = int(c)
        elif re.fullmatch(r"Skip_(\d)", str(name)):
            spec[f"layer{name[-1]}.0.shortcut"] = int(c)
        elif m:
            spec[f"layer{m.group(1)}.{m.group(2)}.conv{m.group(3)}"] = int(c)
        else:
            raise TableError(f"{path}: unknown layer name {name!r} for {model_name}")
    return spec
