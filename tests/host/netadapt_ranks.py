"""Run by tests/host/test_distributed.py under torchrun: one NetAdapt iteration of a digits resnet20 on a formula
table, then rank 0 writes what was chosen (every candidate's score, the committed widths, the weights) to OUT.

    python -m torch.distributed.run --standalone --nproc-per-node N tests/host/netadapt_ranks.py CKPT TABLE OUT
"""

import json
import sys

import torch

from edgeshrink import models
from edgeshrink.host import distributed
from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint
from edgeshrink.host.data import load_digits
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.table import load_table
from edgeshrink.host.prune.netadapt import NetAdapt, NetAdaptConfig


def main(ckpt: str, table: str, out: str) -> None:
    distributed.init_from_env()
    model = model_from_checkpoint(load_checkpoint(ckpt))
    pred = TablePredictor.for_model(load_table(table), model)
    full = pred.predict_ms(pred.space.full_widths)
    cfg = NetAdaptConfig(budget_ms=0.5 * full, granularity=8, short_term_steps=4, short_term_val=200, seed=0)
    na = NetAdapt(model, load_digits(seed=0), pred.space, pred, cfg)
    na.step(0)
    if distributed.is_main():
        flat = torch.cat([p.detach().reshape(-1) for p in na.model.state_dict().values() if p.is_floating_point()])
        with open(out, "w") as f:
            json.dump({"history": [{k: r[k] for k in ("chosen_group", "width_after", "val_top1", "candidates", "ranks")}
                                   for r in na.history], "spec": models.channel_spec(na.model),
                       "weights": flat.tolist()[:5000], "weights_sum": float(flat.double().abs().sum())}, f)
    distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
