"""Training and NetAdapt on 1 and 2 processes of this machine through torchrun (torch.distributed, gloo on the CPU).

Each measured three ways: one process on one core (OMP_NUM_THREADS=1: the unit a rank is, as one GPU is), one process
on both cores (two intra-op threads: the whole machine to one process), and `torchrun --nproc-per-node 2` with one
thread each; the ratios are against the one-core process (scaling with the resources) and the two-thread process
(what two processes gain on the same machine).

1. Training throughput: `host train` of resnet20 on a Fashion-MNIST subset for one epoch (DDP on 2); images per
   second of the epoch's wall time (metrics.json's, the val evaluation included).
2. The wall time of one NetAdapt iteration (bench/_netadapt_iteration.py: the same checkpoint, table and settings,
   a first reduction of 3% so that most channel groups propose), the candidates shared between the ranks.
3. hrnet_w18_small_seg on a written Cityscapes-format folder (256 training images at 64x128): two epochs.

Writes bench/results/scale.json. Run it on an otherwise idle machine: `python bench/scale.py [--train-subset N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(cmd, threads: int) -> float:
    print("+ " + " ".join(map(str, cmd)), flush=True)
    t = time.monotonic()
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return time.monotonic() - t


WAYS = (("1p1t", 1, 1), ("1p2t", 1, 2), ("2p1t", 2, 1))  # name, processes, threads per process


def ratios(rows, key: str, higher_is_better: bool):
    r = {}
    for base in ("1p1t", "1p2t"):
        v = rows["2p1t"][key] / rows[base][key]
        r[f"2p1t_over_{base}"] = round(v if higher_is_better else 1 / v, 3)
    return r


def torchrun(n: int):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]


def host():
    return ["-m", "edgeshrink.host.cli"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-subset", type=int, default=8000)
    ap.add_argument("--work", default="runs/bench_scale")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    args = ap.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": cores,
                       "python": platform.python_version()},
           "date": time.strftime("%Y-%m-%d"), "train": {}, "netadapt": {}, "segmentation": {}}

    # 1. classification training throughput
    common = ["train", "--model", "resnet20", "--dataset", "fashion-mnist", "--train-subset", str(args.train_subset),
              "--epochs", "1", "--batch-size", "128", "--lr", "0.1"]
    for name, n, threads in WAYS:
        out = work / f"train_{name}"
        cmd = ([sys.executable] if n == 1 else torchrun(n)) + host() + common + ["--out", out]
        wall = run(cmd, threads)
        m = json.loads((out / "metrics.json").read_text())
        res["train"][name] = {"processes": n, "threads_per_process": threads, "command_wall_s": round(wall, 1),
                              "train_wall_s": m["wall_s"], "images": args.train_subset,
                              "images_per_s": round(args.train_subset / m["wall_s"], 1), "val_top1": m["val"]["top1"]}
    res["train"]["speedup"] = ratios(res["train"], "images_per_s", True)

    # 2. one NetAdapt iteration: the checkpoint of run 1, the committed resnet20 table of this machine's kind
    ckpt = work / "train_1p2t" / "model.pt"
    table = ROOT / "latency_tables" / "resnet20_ort_local_1t_g8.json"
    for name, n, threads in WAYS:
        out = work / f"netadapt_{name}.json"
        run(torchrun(n) + [ROOT / "bench" / "_netadapt_iteration.py", ckpt, table, out], threads)
        res["netadapt"][name] = {"threads_per_process": threads, **json.loads(out.read_text())}
    res["netadapt"]["speedup"] = ratios(res["netadapt"], "iteration_wall_s", False)
    res["netadapt"]["same_choice"] = len({tuple(res["netadapt"][w[0]]["chosen"]) for w in WAYS}) == 1

    # 3. segmentation training: HRNetV2-W18-Small-v1 on a written Cityscapes-format folder
    from tests.cityscapes_data import write_cityscapes

    cs = work / "cityscapes"
    n_train = 256
    if not cs.exists():
        write_cityscapes(cs, n_train=n_train, n_val=16, h=128, w=256)
    seg = ["train", "--model", "hrnet_w18_small_seg", "--dataset", "cityscapes", "--data-dir", cs, "--image-size", "64",
           "--epochs", "2", "--batch-size", "8", "--lr", "0.05"]
    for name, n, threads in WAYS:
        out = work / f"seg_{name}"
        cmd = ([sys.executable] if n == 1 else torchrun(n)) + host() + seg + ["--out", out]
        run(cmd, threads)
        m = json.loads((out / "metrics.json").read_text())
        images = 2 * (n_train - n_train // 10)
        res["segmentation"][name] = {"processes": n, "threads_per_process": threads, "train_wall_s": m["wall_s"],
                                     "images_per_s": round(images / m["wall_s"], 1), "val_miou": m["val"]["miou"]}
    res["segmentation"]["speedup"] = ratios(res["segmentation"], "images_per_s", True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
