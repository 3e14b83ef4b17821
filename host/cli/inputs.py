"""``host inputs``: a dataset split as the input set of the device's dynamic runner (``device bench MODEL --inputs``)."""

from __future__ import annotations

from edgeshrink.host.cli.args import add_data_args, add_option


def register(sub) -> None:
    p = sub.add_parser("inputs", help="write a dataset split, normalised as the networks see it, as an .npz input set "
                                      "for `device bench MODEL --inputs` (one input at a time on the device)")
    add_data_args(p, metrics=False)
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="which split (default test)")
    p.add_argument("--limit", type=int, metavar="N", help="the first N images of the split only")
    add_option(p, ["--out-npz"], old=("-o", "--out"), dest="out_npz", required=True, metavar="X.npz",
               help="the .npz file to write (x: N x C x H x W float32, y: labels)")
    p.set_defaults(func=cmd_inputs)


def cmd_inputs(args) -> int:
    from edgeshrink.host.data import export_inputs, load_dataset
    from edgeshrink.host.errors import UserError

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    if not args.out_npz.endswith(".npz"):
        raise UserError(f"--out-npz {args.out_npz}: an input set is an .npz file")
    data = load_dataset(args.dataset, args.data_dir, seed=args.seed, download=args.download,
                        train_subset=args.train_subset, image_size=args.image_size)
    n = export_inputs(data, args.split, args.out_npz, args.limit)
    print(f"{n} {data.name} {args.split} images of {'x'.join(map(str, data.input_shape[1:]))}, normalised, with labels "
          f"-> {args.out_npz}")
    return 0
