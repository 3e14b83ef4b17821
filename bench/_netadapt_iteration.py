"""One NetAdapt iteration timed, for bench/scale.py: run under torchrun with N ranks (N = 1 too).

    python -m torch.distributed.run --standalone --nproc-per-node N bench/_netadapt_iteration.py CKPT TABLE OUT

The checkpoint's dataset (Fashion-MNIST, a 2,000-image val subset for the proposals), a first reduction of 3% (most
channel groups propose), 50 short-term steps per proposal; rank 0 writes {"ranks", "candidates", "iteration_wall_s", "chosen"} to OUT.
"""

import json
import sys
import time

from edgeshrink.host import distributed
from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint
from edgeshrink.host.data import load_dataset
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.table import load_table
from edgeshrink.host.prune.netadapt import NetAdapt, NetAdaptConfig


def main(ckpt: str, table: str, out: str) -> None:
    distributed.init_from_env()
    ck = load_checkpoint(ckpt)
    model = model_from_checkpoint(ck)
    pred = TablePredictor.for_model(load_table(table), model)
    full = pred.predict_ms(pred.space.full_widths)
    cfg = NetAdaptConfig(budget_ms=0.5 * full, granularity=8, init_reduction=0.03, short_term_steps=50,
                         short_term_val=2000, seed=0)
    na = NetAdapt(model, load_dataset(ck.get("dataset") or "digits"), pred.space, pred, cfg)
    distributed.barrier()
    t = time.monotonic()
    rec = na.step(0)
    distributed.barrier()
    wall = time.monotonic() - t
    if distributed.is_main():
        with open(out, "w") as f:
            json.dump({"ranks": distributed.world_size(), "candidates": len(rec["candidates"]),
                       "iteration_wall_s": round(wall, 2), "chosen": [rec["chosen_group"], rec["width_after"]],
                       "val_top1": rec["val_top1"]}, f)
    distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
